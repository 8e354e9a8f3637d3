"""A learned chance code: what the past cannot tell about the next frame, as one of K discrete codes.

A one-step sampler returns the posterior mean of the new frame, which averages away what is random
(a serve's row becomes a faint smear over fifteen rows). The chance code names the outcome instead:

- an encoder reads the true new frame beside what the past alone predicts of it (the denoiser's
  posterior mean at σ_max: their difference is the outcome of chance) and picks the nearest of K
  learned code vectors (vector quantisation, straight-through gradients, codes nobody uses are
  restarted on the batch's encodings);
- the DiT, given that code, denoises the new frame from pure noise (σ_max) in one pass: the code
  says which outcome, the past says the rest;
- a prior head reads the DiT's features of the new frame at σ_max without a code and predicts, given
  the past, whether chance acts on this frame at all (an event: a serve, a spawn) and, if it does,
  the code's distribution (from the decoder's features where `DiTConfig.chance_prior` says so). It
  learns on windows that over-draw events (they are rare); the log odds between that mix and the
  data (`event_shift`, set by training) bring a dream back to the data's rate (exact: events and
  ordinary frames are each drawn as in the data).

Most frames leave nothing to chance: there the pass without a code is the frame (the one-step
posterior mean, exact where the past decides). A dream runs that pass, draws from the prior, and
only where an event is drawn decodes its code in a second pass: 1 + (event rate) network
evaluations per frame, and the outcome is committed, never averaged. The second pass may run
through a decoder of its own (`DiTConfig.chance_decoder`), which leaves the first to a backbone
trained as if it had no chance code.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: Commitment weight of the encoder toward its code (VQ-VAE's β).
COMMITMENT = 0.25
#: Training calls before the first restart of the codes no encoding picked (then after 2×, 4×, ... as many).
RESTART_EVERY = 200


class ChanceCode(nn.Module):
    """Encoder, codebook and prior head of a chance code of `codes` codes of width `dim`.

    `values` is the number of values of one frame (all its tokens' values), `width` the DiT's.
    """

    def __init__(self, values: int, width: int, codes: int, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.codes, self.dim = codes, dim
        # q(code | new frame, its mean given the past): their difference is what chance decided.
        self.encoder = nn.Sequential(nn.Linear(2 * values, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        self.codebook = nn.Parameter(torch.randn(codes, dim) * 0.5)
        # p(event | past) and p(code | past, event), from the new frame's features at σ_max, normalised
        # (a trained DiT's features run large). An event is local (something appears somewhere): each
        # token scores it and the scores add up as odds. That sum is high wherever one token is unsure
        # (pong: a ball returned at the paddle's edge into the next token, or missed), and no token
        # can lower another's, so a term read from all tokens through an attention pool adds its log
        # odds and can veto; it starts at zero (`DiT.initialize_weights`), so a model given it later
        # begins where it was. The code reads the tokens through an attention pool of its own, so it
        # can depend on where things are.
        self.norm = nn.LayerNorm(width)
        self.event = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.event_pool = nn.Linear(width, 1)
        self.event_global = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.pool = nn.Linear(width, 1)
        self.prior = nn.Linear(width, codes)
        # Log odds of an event in the data minus those in the training mix, which over-draws events.
        self.register_buffer("event_shift", torch.zeros(()))
        # Kept with the weights, so a resumed run restarts idle codes exactly when an unbroken one would.
        self.register_buffer("usage", torch.zeros(codes))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def encode(
        self, new: torch.Tensor, mean: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The new frames [B, ...] and their means given the past [B, ...] (model units) -> (code
        vectors [B, dim] with straight-through gradients to the encoder, code indices [B], the
        codebook and commitment loss).

        In training mode, codes that no encoding picked lately are now and then moved onto
        encodings of this batch (drawn with `generator`; see `_restart_dead`)."""
        e = self.encoder(torch.cat([new.flatten(1), (new - mean).flatten(1)], dim=1))  # [B, dim]
        index = torch.cdist(e.detach(), self.codebook.detach()).argmin(-1)  # [B]
        q = self.codebook[index]
        loss = F.mse_loss(q, e.detach()) + COMMITMENT * F.mse_loss(e, q.detach())
        if self.training and self.codebook.requires_grad:  # a frozen codebook (`TrainConfig.train_only`) stays
            self._restart_dead(e.detach(), index, generator)
        return e + (q - e).detach(), index, loss

    @torch.no_grad()
    def _restart_dead(self, e: torch.Tensor, index: torch.Tensor, generator: torch.Generator | None) -> None:
        """After `RESTART_EVERY` · 2^k calls (k = 0, 1, ...), move the codes no encoding picked since
        the last such call onto encodings of this batch: early restarts undo a collapse onto few
        codes, and their spacing doubles, so a codebook that covers the outcomes is left to settle
        (each restart changes the codes the prior learns to predict)."""
        self.usage += torch.bincount(index, minlength=self.codes).to(self.usage.dtype)
        self.calls += 1
        rounds, rest = divmod(int(self.calls), RESTART_EVERY)
        if rest or rounds & (rounds - 1):  # not RESTART_EVERY times a power of two
            return
        dead = (self.usage == 0).nonzero()[:, 0]
        self.usage.zero_()
        if len(dead):
            pick = torch.randint(len(e), (len(dead),), generator=generator, device=e.device)
            jitter = torch.randn((len(dead), self.dim), generator=generator, device=e.device)
            self.codebook[dead] = e[pick] + 0.01 * jitter

    def event_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The new frame's DiT features [B, S, D] at σ_max without a code -> event logits [B]."""
        h = self.norm(features)  # [B, S, D]
        tokens = torch.logsumexp(self.event(h)[..., 0], dim=1)  # odds: the sum of the tokens'
        return tokens + self.event_global(attention_pool(self.event_pool, h))[:, 0]

    def code_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The new frame's features [B, S, D] without a code (the backbone's or the decoder's,
        `DiTConfig.chance_prior`) -> code logits [B, codes] given an event."""
        return self.prior(attention_pool(self.pool, self.norm(features)))

    def events(
        self, features: torch.Tensor, generator: torch.Generator | None = None, shift: float | None = None
    ) -> torch.Tensor:
        """Given the features [B, S, D]: bool [B], the rows where chance acts, at the data's event
        rate, or with `shift` added to the event logit instead of the trained correction
        (`SamplerConfig.event_shift`)."""
        event = self.event_logits(features).float()
        u = torch.rand(event.shape, generator=generator, device=event.device)
        return u < torch.sigmoid(event + (self.event_shift if shift is None else shift))

    def pick(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Code vectors [n, dim] drawn from the prior given the features [n, S, D] of n rows where chance acts."""
        if not len(features):
            return self.codebook[:0]
        codes = self.code_logits(features).float()
        return self.codebook[torch.multinomial(codes.softmax(-1), 1, generator=generator)[:, 0]]

    def draw(
        self, features: torch.Tensor, generator: torch.Generator | None = None, shift: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`events`, then `pick` from the same features: (bool [B], code vectors [n, dim] for those
        rows, in their order)."""
        acts = self.events(features, generator, shift)
        return acts, self.pick(features[acts], generator)


def attention_pool(score: nn.Linear, h: torch.Tensor) -> torch.Tensor:
    """Tokens h [B, S, D] averaged with the softmax over tokens of `score`'s one logit each: [B, D]."""
    return (score(h).softmax(dim=1) * h).sum(1)
