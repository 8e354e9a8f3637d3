"""What the dense and the sparse heat-kernel biases share: learned diffusion times and the bias kept
between calls while they are unchanged."""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnedDiffusionTimes(nn.Module):
    """Base of the heat-kernel biases: `log_tau` [layers, heads] and `forward() = log(ε + kernel())`.

    τ = exp(log_tau), initialised log-spaced over `tau_range` across heads (the same in every
    layer): at τ = 0.1 heat has barely left a node (local attention), at τ = 10 it has spread over
    the graph's connected component (global attention). A subclass gives `kernel()` and the
    buffer its kernel is computed from (`_source`); without gradients (rollouts) the bias is kept
    until τ changes, so sampling pays for it once.
    """

    def __init__(self, heads: int, layers: int, eps: float, tau_range: tuple[float, float]) -> None:
        super().__init__()
        self.eps = eps
        lo, hi = math.log(tau_range[0]), math.log(tau_range[1])
        log_tau = torch.linspace(lo, hi, heads) if heads > 1 else torch.full((1,), (lo + hi) / 2)
        self.log_tau = nn.Parameter(log_tau.repeat(layers, 1))  # [layers, heads]
        self._memo: tuple[tuple, torch.Tensor] | None = None

    def diffusion_times(self) -> torch.Tensor:
        """[layers, heads] the learned τ values."""
        return self.log_tau.detach().exp()

    def kernel(self) -> torch.Tensor:
        raise NotImplementedError

    def _source(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        """log(ε + kernel()), the additive bias on spatial logits."""
        if torch.is_grad_enabled():
            return self._bias()
        source = self._source()
        key = (self.log_tau._version, self.log_tau.data_ptr(), source.data_ptr(), source.device)
        if self._memo is None or self._memo[0] != key:
            self._memo = (key, self._bias())
        return self._memo[1]

    def _bias(self) -> torch.Tensor:
        # Round-off can leave far-apart entries a hair below zero; the kernel itself never is.
        return torch.log(self.eps + self.kernel().clamp_min(0.0))
