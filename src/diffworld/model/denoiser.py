"""EDM preconditioning around any backbone (Karras et al. 2022, Table 1)."""

from __future__ import annotations

import torch
from torch import nn

from diffworld.model.dit import DiT
from diffworld.model.kv_cache import KVCache


def edm_scalings(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """c_skip, c_out, c_in, c_noise for noise levels `sigma` (any shape)."""
    sd2 = sigma_data**2
    c_skip = sd2 / (sigma**2 + sd2)
    c_out = sigma * sigma_data / (sigma**2 + sd2).sqrt()
    c_in = 1.0 / (sigma**2 + sd2).sqrt()
    c_noise = sigma.log() / 4.0
    return c_skip, c_out, c_in, c_noise


class Denoiser(nn.Module):
    """D(x; σ) = c_skip·x + c_out·F(c_in·x; c_noise), with its own σ for every frame.

    With `change_std` (a model that diffuses the change, `ModelConfig.target`), frames given a
    `base` — the frame before each, clean — are denoised as base + the change: the same EDM
    preconditioning applied to x − base with the change's std as σ_data,
    D = base + c_skip(σ; s)·(x − base) + c_out(σ; s)·F, s = `change_std`. The network's input
    stays c_in(σ; σ_data)·x, a frame, so context and target tokens mean the same to it.
    """

    def __init__(self, net: DiT, sigma_data: float = 0.5, change_std: float | None = None) -> None:
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data
        self.change_std = change_std

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
        base: torch.Tensor | None = None,
        code: torch.Tensor | None = None,
        features: bool = False,
        nodes: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x [B, N, *frame] noisy frames, sigma [B, N] -> denoised frames [B, N, *frame] (with
        `commit`, only the N − commit frames after the finished ones; cache, write_cache and commit:
        see `DiT.forward`). `base` [B, K, *frame]: the clean frames before the last K frames, which
        are then denoised as changes from them (needs `change_std`). `code` [B, chance_dim]: the last
        frame's chance code; `features`: also return its final tokens; `nodes`: the graph nodes x holds
        (a training subgraph; see `DiT.forward`)."""
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma, self.sigma_data)
        expand = (...,) + (None,) * (x.ndim - 2)  # [B, N] -> [B, N, 1, ..., 1]
        extra = {} if code is None and not features else {"code": code, "features": features}
        if nodes is not None:
            extra["nodes"] = nodes
        f = self.net(c_in[expand] * x, c_noise, actions, times, mask, cache, write_cache, commit, **extra)
        f, feats = f if features else (f, None)
        out = c_skip[expand][:, commit:] * x[:, commit:] + c_out[expand][:, commit:] * f.to(x.dtype)
        if base is None:
            return out if feats is None else (out, feats)
        if not self.change_std:
            raise ValueError(
                "denoising a change from a base frame needs a model whose target is the change (change_std > 0)"
            )
        k = base.shape[1]
        if k > out.shape[1] or base.shape[0] != x.shape[0] or base.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"base: expected [{x.shape[0]}, K <= {out.shape[1]}, {', '.join(map(str, x.shape[2:]))}], "
                f"got {list(base.shape)}"
            )
        r_skip, r_out, _, _ = edm_scalings(sigma[:, -k:], self.change_std)
        change = r_skip[expand] * (x[:, -k:] - base) + r_out[expand] * f[:, -k:]
        out = torch.cat([out[:, :-k], base + change], dim=1)
        return out if feats is None else (out, feats)
