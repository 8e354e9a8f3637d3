"""The loss of a chance code (`diffworld.model.chance`): decoder, prior and codebook in one pass.

For windows of T frames, the last frame is the target. Two sequences share
the T − 1 context frames (at σ_ctx levels): one ends with the target at σ_max without a code (A),
the other with the target at σ_max and its posterior code (B), which the encoder picks from the
target and A's output (what the past alone predicts). B's error trains the
decoder (and, through the code, the encoder); A's features train the prior head to predict B's code
(cross-entropy; the code is a target, not a gradient path). Training at σ_max alone is what the
sampler meets: a dream decodes its code in one pass from pure noise.
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
) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, parts) for windows of clean frames [B, T, *frame] (model units) whose last frame is
    the target: decoder error at `sigma_max` + prior cross-entropy + codebook loss."""
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
    # Two sequences over the same noisy context: the target at σ_max without a code (A), with it (B).
    context = frames[:, :-1] + noise.sigma[expand] * noise.noise[:, : t - 1]
    noisy = [torch.cat([context, (target + sigma_max * noise.noise[:, t - 1 + j])[:, None]], dim=1) for j in (0, 1)]
    plain, feats = denoiser(noisy[0], sigma, actions, times, features=True)
    code, index, codebook_loss = chance.encode(target, plain[:, -1].detach(), generator)
    decoded = denoiser(noisy[1], sigma, actions, times, code=code)[:, -1:]
    err = (decoded - target[:, None]).square()  # [B, 1, *frame]
    weight = edm_weight(sigma[:, -1:], module.sigma_data)
    decoder = weighted_error(err, weight, frames, t - 1, cfg, surprise)
    prior = F.cross_entropy(chance.logits(feats).float(), index)
    loss = decoder + prior + codebook_loss
    return loss, {
        "decoder": float(decoder.detach()),
        "prior": float(prior.detach()),
        "codes_used": float(index.unique().numel()),
    }
