"""Frames (N, F) whose rows are the tokens: the part the graph and series layouts share."""

from __future__ import annotations

import torch
from torch import nn


class RowTokens:
    """One token per row of an (N, F) frame (a node, a variable), its F values as they are.

    Subclasses set `frame_shape` and supply the positions and the attention bias.
    """

    #: The layout's name in messages ("graph", "series").
    name: str
    frame_shape: tuple[int, int]

    @property
    def num_tokens(self) -> int:
        """Tokens per frame: one per row."""
        return self.frame_shape[0]

    @property
    def token_dim(self) -> int:
        """Values per token: the row's features."""
        return self.frame_shape[1]

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[..., N, F] -> [..., N, F]: a row's features already are its token."""
        return x

    def from_tokens(self, t: torch.Tensor) -> torch.Tensor:
        """[..., N, F] -> [..., N, F]; the inverse of `to_tokens`."""
        return t

    def refiner(self, channels: int) -> nn.Module:
        """No refiner head: tokens are rows, there are no patch borders to mend."""
        raise ValueError(f"the {self.name} layout has no refiner head; set refine=0 (got refine={channels})")
