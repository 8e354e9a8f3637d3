"""The loss of a chance code (`diffworld.model.chance`): posterior mean, decoder, prior and codebook.

For windows of T frames, the last frame is the target, a chance **event** or not (a birth or a
new object's first move: `diffworld.train.event_frames`). Two sequences share the T − 1 context
frames (at σ_ctx levels) and end with the new frame as pure noise at σ_max, as a dream meets it:
A without a code (every window; on the ordinary ones its error trains the posterior mean given
no event, the frame a dream keeps where no event is drawn), B, for the event
windows only, with the posterior code, which the encoder picks from the target and A's output
(what the past alone predicts). B's error trains the decoder (and, through the code, the
encoder). A's features train the prior head: whether an event happens (every window) and which
code it has (the event windows; the code is a target, not a gradient path). The code's head reads
A's features, or the same stopped (`LossConfig.chance_prior_detached`), or the decoder's features
of A's input without a code (`DiTConfig.chance_prior`). With a decoder of its own
(`DiTConfig.chance_decoder`) B runs through it, and the decoder's error never reaches the backbone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffworld.diffusion.loss import (
    LossConfig,
    edm_weight,
    sample_context_sigmas,
    weighted_error,
)


@dataclass(frozen=True)
class ChanceNoise:
    """The draws of one step's chance loss for B windows of T frames."""

    #: [B, T − 1] context levels.
    sigma: torch.Tensor
    #: [B, T + 1, *frame] unit noise of the context frames and the two copies of the target.
    noise: torch.Tensor


def draw_chance_noise(cfg: LossConfig, shape: tuple[int, ...], generator: torch.Generator, device="cpu") -> ChanceNoise:
    """The chance loss's draws for windows of clean frames of `shape` [B, T, *frame]."""
    b, t, frame = shape[0], shape[1], tuple(shape[2:])
    sigma = sample_context_sigmas((b, t - 1), cfg, generator, device)
    noise = torch.randn((b, t + 1) + frame, generator=generator, device=device)
    return ChanceNoise(sigma, noise)


def chance_loss(
    denoiser: torch.nn.Module,  # a model.denoiser.Denoiser, or its DDP wrapper
    frames: torch.Tensor,
    actions: torch.Tensor | None,
    cfg: LossConfig,
    noise: ChanceNoise,
    sigma_max: float,
    surprise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    event: torch.Tensor | None = None,
    quiet: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, parts) for windows of clean frames [B, T, *frame] (model units) whose last frame is
    the target: the errors of the posterior mean and the decoder at `sigma_max` + event and code
    cross-entropies + codebook loss.

    `event` (bool [B]; None: all) marks the windows whose target is a chance event. `quiet`
    (frames [B, *frame], bool [B]): for the event windows it marks, the frame had the event not
    happened (the target without its born objects); the mean trains on those too."""
    module = getattr(denoiser, "module", denoiser)
    chance = module.net.chance
    if chance is None:
        raise ValueError("the chance loss needs a model with a chance code (dit chance > 0)")
    if getattr(module, "change_std", None) is not None:
        raise ValueError("a chance code decodes frames; a model that diffuses the change cannot have one")
    b, t, dev = frames.shape[0], frames.shape[1], frames.device
    expand = (...,) + (None,) * (frames.ndim - 2)
    target = frames[:, -1]
    sigma = torch.cat([noise.sigma, torch.full((b, 1), sigma_max, device=dev)], dim=1)  # [B, T]
    times = torch.arange(t, device=dev)
    # Two sequences over the same noisy context, the new frame pure noise at σ_max as a dream meets
    # it (at σ_max, target + noise still shows a little of the target, which a dream's noise does
    # not hold): without a code (A), with the posterior code (B).
    context = frames[:, :-1] + noise.sigma[expand] * noise.noise[:, : t - 1]
    noisy = [torch.cat([context, (sigma_max * noise.noise[:, t - 1 + j])[:, None]], dim=1) for j in (0, 1)]
    event = torch.ones(b, dtype=torch.bool, device=dev) if event is None else event.to(dev)
    plain, feats = denoiser(noisy[0], sigma, actions, times, features=True)
    happens = F.binary_cross_entropy_with_logits(chance.event_logits(feats).float(), event.float())
    # A's output is the frame a dream keeps where no event is drawn: E[frame | past, no event],
    # trained on the ordinary windows as the sampler meets it.
    lam = edm_weight(sigma[:, -1:], module.sigma_data)
    zero = plain.new_zeros(())
    mean, decoder, prior, codebook_loss, used = zero, zero, zero, zero, 0
    calm, known = target, ~event
    if quiet is not None:  # an event window whose frame without the event is known trains the mean on it
        calmed = event & quiet[1].to(dev)
        known = known | calmed
        calm = torch.where(calmed[expand], quiet[0].to(dev), target)
    if known.any():
        no = known.nonzero()[:, 0]
        err = (plain[no, -1:] - calm[no, None]).square()
        kept = torch.cat([frames[no, :-1], calm[no, None]], dim=1)
        mean = weighted_error(err, lam[no], kept, t - 1, cfg, surprise)
    if event.any():
        ev = event.nonzero()[:, 0]
        code, index, codebook_loss = chance.encode(target[ev], plain[ev, -1].detach(), generator)
        acts = None if actions is None else actions[ev]
        decoded = denoiser(noisy[1][ev], sigma[ev], acts, times, code=code)[:, -1:]
        err = (decoded - target[ev, None]).square()  # [E, 1, *frame]
        decoder = weighted_error(err, lam[ev], frames[ev], t - 1, cfg, surprise)
        if module.net.cfg.chance_prior == "decoder":
            none = module.net.no_code(len(ev), dev)
            own = denoiser(noisy[0][ev], sigma[ev], acts, times, code=none, features=True)[1]
        else:
            own = (feats.detach() if cfg.chance_prior_detached else feats)[ev]
        prior = F.cross_entropy(chance.code_logits(own).float(), index)
        used = index.unique().numel()
    loss = cfg.chance_mean_weight * mean + decoder + happens + prior + codebook_loss
    return loss, {
        "mean": float(mean.detach()),
        "decoder": float(decoder.detach()),
        "event": float(happens.detach()),
        "prior": float(prior.detach()),
        "codes_used": float(used),
        "events": float(event.float().mean()),
        "quiet": float((known & event).float().mean()),
    }
