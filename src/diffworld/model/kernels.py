"""Small kernels the DiT runs, written for speed on a CPU: each beside the plain form it equals.

- `linear_few_rows`: `F.linear` for the per-frame conditioning (a few rows, a wide output).
- `adaln_vectors`: adaLN's shift, scale and gate vectors in one product, the scales as 1 + scale.
- `rope`: rotary positions in time, one complex product in eager fp32, `rope_pairs` (the real
  pairs, which `torch.compile` fuses and bf16 takes) elsewhere.

The token-wide linear maps through oneDNN are in `diffworld.model.linear`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def linear_few_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`F.linear` for inputs of few rows (the per-frame conditioning: one row per frame), as (W·xᵀ)ᵀ.

    Same product, other operand order: for a handful of rows and a wide output (adaLN's 9·D) the
    CPU's BLAS is 2-3× faster this way round (2 rows, 128 -> 1152: 30 vs 100 µs), and never slower
    up to a few hundred rows. The result is a transposed view, which the modulations only read.
    """
    rows = x.reshape(-1, x.shape[-1])  # [M, in]
    return torch.addmm(bias[:, None], weight, rows.T).T.reshape(*x.shape[:-1], weight.shape[0])


def scale_offset(width: int, chunks: int, scales: tuple[int, ...]) -> torch.Tensor:
    """[chunks·width]: ones on the chunks that are adaLN scales, zeros elsewhere."""
    offset = torch.zeros(chunks, width)
    offset[list(scales)] = 1.0
    return offset.flatten()


def adaln_vectors(ada: nn.Sequential, c: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The adaLN vectors of `ada` (SiLU, then a linear map to chunks·D) for the per-frame
    conditioning c [B, N, D]: `offset` (`scale_offset`) added to the bias, so scales come out as
    1 + scale; one [B, N, 1, D] tensor per chunk, ready to broadcast over a frame's tokens."""
    linear = ada[-1]
    out = linear_few_rows(ada[0](c), linear.weight, linear.bias + offset)  # [B, N, chunks·D]
    return out[:, :, None].chunk(len(offset) // c.shape[-1], dim=-1)


def rope_angles(times: torch.Tensor, dh: int) -> torch.Tensor:
    """The rotations (cos, sin)(times[N]·ω) [N, dh/2, 2] of rotary positions, computed once per forward.

    Real pairs, not complex numbers: inductor generates no code for complex operators, so a
    compiled pass keeps them real; eager fp32 `rope` views them as complex for free.
    """
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, dh, 2, device=times.device, dtype=torch.float32) / dh)
    angles = times.to(torch.float32)[:, None] * freqs[None]  # [N, dh/2]
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def rope(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding in time: x [..., N, dh] rotated pairwise, (x[2j], x[2j+1])
    by `rope_angles` [N, dh/2, 2].

    One complex product in eager fp32; `rope_pairs` otherwise: torch has no bf16 complex, and
    inductor generates no code for complex products, so under `torch.compile` the real pairs
    fuse into the kernels around them instead.
    """
    if x.dtype == torch.float32 and not torch.compiler.is_compiling():
        return torch.view_as_real(
            torch.view_as_complex(x.unflatten(-1, (-1, 2))) * torch.view_as_complex(rotations)
        ).flatten(-2)
    return rope_pairs(x, rotations)


def rope_pairs(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """`rope` written on the real pairs: a few elementwise kernels, in any dtype."""
    cos, sin = rotations.to(x.dtype).unbind(-1)  # [N, dh/2] each
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(
        -2
    )  # [..., N, dh/2, 2] -> [..., N, dh]
