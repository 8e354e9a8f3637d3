"""Grid layout: a (C, H, W) frame becomes (H/p)·(W/p) tokens of C·p·p values."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GridLayout:
    """Patchify frames into tokens and back; fixed 2-D sin-cos positions for the tokens."""

    def __init__(self, frame_shape: tuple[int, int, int], patch: int, periodic: bool = False) -> None:
        c, h, w = frame_shape
        if patch < 1 or h % patch or w % patch:
            raise ValueError(f"patch size {patch} must divide the frame's height {h} and width {w}")
        self.frame_shape = (c, h, w)
        self.patch = patch
        self.grid = (h // patch, w // patch)
        #: Rows and columns wrap around (`WorldSpec.periodic`): the refiner pads across the edges.
        self.periodic = periodic

    @property
    def num_tokens(self) -> int:
        """Tokens per frame."""
        return self.grid[0] * self.grid[1]

    @property
    def token_dim(self) -> int:
        """Values per token."""
        return self.frame_shape[0] * self.patch * self.patch

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[..., C, H, W] -> [..., S, C·p·p]."""
        c, h, w = self.frame_shape
        p, (gh, gw) = self.patch, self.grid
        lead = x.shape[:-3]
        x = x.reshape(-1, c, gh, p, gw, p)
        x = x.permute(0, 2, 4, 3, 5, 1)  # [N, gh, gw, p, p, C]
        return x.reshape(*lead, gh * gw, p * p * c)

    def from_tokens(self, t: torch.Tensor) -> torch.Tensor:
        """[..., S, C·p·p] -> [..., C, H, W]; the inverse of `to_tokens`."""
        c, h, w = self.frame_shape
        p, (gh, gw) = self.patch, self.grid
        lead = t.shape[:-2]
        x = t.reshape(-1, gh, gw, p, p, c)
        x = x.permute(0, 5, 1, 3, 2, 4)  # [N, C, gh, p, gw, p]
        return x.reshape(*lead, c, h, w)

    def positions(self, dim: int) -> torch.Tensor:
        """[S, dim] fixed 2-D sin-cos embedding: half the channels encode the row, half the column."""
        if dim % 4:
            raise ValueError(f"the model width must be divisible by 4 for 2-D positions, got {dim}")
        gh, gw = self.grid
        rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        return torch.cat([_sincos(rows.flatten(), dim // 2), _sincos(cols.flatten(), dim // 2)], dim=-1)

    #: Positions are fixed features of width D, added as they are (no learned projection).
    learned_positions = False

    def attention_bias(self) -> torch.Tensor | None:
        """Additive bias for spatial attention logits; none on a grid."""
        return None

    def attention_bias_module(self, heads: int, layers: int) -> nn.Module | None:
        """A learned spatial-attention bias; none on a grid."""
        return None

    def refiner(self, channels: int) -> GridRefiner:
        """A head that turns tokens of `channels` features per value into frames (see GridRefiner)."""
        return GridRefiner(self.frame_shape, self.patch, channels, self.periodic)


class GridRefiner(nn.Module):
    """Tokens [..., S, C·k·p·p] -> frames [..., C, H, W] through two 3×3 convolutions on the pixels.

    With a linear unpatchify each token draws its p×p pixels alone, so an object on a patch
    border must be drawn by two tokens that agree, and a token can echo its neighbour's object
    at the same offset inside its own patch. Here each token emits k features per pixel and the
    convolutions let neighbouring pixels, across patch borders, settle what is drawn. Per frame
    only, so causality and the KV cache are untouched. On a periodic grid the convolutions pad
    across the edges (circularly), so the border is mended like any other patch border.
    """

    def __init__(self, frame_shape: tuple[int, int, int], patch: int, channels: int, periodic: bool = False) -> None:
        super().__init__()
        c, h, w = frame_shape
        self.frame_shape = frame_shape
        self.features = GridLayout((c * channels, h, w), patch)
        self.skip = nn.Conv2d(c * channels, c, 1)
        padding = "circular" if periodic else "zeros"
        self.conv1 = nn.Conv2d(c * channels, c * channels, 3, padding=1, padding_mode=padding)
        self.conv2 = nn.Conv2d(c * channels, c, 3, padding=1, padding_mode=padding)
        nn.init.zeros_(self.skip.bias)  # zero tokens give a zero frame, as adaLN-Zero expects
        nn.init.zeros_(self.conv2.weight)  # starts as the linear path alone
        nn.init.zeros_(self.conv2.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        lead = tokens.shape[:-2]
        x = self.features.from_tokens(tokens).flatten(0, -4)  # [M, C·k, H, W]
        y = self.skip(x) + self.conv2(F.silu(self.conv1(x)))
        return y.reshape(*lead, *self.frame_shape)


def _sincos(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """[S] integer positions -> [S, dim] sin-cos features (Transformer positional encoding)."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = pos.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()
