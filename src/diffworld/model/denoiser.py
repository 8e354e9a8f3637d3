"""EDM preconditioning around any backbone (Karras et al. 2022, Table 1)."""

from __future__ import annotations

import torch
from torch import nn

from diffworld.model.dit import DiT, KVCache


def edm_scalings(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """c_skip, c_out, c_in, c_noise for noise levels `sigma` (any shape)."""
    sd2 = sigma_data**2
    c_skip = sd2 / (sigma**2 + sd2)
    c_out = sigma * sigma_data / (sigma**2 + sd2).sqrt()
    c_in = 1.0 / (sigma**2 + sd2).sqrt()
    c_noise = sigma.log() / 4.0
    return c_skip, c_out, c_in, c_noise


class Denoiser(nn.Module):
    """D(x; σ) = c_skip·x + c_out·F(c_in·x; c_noise), with its own σ for every frame."""

    def __init__(self, net: DiT, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        actions: torch.Tensor | None,
        times: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        write_cache: bool = False,
        commit: int = 0,
    ) -> torch.Tensor:
        """x [B, N, *frame] noisy frames, sigma [B, N] -> denoised frames [B, N, *frame] (with
        `commit`, only the N − commit frames after the finished ones; cache, write_cache and commit:
        see `DiT.forward`)."""
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma, self.sigma_data)
        expand = (...,) + (None,) * (x.ndim - 2)  # [B, N] -> [B, N, 1, ..., 1]
        f = self.net(c_in[expand] * x, c_noise, actions, times, mask, cache, write_cache, commit)
        return c_skip[expand][:, commit:] * x[:, commit:] + c_out[expand][:, commit:] * f.to(x.dtype)
