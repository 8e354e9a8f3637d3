"""Sparse graph attention's pieces: the attention pattern, Laplacian positions from a sparse
eigensolver, and the heat-kernel bias on the pattern's entries only.

The dense layout (`graph.GraphLayout` with `attention="dense"`) holds an [N, N] eigendecomposition
and a [layers, heads, N, N] bias: O(N³) to build and O(N²) memory, a few thousand nodes at most.
Here a node attends to itself and its neighbours within `hops` hops, so memory and time grow with
the pattern's size E (≈ N + 2·edges for one hop), and the heat kernel exp(−τL) is needed only at
those E entries. With M = L − I (spectrum in [−1, 1]) and Chebyshev polynomials T_k,

    exp(−τL) = Σ_k c_k(τ) T_k(M),

so the kernel's entries on the pattern are Σ_k c_k(τ) m_k with fixed "moments" m_k = T_k(M)[i, j],
computed once by the three-term recurrence on sparse products (`chebyshev_moments`), and c_k(τ)
by Chebyshev–Gauss quadrature in torch, differentiable in τ (`chebyshev_coefficients`).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from diffworld.layouts.heat_kernel import LearnedDiffusionTimes

#: Degree of the Chebyshev expansion: its truncation error is below 1e-10 for τ ≤ `MAX_TAU`.
CHEBYSHEV_DEGREE = 32
#: Largest diffusion time the sparse bias uses (learned ones are clamped): on a one-hop pattern
#: heat that has spread further than this is the same on every neighbour.
MAX_TAU = 20.0


def sparse_adjacency(n: int, edges) -> sp.csr_array:
    """[N, N] symmetric 0/1 adjacency (CSR, float64) of an undirected edge list, checked like `graph.adjacency`."""
    try:
        e = np.asarray(edges, dtype=np.int64) if len(edges) else np.zeros((0, 2), np.int64)
    except (TypeError, ValueError):
        raise ValueError("edges: expected pairs of node indices, found entries that are not") from None
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"edges: expected pairs of node indices, found an array of shape {list(e.shape)}")
    bad = (e < 0) | (e >= n)
    if bad.any():
        i, j = e[bad.any(1)][0]
        raise ValueError(f"edge ({i}, {j}) names a node outside 0..{n - 1}")
    loops = e[:, 0] == e[:, 1]
    if loops.any():
        i = e[loops][0, 0]
        raise ValueError(f"edge ({i}, {i}) is a self-loop; the graph layout expects none")
    rows, cols = np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]])
    a = sp.csr_array((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    a.sum_duplicates()
    a.data[:] = 1.0
    return a


def sparse_normalized_laplacian(a: sp.csr_array) -> sp.csr_array:
    """I − D^{-1/2} A D^{-1/2} as a sparse matrix, zero rows for isolated nodes (as `graph.normalized_laplacian`)."""
    deg = np.asarray(a.sum(1)).ravel()
    inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)
    d = sp.diags_array(inv_sqrt)
    return (sp.diags_array((deg > 0).astype(float)) - d @ a @ d).tocsr()


def smallest_eigen(a: sp.csr_array, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest eigenvalues [k] (ascending) and eigenvectors [N, k] of the normalised Laplacian.

    Shift-invert about a point just below 0 (L is positive semi-definite, so L + εI factorises);
    signs made deterministic as in `graph.laplacian_eigen`.
    """
    n = a.shape[0]
    lap = sparse_normalized_laplacian(a)
    k = min(k, n)
    if n <= max(4 * k, 64):  # a small graph: the dense solver, which also finds all N when asked
        lam, u = np.linalg.eigh(lap.toarray())
        lam, u = lam[:k], u[:, :k]
    else:
        v0 = np.random.default_rng(0).standard_normal(n)  # a fixed start: the same graph gives the same basis
        try:  # Lanczos on L itself: fast where the low spectrum is spread out, as on social graphs
            lam, u = spla.eigsh(lap, k=k, which="SA", v0=v0, tol=1e-8, maxiter=20 * n)
        except spla.ArpackNoConvergence:  # a clustered low spectrum (rings, lattices): shift-invert about −ε
            lam, u = spla.eigsh(lap.tocsc(), k=k, sigma=-1e-3, which="LM", v0=v0)
        order = np.argsort(lam)
        lam, u = lam[order], u[:, order]
    top = np.abs(u).argmax(axis=0)
    u = u * np.where(u[top, np.arange(k)] < 0, -1.0, 1.0)
    return np.clip(lam, 0.0, 2.0), u


def attention_pattern(a: sp.csr_array, hops: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(query node, key node) index pairs [E] of every node with itself and the nodes within `hops`
    hops, sorted by query node then key node."""
    n = a.shape[0]
    reach = sp.eye_array(n, format="csr") + (a != 0).astype(np.int64)
    step = reach
    for _ in range(hops - 1):
        reach = (reach @ step).tocsr()
    reach = reach.tocoo()
    order = np.lexsort((reach.col, reach.row))
    return reach.row[order].astype(np.int64), reach.col[order].astype(np.int64)


#: The moments of the last few graphs: a model is built more than once per load (its shapes are
#: checked on a skeleton first), and each build would otherwise redo the products.
_MOMENTS: dict[bytes, np.ndarray] = {}


def chebyshev_moments(
    a: sp.csr_array, dst: np.ndarray, src: np.ndarray, degree: int = CHEBYSHEV_DEGREE, block: int = 1024
) -> np.ndarray:
    """[degree + 1, E] float32: T_k(L − I)[dst, src] for k = 0..degree (read-only; kept for the graph).

    T_k(M) is symmetric, so its column j holds the entries (i, j) of every pair with key j: the
    recurrence runs on blocks of columns of the identity (O(degree · nnz · N) in all, O(N · block)
    memory) and keeps only the pattern's entries.
    """
    a = sp.csr_array(a)
    parts = (a.indptr, a.indices, np.asarray(dst), np.asarray(src), np.array([a.shape[0], degree]))
    key = hashlib.sha256(b"".join(np.ascontiguousarray(v, dtype=np.int64).tobytes() for v in parts)).digest()
    if key not in _MOMENTS:
        if len(_MOMENTS) >= 2:
            _MOMENTS.pop(next(iter(_MOMENTS)))
        out = _chebyshev_moments(a, dst, src, degree, block)
        out.setflags(write=False)
        _MOMENTS[key] = out
    return _MOMENTS[key]


def _chebyshev_moments(a: sp.csr_array, dst: np.ndarray, src: np.ndarray, degree: int, block: int) -> np.ndarray:
    n = a.shape[0]
    m = (sparse_normalized_laplacian(a) - sp.eye_array(n)).astype(np.float32).tocsr()
    m.eliminate_zeros()
    out = np.zeros((degree + 1, len(dst)), np.float32)
    by_key = np.argsort(src, kind="stable")
    keys = src[by_key]
    for c0 in range(0, n, block):
        c1 = min(n, c0 + block)
        lo, hi = np.searchsorted(keys, [c0, c1])
        pick = by_key[lo:hi]
        rows, cols = dst[pick], src[pick] - c0
        prev = np.zeros((n, c1 - c0), np.float32)
        prev[np.arange(c0, c1), np.arange(c1 - c0)] = 1.0  # T_0 = I
        cur = m[:, c0:c1].toarray()  # T_1 = M
        out[0, pick] = prev[rows, cols]
        if degree >= 1:
            out[1, pick] = cur[rows, cols]
        for k in range(2, degree + 1):  # T_k = 2 M T_{k−1} − T_{k−2}, in float32 (|T_k(M)| ≤ 1)
            nxt = m @ cur
            nxt *= 2.0
            nxt -= prev
            prev, cur = cur, nxt
            out[k, pick] = cur[rows, cols]
    return out


def chebyshev_coefficients(tau: torch.Tensor, degree: int = CHEBYSHEV_DEGREE) -> torch.Tensor:
    """[..., degree + 1] coefficients c_k of exp(−τ(1 + x)) in Chebyshev polynomials T_k(x) on [−1, 1].

    Chebyshev–Gauss quadrature on 2·(degree + 1) nodes, c_k = (2 − δ_k0)/K Σ_j f(cos θ_j) cos(k θ_j):
    exact up to the aliasing of terms beyond 2·degree, far below float precision here, and
    differentiable in τ.
    """
    nodes = 2 * (degree + 1)
    theta = (torch.arange(nodes, dtype=torch.float64, device=tau.device) + 0.5) * (math.pi / nodes)
    f = torch.exp(-tau.double()[..., None] * (1.0 + torch.cos(theta)))  # [..., K]
    k = torch.arange(degree + 1, dtype=torch.float64, device=tau.device)
    basis = torch.cos(k[:, None] * theta[None, :]) * (2.0 / nodes)  # [degree + 1, K]
    basis[0] /= 2.0
    return f @ basis.T


class SparseHeatKernelBias(LearnedDiffusionTimes):
    """Additive bias log(ε + exp(−τL)_ij) on the entries (i, j) of a sparse attention pattern.

    The sparse counterpart of `graph.HeatKernelBias`, with the same parameters (`log_tau`,
    [layers, heads], initialised alike), so a model can switch between the two; `forward()`
    returns [layers, heads, E] for the pairs (`dst`, `src`). τ is clamped to `MAX_TAU`, where the
    expansion is exact. Cost per forward: a [layers·heads, degree + 1] × [degree + 1, E] product.
    """

    def __init__(
        self,
        dst: np.ndarray,
        src: np.ndarray,
        moments: np.ndarray,
        heads: int,
        layers: int = 1,
        eps: float = 1e-4,
        tau_range: tuple[float, float] = (0.1, 10.0),
    ) -> None:
        super().__init__(heads, layers, eps, tau_range)
        if moments.shape != (moments.shape[0], len(dst)) or len(src) != len(dst):
            raise ValueError(f"expected moments [degree + 1, {len(dst)}] for {len(dst)} pairs, got {moments.shape}")
        self.degree = moments.shape[0] - 1
        self.register_buffer("dst", torch.from_numpy(np.ascontiguousarray(dst)), persistent=False)  # [E]
        self.register_buffer("src", torch.from_numpy(np.ascontiguousarray(src)), persistent=False)  # [E]
        self.register_buffer("moments", torch.tensor(moments, dtype=torch.float32), persistent=False)  # [degree + 1, E]

    def kernel(self) -> torch.Tensor:
        """[layers, heads, E] exp(−τL) on the pattern, differentiable in τ."""
        with torch.autocast(self.moments.device.type, enabled=False):
            tau = self.log_tau.float().exp().clamp_max(MAX_TAU)
            coef = chebyshev_coefficients(tau, self.degree).float()  # [layers, heads, degree + 1]
            return coef @ self.moments

    def _source(self) -> torch.Tensor:
        return self.moments
