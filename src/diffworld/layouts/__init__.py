"""Layouts turn one frame of a world into tokens and back.

Every layout offers `num_tokens`, `token_dim`, `to_tokens`, `from_tokens`, `positions(dim)`,
`attention_bias()` (a fixed additive bias or None) and `refiner(channels)`. Two hooks are
optional, and the DiT reads them only where a layout has them:
  - `learned_positions = True`: `positions(dim)` returns raw features [S, k] (graph: Laplacian
    eigenvectors; series: one-hots, so the map is a variable embedding) that the DiT maps to its
    width with a learned linear layer; otherwise the
    positions are a fixed [S, dim] embedding added as they are (grid: 2-D sin-cos).
  - `attention_bias_module(heads, layers)`: a learned bias module whose forward returns
    [layers, heads, S, S] (graph: the heat kernel, see `HeatKernelBias`).
"""

from __future__ import annotations

from diffworld.layouts.graph import GraphLayout, HeatKernelBias
from diffworld.layouts.grid import GridLayout
from diffworld.layouts.series import SeriesLayout
from diffworld.spec import WorldSpec

Layout = GridLayout | GraphLayout | SeriesLayout


def make_layout(spec: WorldSpec, patch: int) -> Layout:
    """The layout for `spec`; `patch` is the grid's patch size (graphs and series have one token per node or variable)."""
    if spec.layout == "grid":
        return GridLayout(tuple(spec.frame_shape), patch, periodic=spec.periodic)  # type: ignore[arg-type]
    if spec.layout == "graph":
        return GraphLayout(tuple(spec.frame_shape), spec.edges)  # type: ignore[arg-type]
    if spec.layout == "series":
        return SeriesLayout(tuple(spec.frame_shape))  # type: ignore[arg-type]
    raise ValueError(f"unknown layout {spec.layout!r}; expected 'grid', 'graph' or 'series'")


__all__ = ["GraphLayout", "GridLayout", "HeatKernelBias", "Layout", "SeriesLayout", "make_layout"]
