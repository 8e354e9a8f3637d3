"""Graph layout: an (N, F) frame on a fixed undirected graph becomes N tokens of F values.

Spatial attention on a graph has no grid to lean on, so the layout supplies two things built
from the spectrum of the graph's normalised Laplacian  L = I − D^{-1/2} A D^{-1/2} = U Λ Uᵀ:

- positions: the eigenvectors of the smallest non-trivial eigenvalues (Laplacian positional
  encodings, Dwivedi et al. 2020), which the DiT maps to its width by a learned linear layer;
- a learned attention bias, `log(ε + exp(−τ_h L))_ij` per head (see `HeatKernelBias`): heat
  that has diffused for a time τ_h along the edges, so a head attends locally for small τ_h
  and across the whole graph for large τ_h.

Cost: the dense eigendecomposition is O(N³) in float64, once, when the layout is built
(about a second at N = 2,000 on a laptop CPU; a few thousand nodes is the practical limit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from diffworld.layouts.rows import RowTokens

#: At most this many eigenvectors become positional features: the low end of the spectrum
#: carries the graph's large-scale shape, the high end is noisy and often degenerate.
MAX_EIGVECS = 16


class GraphLayout(RowTokens):
    """One token per node; Laplacian-eigenvector positions and a heat-kernel attention bias."""

    name = "graph"

    #: The DiT learns a linear map from `positions()` to its width (they are not width-sized).
    learned_positions = True

    def __init__(
        self,
        frame_shape: tuple[int, int],
        edges: Sequence[tuple[int, int]],
        num_eigvecs: int = MAX_EIGVECS,
    ) -> None:
        n, f = frame_shape
        if n < 2 or f < 1:
            raise ValueError(f"a graph frame is (N, F) with N >= 2 nodes and F >= 1 features, got {frame_shape}")
        self.frame_shape = (n, f)
        self.num_eigvecs = num_eigvecs
        self.adjacency = adjacency(n, edges)  # [N, N] float64, symmetric 0/1
        self.eigvals, self.eigvecs = laplacian_eigen(self.adjacency)  # [N], [N, N]

    def laplacian(self) -> np.ndarray:
        """[N, N] normalised Laplacian I − D^{-1/2} A D^{-1/2} (an isolated node's row is zero)."""
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
        k = min(self.num_eigvecs, dim, self.frame_shape[0] - 1)
        u = self.eigvecs[:, 1 : k + 1] * math.sqrt(self.frame_shape[0])  # [N, k]
        return torch.from_numpy(u).float()

    def attention_bias(self) -> torch.Tensor | None:
        """No fixed bias: the graph's bias is learned (see `attention_bias_module`)."""
        return None

    def attention_bias_module(self, heads: int, layers: int) -> HeatKernelBias:
        """The learned heat-kernel bias, a diffusion time per layer and head."""
        return HeatKernelBias(torch.from_numpy(self.eigvals), torch.from_numpy(self.eigvecs), heads, layers)


class HeatKernelBias(nn.Module):
    """Additive spatial-attention bias log(ε + exp(−τ L)) with a learned diffusion time τ > 0.

    One module serves the whole DiT: `log_tau` is [layers, heads], so every block and head has
    its own τ, and all of them are evaluated together in one batched product. `forward()`
    returns [layers, heads, N, N]; block i adds slice i to its spatial logits.

    Laplacian: the normalised one, whose spectrum lies in [0, 2] for every graph, so τ means
    the same on a 10-node ring and on a 2,000-node network (with the combinatorial Laplacian
    λ_max grows with the largest degree and a useful τ would depend on the graph). Its heat
    kernel is the random-walk heat kernel D^{-1/2}·exp(−τ L_rw)·D^{1/2} made symmetric; it is
    entrywise non-negative, and its rows weighted by √degree sum to √degree (heat is conserved).

    τ = exp(log_tau), initialised log-spaced from 0.1 to 10 across heads (the same in every
    layer): at τ = 0.1 heat has barely left a node (local attention), at τ = 10 it has spread
    over the graph's connected component (global attention).

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
        super().__init__()
        n = eigvals.shape[0]
        if eigvecs.shape != (n, n):
            raise ValueError(f"expected eigvecs of shape [{n}, {n}] for {n} eigenvalues, got {list(eigvecs.shape)}")
        self.eps = eps
        self.register_buffer("eigvals", eigvals.float(), persistent=False)  # [N]
        self.register_buffer("eigvecs", eigvecs.float(), persistent=False)  # [N, N]
        lo, hi = math.log(tau_range[0]), math.log(tau_range[1])
        log_tau = torch.linspace(lo, hi, heads) if heads > 1 else torch.full((1,), (lo + hi) / 2)
        self.log_tau = nn.Parameter(log_tau.repeat(layers, 1))  # [layers, heads]
        self._memo: tuple[tuple, torch.Tensor] | None = None

    def diffusion_times(self) -> torch.Tensor:
        """[layers, heads] the learned τ values."""
        return self.log_tau.detach().exp()

    def kernel(self) -> torch.Tensor:
        """[layers, heads, N, N] exp(−τ L) = U diag(e^{−τλ}) Uᵀ, differentiable in τ."""
        with torch.autocast(self.eigvecs.device.type, enabled=False):
            tau = self.log_tau.float().exp()  # [layers, heads]
            decay = torch.exp(-tau[..., None] * self.eigvals)  # [layers, heads, N]
            return (self.eigvecs * decay[..., None, :]) @ self.eigvecs.mT  # [layers, heads, N, N]

    def forward(self) -> torch.Tensor:
        """[layers, heads, N, N] log(ε + exp(−τ L)), the additive bias on spatial logits."""
        if torch.is_grad_enabled():
            return self._bias()
        key = (self.log_tau._version, self.log_tau.data_ptr(), self.eigvecs.data_ptr(), self.eigvecs.device)
        if self._memo is None or self._memo[0] != key:
            self._memo = (key, self._bias())
        return self._memo[1]

    def _bias(self) -> torch.Tensor:
        # Round-off can leave far-apart entries a hair below zero; the kernel itself never is.
        return torch.log(self.eps + self.kernel().clamp_min(0.0))


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
