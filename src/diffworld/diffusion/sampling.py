"""Noise schedules and ODE samplers (Karras et al. 2022, Algorithm 1 without churn)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True)
class SamplerConfig:
    """How a frame is sampled and how finished frames are fed back."""

    #: Denoising steps per frame (network evaluations: steps for Euler, 2·steps − 1 for Heun).
    steps: int = 3
    #: "euler" (1st order) or "heun" (2nd order).
    method: Literal["euler", "heun"] = "euler"
    sigma_min: float = 0.002
    sigma_max: float = 5.0
    #: Karras schedule curvature.
    rho: float = 7.0
    #: Noise level at which finished frames are fed back as context (fights drift).
    sigma_ctx: float = 0.05
    #: Classifier-free guidance weight on the action; 1 is no guidance.
    guidance: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"sampler steps must be >= 1, got {self.steps}")
        if self.method not in ("euler", "heun"):
            raise ValueError(f"sampler method must be 'euler' or 'heun', got {self.method!r}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.sigma_ctx <= 0:
            raise ValueError(f"sigma_ctx must be > 0 (use a small value such as 0.002), got {self.sigma_ctx}")


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """[steps + 1] noise levels σ_0 = σ_max > ... > σ_{n−1} = σ_min, then 0 (EDM eq. 5)."""
    if steps == 1:
        return torch.tensor([sigma_max, 0.0])
    i = torch.arange(steps, dtype=torch.float64)
    inv = sigma_max ** (1 / rho) + i / (steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return torch.cat([inv**rho, torch.zeros(1, dtype=torch.float64)]).float()


Denoise = Callable[[torch.Tensor, float], torch.Tensor]


def sample(
    denoise: Denoise,
    shape: tuple[int, ...],
    sigmas: torch.Tensor,
    generator: torch.Generator | None = None,
    method: str = "euler",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Integrate the probability-flow ODE from pure noise at sigmas[0] down to sigmas[-1] = 0.

    `denoise(x, sigma)` returns D(x; σ). Returns x_0 of `shape`.
    """
    x = torch.randn(shape, generator=generator, device=device, dtype=dtype) * sigmas[0]
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        d = (x - denoise(x, s)) / s  # dx/dσ at σ_i
        x_next = x + (s_next - s) * d  # Euler step
        if method == "heun" and s_next > 0:  # 2nd order correction
            d_next = (x_next - denoise(x_next, s_next)) / s_next
            x_next = x + (s_next - s) * 0.5 * (d + d_next)
        x = x_next
    return x
