"""Attention restricted to a sparse pattern of (query, key) pairs: a graph's neighbourhoods.

Dense attention scores all S² pairs of a frame's tokens; on a graph of many nodes most of those
pairs are far apart and the heat-kernel bias all but masks them. Here the scores exist only for
the E pairs of a pattern (each node with itself and its neighbours), so memory and time grow with
E instead of S². The softmax runs over each query's pairs with scatter reductions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

#: Most elements one gathered [M, H, E, dh] block may hold; longer batches go in slices of frames.
CHUNK_ELEMENTS = 1 << 25


class EdgeBias(NamedTuple):
    """A sparse spatial pattern and its additive bias: query `dst` [E] attends key `src` [E] with
    logit bias `values` [H, E] (or [E]); every query must appear in `dst` (its own pair)."""

    dst: torch.Tensor
    src: torch.Tensor
    values: torch.Tensor


def edge_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: EdgeBias) -> torch.Tensor:
    """Softmax attention of q over k, v [M, H, S, dh] on the pattern of `bias`; returns [M, H, S, dh].

    Equal to `scaled_dot_product_attention` with the bias on the pattern's entries and −∞ elsewhere.
    """
    m, heads, s, dh = q.shape
    per_frame = heads * len(bias.dst) * dh
    step = max(1, CHUNK_ELEMENTS // max(per_frame, 1))
    if m > step:
        return torch.cat(
            [edge_attention(q[i : i + step], k[i : i + step], v[i : i + step], bias) for i in range(0, m, step)]
        )
    dst, src = bias.dst, bias.src
    # index_select, not advanced indexing: its backward is an index_add, far faster on a CPU
    logits = (q.index_select(2, dst) * k.index_select(2, src)).sum(-1) * dh**-0.5 + bias.values.to(q.dtype)
    with torch.no_grad():  # the softmax is shift-invariant: the per-query maximum needs no gradient
        top = logits.new_full((m, heads, s), -torch.inf).scatter_reduce(-1, dst.expand_as(logits), logits, "amax")
    w = torch.exp(logits - top.index_select(-1, dst))  # [M, H, E]
    total = w.new_zeros(m, heads, s).index_add(-1, dst, w)
    w = w / total.index_select(-1, dst)
    return q.new_zeros(m, heads, s, dh).index_add(2, dst, w[..., None] * v.index_select(2, src))


__all__ = ["CHUNK_ELEMENTS", "EdgeBias", "edge_attention"]
