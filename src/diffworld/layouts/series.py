"""Series layout: a (V, F) frame of V variables (assets, climate indices) becomes V tokens of F values.

Variables of a series have no geometry to encode: asset 3 is not "next to" asset 4. Each token
therefore gets a learned variable embedding — the DiT's learned position map applied to the
one-hot of the variable's index, which is exactly an embedding table — and spatial attention
among the variables is unbiased, so the model learns which ones move together. Temporal
attention carries each variable's history; with the KV cache a long history costs one frame's
work per new frame.
"""

from __future__ import annotations

import torch
from torch import nn

from diffworld.layouts.rows import RowTokens


class SeriesLayout(RowTokens):
    """One token per variable; a learned embedding per variable; no spatial bias."""

    name = "series"

    #: The DiT learns a linear map from `positions()` (one-hots) to its width: a variable embedding.
    learned_positions = True

    def __init__(self, frame_shape: tuple[int, int]) -> None:
        v, f = frame_shape
        if v < 1 or f < 1:
            raise ValueError(f"a series frame is (V, F) with V >= 1 variables and F >= 1 features, got {frame_shape}")
        self.frame_shape = (v, f)

    def positions(self, dim: int) -> torch.Tensor:
        """[V, V] the one-hot of each variable's index (`dim` is unused: the DiT maps them to its width)."""
        return torch.eye(self.frame_shape[0])

    def attention_bias(self) -> torch.Tensor | None:
        """No fixed bias: any variable may attend to any other."""
        return None

    def attention_bias_module(self, heads: int, layers: int) -> nn.Module | None:
        """No learned bias either."""
        return None
