"""A learned chance code: what the past cannot tell about the next frame, as one of K discrete codes.

A one-step sampler returns the posterior mean of the new frame, which averages away what is random
(a serve's row becomes a faint smear over fifteen rows). The chance code names the outcome instead:

- an encoder reads the true new frame beside what the past alone predicts of it (the denoiser's
  posterior mean at σ_max: their difference is the outcome of chance) and picks the nearest of K
  learned code vectors (vector quantisation, straight-through gradients, codes nobody uses are
  restarted on the batch's encodings);
- the DiT, given that code, denoises the new frame from pure noise (σ_max) in one pass: the code
  says which outcome, the past says the rest;
- a prior head reads the DiT's features of the new frame at σ_max without a code and predicts the
  code's distribution given the past.

A dream draws a code from the prior (one pass) and decodes it (a second pass): two network
evaluations per frame whatever the world's chance, and the outcome is committed, never averaged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: Commitment weight of the encoder toward its code (VQ-VAE's β).
COMMITMENT = 0.25
#: Training calls between restarts of the codes no encoding picked.
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
        # p(code | past), from the new frame's features at σ_max, normalised: a trained DiT's run large.
        self.prior = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, codes))
        # Kept with the weights, so a resumed run restarts idle codes exactly when an unbroken one would.
        self.register_buffer("usage", torch.zeros(codes))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def encode(
        self, new: torch.Tensor, mean: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The new frames [B, ...] and their means given the past [B, ...] (model units) -> (code
        vectors [B, dim] with straight-through gradients to the encoder, code indices [B], the
        codebook and commitment loss).

        In training mode, codes that no encoding picked over the last `RESTART_EVERY` calls are
        moved onto encodings of this batch (drawn with `generator`)."""
        e = self.encoder(torch.cat([new.flatten(1), (new - mean).flatten(1)], dim=1))  # [B, dim]
        index = torch.cdist(e.detach(), self.codebook.detach()).argmin(-1)  # [B]
        q = self.codebook[index]
        loss = F.mse_loss(q, e.detach()) + COMMITMENT * F.mse_loss(e, q.detach())
        if self.training:
            self._restart_dead(e.detach(), index, generator)
        return e + (q - e).detach(), index, loss

    @torch.no_grad()
    def _restart_dead(self, e: torch.Tensor, index: torch.Tensor, generator: torch.Generator | None) -> None:
        self.usage += torch.bincount(index, minlength=self.codes).to(self.usage.dtype)
        self.calls += 1
        if int(self.calls) % RESTART_EVERY:
            return
        dead = (self.usage == 0).nonzero()[:, 0]
        if len(dead):
            pick = torch.randint(len(e), (len(dead),), generator=generator, device=e.device)
            jitter = torch.randn((len(dead), self.dim), generator=generator, device=e.device)
            self.codebook[dead] = e[pick] + 0.01 * jitter
        self.usage.zero_()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """The new frame's DiT features [B, S, D] at σ_max without a code -> prior logits [B, codes]."""
        return self.prior(features.mean(1))

    def draw(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One code vector [B, dim] per row, drawn from the prior given the features [B, S, D]."""
        probs = self.logits(features).float().softmax(-1)
        return self.codebook[torch.multinomial(probs, 1, generator=generator)[:, 0]]
