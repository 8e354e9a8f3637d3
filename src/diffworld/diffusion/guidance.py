"""Guidance: wrappers that push a denoiser away from a weaker one, D_weak + w·(D_strong − D_weak).

Both kinds wrap a denoiser of a new frame, D(x; σ, actions), and the rollout engine composes them:

- classifier-free guidance (Ho & Salimans 2022): the weak denoiser is the same one told "no action",
  so w > 1 follows the action more closely;
- autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"): the
  weak one is a weaker model of the same world (fewer training steps or a smaller network, trained
  on the same data), so w > 1 pushes each draw along the direction in which more training moved
  the model.

w = 1 is the strong denoiser alone; w = 0 the weak one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffworld.diffusion.sampling import Denoise

#: The autoguidance weight w where a guide is given without one (`diffworld eval --guide`).
GUIDE_WEIGHT = 2.0

#: A denoiser of new frames under actions: (x, σ, actions or None) -> D(x; σ, actions).
Conditioned = Callable[[torch.Tensor, float, torch.Tensor | None], torch.Tensor]


def guided(strong: torch.Tensor, weak: torch.Tensor, weight: float) -> torch.Tensor:
    """D_weak + w·(D_strong − D_weak)."""
    return weak + weight * (strong - weak)


def autoguidance(model: Conditioned, guide: Conditioned, weight: float) -> Conditioned:
    """`model` guided by the weaker `guide` of the same world with weight w (Karras et al. 2024)."""

    def denoise(x: torch.Tensor, sigma: float, actions: torch.Tensor | None) -> torch.Tensor:
        strong = model(x, sigma, actions)  # the model first: its pass may write the frame fed back
        return guided(strong, guide(x, sigma, actions), weight)

    return denoise


def classifier_free(denoise: Conditioned, actions: torch.Tensor, null: torch.Tensor, weight: float) -> Denoise:
    """`denoise` under `actions`, guided away from itself under `null` ("no action") with weight w."""

    def guided_denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        strong = denoise(x, sigma, actions)  # the conditional pass first, as above
        return guided(strong, denoise(x, sigma, null), weight)

    return guided_denoise
