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


class SeriesLayout:
    """One token per variable; a learned embedding per variable; no spatial bias."""

    #: The DiT learns a linear map from `positions()` (one-hots) to its width: a variable embedding.
    learned_positions = True

    def __init__(self, frame_shape: tuple[int, int]) -> None:
        v, f = frame_shape
        if v < 1 or f < 1:
            raise ValueError(f"a series frame is (V, F) with V >= 1 variables and F >= 1 features, got {frame_shape}")
        self.frame_shape = (v, f)

    @property
    def num_tokens(self) -> int:
        """Tokens per frame: one per variable."""
        return self.frame_shape[0]

    @property
    def token_dim(self) -> int:
        """Values per token: the variable's features."""
        return self.frame_shape[1]

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[..., V, F] -> [..., V, F]: a variable's features already are its token."""
        return x

    def from_tokens(self, t: torch.Tensor) -> torch.Tensor:
        """[..., V, F] -> [..., V, F]; the inverse of `to_tokens`."""
        return t

    def positions(self, dim: int) -> torch.Tensor:
        """[V, V] the one-hot of each variable's index (`dim` is unused: the DiT maps them to its width)."""
        return torch.eye(self.frame_shape[0])

    def attention_bias(self) -> torch.Tensor | None:
        """No fixed bias: any variable may attend to any other."""
        return None

    def attention_bias_module(self, heads: int, layers: int) -> nn.Module | None:
        """No learned bias either."""
        return None

    def refiner(self, channels: int) -> nn.Module:
        """No refiner head: tokens are variables, there are no patch borders to mend."""
        raise ValueError(f"the series layout has no refiner head; set refine=0 (got refine={channels})")
