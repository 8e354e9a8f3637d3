"""Graph layout: an (N, F) frame on a fixed undirected graph becomes N tokens of F values.

Spatial attention on a graph has no grid to lean on, so the layout supplies two things built
from the spectrum of the graph's normalised Laplacian  L = I − D^{-1/2} A D^{-1/2} = U Λ Uᵀ:

- positions: the eigenvectors of the smallest non-trivial eigenvalues (Laplacian positional
  encodings, Dwivedi et al. 2020), which the DiT maps to its width by a learned linear layer;
- a learned attention bias, `log(ε + exp(−τ_h L))_ij` per head (see `HeatKernelBias`): heat
  that has diffused for a time τ_h along the edges, so a head attends locally for small τ_h
  and across the whole graph for large τ_h.

Two kinds of spatial attention (`attention`):

- "dense": every node attends to every node. The eigendecomposition is O(N³) in float64, once,
  when the layout is built (about a second at N = 2,000), and the bias holds N² entries per
  layer and head: a few thousand nodes is the practical limit.
- "sparse": each node attends to itself and its neighbours within `hops` hops; positions come from
  a sparse eigensolver and the bias is the heat kernel on those pairs only (`sparse_graph`), so
  cost and memory grow with the edges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from diffworld.layouts.heat_kernel import LearnedDiffusionTimes
from diffworld.layouts.rows import RowTokens
from diffworld.layouts.sparse_graph import (
    SparseHeatKernelBias,
    attention_pattern,
    chebyshev_moments,
    smallest_eigen,
    sparse_adjacency,
    sparse_normalized_laplacian,
)

#: At most this many eigenvectors become positional features: the low end of the spectrum
#: carries the graph's large-scale shape, the high end is noisy and often degenerate.
MAX_EIGVECS = 16
#: The kinds of spatial attention a graph layout offers.
ATTENTIONS = ("dense", "sparse")


class GraphLayout(RowTokens):
    """One token per node; Laplacian-eigenvector positions and a heat-kernel attention bias, over all
    pairs of nodes ("dense") or over each node's neighbourhood of `hops` hops ("sparse")."""

    name = "graph"

    #: The DiT learns a linear map from `positions()` to its width (they are not width-sized).
    learned_positions = True

    def __init__(
        self,
        frame_shape: tuple[int, int],
        edges: Sequence[tuple[int, int]],
        num_eigvecs: int = MAX_EIGVECS,
        attention: str = "dense",
        hops: int = 1,
    ) -> None:
        n, f = frame_shape
        if n < 2 or f < 1:
            raise ValueError(f"a graph frame is (N, F) with N >= 2 nodes and F >= 1 features, got {frame_shape}")
        if attention not in ATTENTIONS:
            raise ValueError(f"graph attention: expected one of {', '.join(ATTENTIONS)}, found {attention!r}")
        self.frame_shape = (n, f)
        self.num_eigvecs, self.attention, self.hops = num_eigvecs, attention, hops
        if attention == "dense":
            self.adjacency = adjacency(n, edges)  # [N, N] float64, symmetric 0/1
            self.eigvals, self.eigvecs = laplacian_eigen(self.adjacency)  # [N], [N, N]
        else:
            self.adjacency = sparse_adjacency(n, edges)  # CSR
            # the smallest num_eigvecs + 1: the first (constant on a connected graph) is skipped
            self.eigvals, self.eigvecs = smallest_eigen(self.adjacency, num_eigvecs + 1)  # [k + 1], [N, k + 1]
            self.pattern = attention_pattern(self.adjacency, hops)  # (dst [E], src [E])

    def laplacian(self) -> np.ndarray:
        """[N, N] normalised Laplacian I − D^{-1/2} A D^{-1/2} (an isolated node's row is zero; sparse
        CSR for a sparse layout)."""
        if self.attention == "sparse":
            return sparse_normalized_laplacian(self.adjacency)
        return normalized_laplacian(self.adjacency)

    def positions(self, dim: int) -> torch.Tensor:
        """[N, k] positional features: the k = min(num_eigvecs, dim, N − 1) eigenvectors after the first.

        Scaled by √N so entries are O(1) whatever the graph's size. Each eigenvector's sign is
        fixed by making its entry of largest magnitude positive (lowest index on a tie), which
        commutes with relabelling the nodes when that entry is unique. In a degenerate
        eigenspace (a ring, a grid, any symmetric graph) the basis itself is arbitrary: the DiT
        therefore stores these features with its weights, so a loaded model sees the basis it
        was trained with.
        """
        k = min(self.num_eigvecs, dim, self.frame_shape[0] - 1, self.eigvecs.shape[1] - 1)
        u = self.eigvecs[:, 1 : k + 1] * math.sqrt(self.frame_shape[0])  # [N, k]
        return torch.from_numpy(u).float()

    def attention_bias(self) -> torch.Tensor | None:
        """No fixed bias: the graph's bias is learned (see `attention_bias_module`)."""
        return None

    def attention_bias_module(self, heads: int, layers: int) -> HeatKernelBias | SparseHeatKernelBias:
        """The learned heat-kernel bias, a diffusion time per layer and head (on the pattern's pairs when sparse)."""
        if self.attention == "dense":
            return HeatKernelBias(torch.from_numpy(self.eigvals), torch.from_numpy(self.eigvecs), heads, layers)
        dst, src = self.pattern
        moments = chebyshev_moments(self.adjacency, dst, src)
        return SparseHeatKernelBias(dst, src, moments, heads, layers)


class HeatKernelBias(LearnedDiffusionTimes):
    """Additive spatial-attention bias log(ε + exp(−τ L)) with a learned diffusion time τ > 0.

    One module serves the whole DiT: `log_tau` is [layers, heads], so every block and head has
    its own τ, and all of them are evaluated together in one batched product. `forward()`
    returns [layers, heads, N, N]; block i adds slice i to its spatial logits.

    Laplacian: the normalised one, whose spectrum lies in [0, 2] for every graph, so τ means
    the same on a 10-node ring and on a 2,000-node network (with the combinatorial Laplacian
    λ_max grows with the largest degree and a useful τ would depend on the graph). Its heat
    kernel is the random-walk heat kernel D^{-1/2}·exp(−τ L_rw)·D^{1/2} made symmetric; it is
    entrywise non-negative, and its rows weighted by √degree sum to √degree (heat is conserved).
    τ is initialised as `LearnedDiffusionTimes` says.

    Cost: exp(−τL) = U diag(e^{−τλ}) Uᵀ is one [N, N] × [N, N] product per layer and head,
    O(layers·heads·N³) per forward pass and [layers, heads, N, N] floats of memory — fine up to
    N ≈ 2,000. It is computed in float32 outside autocast (bf16 would drown the ε floor) and,
    when gradients are off (rollouts), kept until τ changes, so sampling pays it once.
    """

    def __init__(
        self,
        eigvals: torch.Tensor,
        eigvecs: torch.Tensor,
        heads: int,
        layers: int = 1,
        eps: float = 1e-4,
        tau_range: tuple[float, float] = (0.1, 10.0),
    ) -> None:
        super().__init__(heads, layers, eps, tau_range)
        n = eigvals.shape[0]
        if eigvecs.shape != (n, n):
            raise ValueError(f"expected eigvecs of shape [{n}, {n}] for {n} eigenvalues, got {list(eigvecs.shape)}")
        self.register_buffer("eigvals", eigvals.float(), persistent=False)  # [N]
        self.register_buffer("eigvecs", eigvecs.float(), persistent=False)  # [N, N]

    def kernel(self) -> torch.Tensor:
        """[layers, heads, N, N] exp(−τ L) = U diag(e^{−τλ}) Uᵀ, differentiable in τ."""
        with torch.autocast(self.eigvecs.device.type, enabled=False):
            tau = self.log_tau.float().exp()  # [layers, heads]
            decay = torch.exp(-tau[..., None] * self.eigvals)  # [layers, heads, N]
            return (self.eigvecs * decay[..., None, :]) @ self.eigvecs.mT  # [layers, heads, N, N]

    def _source(self) -> torch.Tensor:
        return self.eigvecs


def adjacency(n: int, edges: Sequence[tuple[int, int]]) -> np.ndarray:
    """[N, N] symmetric 0/1 adjacency of an undirected edge list (duplicates and both directions allowed)."""
    a = np.zeros((n, n))
    for e in edges:
        if len(e) != 2:
            raise ValueError(f"an edge is a pair of node indices, got {tuple(e)}")
        i, j = int(e[0]), int(e[1])
        if not (0 <= i < n and 0 <= j < n):
            raise ValueError(f"edge ({i}, {j}) names a node outside 0..{n - 1}")
        if i == j:
            raise ValueError(f"edge ({i}, {j}) is a self-loop; the graph layout expects none")
        a[i, j] = a[j, i] = 1.0
    return a


def normalized_laplacian(a: np.ndarray) -> np.ndarray:
    """I − D^{-1/2} A D^{-1/2}, with zero rows for isolated nodes (Chung's convention)."""
    deg = a.sum(1)
    inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)
    return np.diag((deg > 0).astype(float)) - inv_sqrt[:, None] * a * inv_sqrt[None, :]


def laplacian_eigen(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues [N] ascending and eigenvectors [N, N] (columns) of the normalised Laplacian.

    Signs are made deterministic: each column's entry of largest magnitude is positive.
    """
    lam, u = np.linalg.eigh(normalized_laplacian(a))
    top = np.abs(u).argmax(axis=0)  # [N]
    u = u * np.where(u[top, np.arange(u.shape[1])] < 0, -1.0, 1.0)
    return np.clip(lam, 0.0, 2.0), u
