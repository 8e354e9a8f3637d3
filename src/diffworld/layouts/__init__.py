"""Layouts turn one frame of a world into tokens and back.

Every layout offers `num_tokens`, `token_dim`, `to_tokens`, `from_tokens`, `positions(dim)`,
`attention_bias()` (a fixed additive bias or None) and `refiner(channels)`. Two hooks are
optional, and the DiT reads them only where a layout has them:
  - `learned_positions = True`: `positions(dim)` returns raw features [S, k] (graph: Laplacian
    eigenvectors; series: one-hots, so the map is a variable embedding) that the DiT maps to its
    width with a learned linear layer; otherwise the
    positions are a fixed [S, dim] embedding added as they are (grid: 2-D sin-cos).
  - `attention_bias_module(heads, layers)`: a learned bias module whose forward returns
    [layers, heads, S, S] (graph: the heat kernel, see `HeatKernelBias`), or [layers, heads, E]
    on a sparse graph's pattern of E pairs (`SparseHeatKernelBias`).
"""

from __future__ import annotations

from diffworld.layouts.graph import GraphLayout, HeatKernelBias
from diffworld.layouts.grid import GridLayout
from diffworld.layouts.series import SeriesLayout
from diffworld.layouts.sparse_graph import SparseHeatKernelBias
from diffworld.spec import WorldSpec

Layout = GridLayout | GraphLayout | SeriesLayout


#: Most tokens a frame may have: spatial attention holds S² scores per head and frame, and a
#: graph's layout an N×N eigendecomposition, so beyond this a model would not fit in memory.
MAX_TOKENS = 8192
#: Graphs of more nodes than this get sparse attention under `graph_attention="auto"`.
DENSE_NODES = 2048
#: Most nodes of a graph with sparse attention (whose memory grows with the edges, not N²).
MAX_SPARSE_NODES = 1 << 20


def graph_attention_for(nodes: int, graph_attention: str) -> str:
    """ "dense" or "sparse": `graph_attention` with "auto" resolved by the number of nodes."""
    if graph_attention == "auto":
        return "sparse" if nodes > DENSE_NODES else "dense"
    return graph_attention


def make_layout(spec: WorldSpec, patch: int, graph_attention: str = "auto") -> Layout:
    """The layout for `spec`; `patch` is the grid's patch size (graphs and series have one token per node or
    variable); `graph_attention`: a graph's spatial attention, "auto", "dense" or "sparse"."""
    attention = graph_attention_for(spec.frame_shape[0], graph_attention) if spec.layout == "graph" else ""
    if spec.layout == "grid":
        _, h, w = spec.frame_shape
        check_tokens((h // patch) * (w // patch) if patch >= 1 else 0, f"{h}x{w} frames in patches of {patch}")
    elif attention == "sparse":
        n = spec.frame_shape[0]
        check_tokens(n, f"a graph of {n} nodes", MAX_SPARSE_NODES, "use a smaller graph")
    else:
        check_tokens(
            spec.frame_shape[0],
            f"a {spec.layout} of {spec.frame_shape[0]} {'nodes' if spec.layout == 'graph' else 'variables'}",
        )
    if spec.layout == "grid":
        return GridLayout(tuple(spec.frame_shape), patch, periodic=spec.periodic)  # type: ignore[arg-type]
    if spec.layout == "graph":
        return GraphLayout(tuple(spec.frame_shape), spec.edges, attention=attention)  # type: ignore[arg-type]
    if spec.layout == "series":
        return SeriesLayout(tuple(spec.frame_shape))  # type: ignore[arg-type]
    raise ValueError(f"unknown layout {spec.layout!r}; expected 'grid', 'graph' or 'series'")


def check_tokens(
    tokens: int, what: str, most: int = MAX_TOKENS, hint: str = "use larger patches or smaller frames"
) -> None:
    """Raise ValueError if a frame of `tokens` tokens (`what` makes them) exceeds `most`; `hint` says what to do."""
    if tokens > most:
        raise ValueError(f"{what}: expected at most {most} tokens a frame, found {tokens}; {hint}")


__all__ = [
    "DENSE_NODES",
    "MAX_SPARSE_NODES",
    "MAX_TOKENS",
    "GraphLayout",
    "GridLayout",
    "HeatKernelBias",
    "Layout",
    "SeriesLayout",
    "SparseHeatKernelBias",
    "graph_attention_for",
    "make_layout",
]
