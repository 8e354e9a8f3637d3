"""Cascade: epidemics and information spreading (SIR, independent cascade) on social graphs.

Every node is Susceptible, Infected or Removed; a frame is the one-hot of those states, [N, 3].
Time is discrete and one step updates every node at once from the states at the start of the step
(synchronous, the order of NDlib's `SIRModel.iteration`, so NDlib is an independent check):

1. every Infected node tries once to infect each Susceptible neighbour, each try succeeding with
   probability β independently, so a Susceptible node with k Infected neighbours becomes
   Infected with probability 1 − (1 − β)^k;
2. every node that was Infected at the start of the step (it has just tried its neighbours)
   is Removed with probability γ; a node infected in this step neither spreads nor recovers
   before the next step.

SIR is that rule. The independent cascade (IC) is the same rule with γ = 1: a newly activated
node has exactly one chance on each inactive neighbour, then stops spreading (I = just activated,
R = activated earlier, S = inactive), as NDlib's `IndependentCascadesModel` with every edge's
threshold set to β.

**β and the epidemic threshold.** An infected node makes D attempts on an edge, D geometric on
1, 2, ... with P(D = d) = (1 − γ)^(d−1) γ, so the edge carries the infection with probability (the
transmissibility) T = 1 − E[(1 − β)^D] = β / (β + γ − βγ). On a graph with this degree sequence and
otherwise random wiring a large outbreak is possible iff T > T_c = ⟨k⟩ / (⟨k²⟩ − ⟨k⟩) (bond
percolation, the heterogeneous mean-field threshold). `threshold` is that T_c, and unless `beta`
is given, β is chosen so that T = beta_ratio · T_c exactly: β = Tγ / (1 − T(1 − γ)) (for IC, γ = 1
and β = T). For small β and γ this is the continuous-time rule β/γ = beta_ratio · T_c.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp
import torch

from diffworld.spec import ActionSpace, WorldSpec
from diffworld.worlds.base import check_no_action, generator_state, restore_generator
from diffworld.worlds.graphs import SUFFIXES, SocialGraph, is_graph_file, read_graph, social_graph

#: Graphs by name: three small real social networks and three generated families.
REAL_GRAPHS = {
    "karate": nx.karate_club_graph,  # Zachary's karate club, 34 nodes
    "lesmis": nx.les_miserables_graph,  # co-appearances in Les Misérables, 77 nodes
    "florentine": nx.florentine_families_graph,  # Florentine marriages, 15 nodes
}
GENERATED_GRAPHS = ("ba", "ws", "sbm")
GRAPHS = (*REAL_GRAPHS, *GENERATED_GRAPHS)
MODELS = ("sir", "ic")
S, I, R = 0, 1, 2  # node state codes, also the frame's channel order
MAX_STEPS = 200
DEFAULT_N = 100  # nodes of a generated graph when n is not given
BA_M = 2  # Barabási–Albert: edges from each new node
WS_K, WS_P = 4, 0.1  # Watts–Strogatz: ring neighbours, rewiring probability
SBM_BLOCKS, SBM_DEGREE, SBM_INSIDE = 4, 6.0, 0.8  # blocks, target ⟨k⟩, share of it inside the block
_MIN_N = {"ba": BA_M + 1, "ws": WS_K + 1, "sbm": 24}  # sbm: p_in = 4.8 / (n/4 − 1) <= 1


# --- graphs -----------------------------------------------------------------------------------


def build_graph(name: str, n: int | None = None, seed: int = 0) -> tuple[nx.Graph, tuple[Any, ...]]:
    """(simple undirected unweighted graph on nodes 0..N-1, original label of each node).

    Real graphs ignore `seed` and take no `n`; their nodes are numbered in sorted label order.
    Generated graphs have `n` nodes (default 100) and depend only on `seed`.
    """
    if name not in GRAPHS:
        raise ValueError(
            f"unknown graph {name!r}; expected one of: {', '.join(GRAPHS)}, or a graph file ({', '.join(SUFFIXES)})"
        )
    if name in REAL_GRAPHS:
        if n is not None:
            raise ValueError(f"graph {name!r} has a fixed size, got n={n}; n applies to {', '.join(GENERATED_GRAPHS)}")
        g = REAL_GRAPHS[name]()
    else:
        n = DEFAULT_N if n is None else int(n)
        if n < _MIN_N[name]:
            raise ValueError(f"graph {name!r} needs n >= {_MIN_N[name]}, got n={n}")
        g = _generate(name, n, seed)
    labels = tuple(sorted(g.nodes))
    index = {v: i for i, v in enumerate(labels)}
    simple = nx.Graph()  # drops weights and every other attribute
    simple.add_nodes_from(range(len(labels)))
    simple.add_edges_from((index[u], index[v]) for u, v in g.edges if u != v)
    return simple, labels


def _generate(name: str, n: int, seed: int) -> nx.Graph:
    if name == "ba":
        return nx.barabasi_albert_graph(n, BA_M, seed=seed)
    if name == "ws":
        return nx.watts_strogatz_graph(n, WS_K, WS_P, seed=seed)
    sizes = [n // SBM_BLOCKS + (b < n % SBM_BLOCKS) for b in range(SBM_BLOCKS)]
    p_in = SBM_INSIDE * SBM_DEGREE / (n / SBM_BLOCKS - 1)  # expected neighbours inside: 4.8
    p_out = (1 - SBM_INSIDE) * SBM_DEGREE / (n * (SBM_BLOCKS - 1) / SBM_BLOCKS)  # outside: 1.2
    probs = [[p_in if a == b else p_out for b in range(SBM_BLOCKS)] for a in range(SBM_BLOCKS)]
    return nx.stochastic_block_model(sizes, probs, seed=seed)


def epidemic_threshold(degree: np.ndarray, out_degree: np.ndarray | None = None) -> float:
    """Critical transmissibility T_c = ⟨k⟩ / (⟨k²⟩ − ⟨k⟩) of a degree sequence (inf if no k >= 2).

    Directed (`degree` the in-degrees, `out_degree` the out-degrees): T_c = ⟨k_in⟩ / ⟨k_in k_out⟩,
    since an edge reached on the way in is not one a node can use on the way out."""
    k = np.asarray(degree, dtype=np.float64)
    if out_degree is not None:
        joint = (k * np.asarray(out_degree, dtype=np.float64)).mean()
        return float(k.mean() / joint) if joint > 0 else float("inf")
    excess = (k**2).mean() - k.mean()
    return float(k.mean() / excess) if excess > 0 else float("inf")


def graph_of(source: str | Path | nx.Graph, n: int | None = None, seed: int = 0, directed: bool = False) -> SocialGraph:
    """The cascade world's graph from a built-in name (`build_graph`), a graph file (`read_graph`)
    or a networkx graph (`social_graph`)."""
    if isinstance(source, nx.Graph) or is_graph_file(source):
        if n is not None:
            raise ValueError(f"n applies to the generated graphs ({', '.join(GENERATED_GRAPHS)}), not to a given graph")
        if isinstance(source, nx.Graph):
            if directed and not source.is_directed():
                raise ValueError("directed applies to edge-list files; pass an nx.DiGraph for a directed graph")
            return social_graph(source)
        return social_graph(read_graph(source, directed), str(source))
    if directed:
        raise ValueError(f"directed applies to edge-list files; graph {source!r} is built in and undirected")
    if not isinstance(source, str):
        raise ValueError(f"expected a graph name, a graph file or a networkx graph, found {type(source).__name__}")
    simple, labels = build_graph(source, n, seed)
    return replace(social_graph(simple, source), labels=labels)


def transmissibility(beta: float, gamma: float) -> float:
    """Probability that an infection crosses an edge, T = β / (β + γ − βγ) (0 when β = 0)."""
    return beta / (beta + gamma - beta * gamma) if beta > 0 else 0.0


def beta_for(t: float, gamma: float) -> float:
    """The β whose transmissibility at recovery probability γ is `t`: β = tγ / (1 − t(1 − γ))."""
    return t * gamma / (1.0 - t * (1.0 - gamma))


# --- dynamics ---------------------------------------------------------------------------------


def spread_step(
    adjacency: sp.csr_array,
    states: np.ndarray,
    beta: float | sp.csr_array,
    gamma: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One synchronous step of states [..., N] (codes S=0, I=1, R=2) -> (new states, newly infected).

    `adjacency` [N, N]: row v, column u is 1 where u can infect v. `beta`: one per-try probability
    for every edge, or a matrix of them on the adjacency's entries (a weighted graph).
    Draw order, part of the replay contract: uniforms of shape states.shape for infection, then
    the same for recovery. A batch [B, N] gives B independent epidemics on one graph.
    """
    n = adjacency.shape[0]
    infected = (states == I).reshape(-1, n)  # (B, N)
    u_infect = rng.random(states.shape)
    u_recover = rng.random(states.shape)
    if sp.issparse(beta):  # 1 − Π over infected u of (1 − p_uv), as a sum of logs
        log_escape = sp.csr_array(beta, copy=True)
        log_escape.data = np.log1p(-np.minimum(log_escape.data, 1.0 - 1e-12))
        p_new = -np.expm1((log_escape @ infected.T.astype(np.float64)).T).reshape(states.shape)
    else:
        k = (adjacency @ infected.T.astype(np.int32)).T.reshape(states.shape)  # infected neighbours
        p_new = (1.0 - (1.0 - beta) ** np.arange(k.max(initial=0) + 1))[k]  # 1 − (1 − β)^k: k independent tries
    new = (states == S) & (u_infect < p_new)
    out = states.copy()
    out[(states == I) & (u_recover < gamma)] = R  # only nodes infected before this step recover
    out[new] = I
    return out, new


# --- decoding ---------------------------------------------------------------------------------


def decode(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """frames [..., N, 3] -> (S/I/R fractions [..., 3] by each node's largest channel, valid [...] bool).

    A frame is valid when every node's row is exactly one-hot after thresholding at 0.5.
    """
    codes, valid = node_states(frames)
    fractions = np.stack([(codes == c).mean(-1) for c in (S, I, R)], axis=-1)
    return fractions, valid


def node_states(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """frames [..., N, 3] -> (state code per node [..., N] int8 by largest channel, valid [...] bool)."""
    a = np.asarray(frames)
    if a.ndim < 2 or a.shape[-1] != 3:
        raise ValueError(f"cascade frames must have shape [..., N, 3], got {list(a.shape)}")
    codes = a.argmax(-1).astype(np.int8)
    valid = ((a > 0.5).sum(-1) == 1).all(-1)
    return codes, valid


def extinct(frames: torch.Tensor) -> torch.Tensor:
    """frames [M, N, 3] -> bool [M]: no node is Infected (by its largest channel), so the episode is over.

    The `stop` of a rollout: the world ends an episode there, and nothing changes after it.
    """
    return ~(frames.argmax(-1) == I).any(-1)


# --- the world --------------------------------------------------------------------------------


class Cascade:
    """An epidemic (SIR) or independent cascade (IC) on a graph, from random or chosen patient zeros.

    Args:
        graph: one of karate, lesmis, florentine (real) or ba, ws, sbm (generated); a graph file
            (edge list .csv/.tsv/.txt, .graphml, .gexf: `diffworld.worlds.graphs`); or a networkx
            graph. Edge weights, where given, are each edge's per-try infection probability.
        model: "sir" or "ic" (IC ignores `gamma`: it is SIR with γ = 1).
        beta: per-step, per-edge infection probability; None sets it from `beta_ratio` (a
            weighted graph's weights are its probabilities: neither applies).
        gamma: per-step recovery probability of an infected node, in (0, 1].
        beta_ratio: transmissibility over its epidemic threshold, T / T_c, when `beta` is None.
        seeds: number of patient zeros drawn uniformly at each reset (unless `seed_nodes`).
        n: nodes of a generated graph (default 100).
        max_steps: the episode ends after this many steps, or earlier when nobody is infected.
        graph_seed: seed of a generated graph.
        seed_nodes: fixed patient zeros, used instead of random ones (see `set_seeds`).
        directed: read an edge-list file's edges as source -> target (GraphML, GEXF and networkx
            graphs say themselves).
    """

    state_names: tuple[str, ...] = ("S_frac", "I_frac", "R_frac")
    state_bounds: np.ndarray = np.array([[0.0, 1.0]] * 3)

    def __init__(
        self,
        graph: str | Path | nx.Graph = "lesmis",
        *,
        model: str = "sir",
        beta: float | None = None,
        gamma: float = 0.2,
        beta_ratio: float = 2.0,
        seeds: int = 1,
        n: int | None = None,
        max_steps: int = MAX_STEPS,
        graph_seed: int = 0,
        seed_nodes: Sequence[int] | None = None,
        directed: bool = False,
    ) -> None:
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; expected one of: {', '.join(MODELS)}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        social = graph_of(graph, n, graph_seed, directed)
        self.graph, self.node_names, self.adjacency = social.graph, social.labels, social.adjacency
        self.num_nodes = self.graph.number_of_nodes()
        self.degree = np.asarray(self.adjacency.sum(1)).ravel()  # neighbours that can infect a node
        self.model = model
        self.gamma = 1.0 if model == "ic" else float(gamma)
        out_degree = np.asarray(self.adjacency.sum(0)).ravel() if social.directed else None
        self.threshold = epidemic_threshold(self.degree, out_degree)
        name = graph if isinstance(graph, (str, Path)) else "given"
        if social.probabilities is not None:
            if beta is not None:
                raise ValueError(
                    f"graph {str(name)!r} gives each edge's infection probability as its weight; "
                    "beta applies to graphs without weights"
                )
            beta = float(social.probabilities.data.mean())  # reported; the spread uses each edge's own
        elif beta is None:
            if not beta_ratio > 0:
                raise ValueError(f"beta_ratio must be > 0, got {beta_ratio}")
            target = beta_ratio * self.threshold
            if not target <= 1.0:
                raise ValueError(
                    f"beta_ratio={beta_ratio} asks for transmissibility {target:.3g} > 1 on graph {str(name)!r} "
                    f"(threshold {self.threshold:.3g}); lower beta_ratio or pass beta"
                )
            beta = beta_for(target, self.gamma)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self.beta = float(beta)
        #: The per-try infection probabilities spread_step takes: β, or a weighted graph's matrix.
        self.transmission: float | sp.csr_array = self.beta if social.probabilities is None else social.probabilities
        self.transmissibility = transmissibility(self.beta, self.gamma)  # a weighted graph's: at its mean β
        self.beta_ratio = self.transmissibility / self.threshold  # the effective T / T_c
        if not 1 <= seeds <= self.num_nodes:
            raise ValueError(f"seeds must be in [1, {self.num_nodes}] on graph {str(name)!r}, got {seeds}")
        self.seeds = int(seeds)
        self.max_steps = int(max_steps)
        self.set_seeds(seed_nodes)
        edges = social.edges
        self.spec = WorldSpec(
            name="cascade",
            layout="graph",
            frame_shape=(self.num_nodes, 3),
            value_kind="categorical",
            action=ActionSpace(),
            variables=("S", "I", "R"),
            value_range=(0.0, 1.0),
            edges=edges,
        )
        self.reset()  # always hold a valid state, even before the first explicit reset

    def set_seeds(self, nodes: Sequence[int] | None) -> None:
        """Start every later episode from these patient zeros (None: `seeds` random ones per reset)."""
        if nodes is None:
            self.seed_nodes = None
            return
        chosen = tuple(int(v) for v in nodes)
        if not chosen or len(set(chosen)) != len(chosen) or not all(0 <= v < self.num_nodes for v in chosen):
            raise ValueError(f"seed nodes must be distinct nodes in [0, {self.num_nodes}), got {list(nodes)}")
        self.seed_nodes = chosen

    # --- simulation -------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new epidemic (fresh generator from `seed`) and return its first frame."""
        self.rng = np.random.default_rng(seed)
        self.states = np.zeros(self.num_nodes, dtype=np.int8)
        if self.seed_nodes is None:
            zero = self.rng.choice(self.num_nodes, size=self.seeds, replace=False)
        else:
            zero = np.array(self.seed_nodes)
        self.states[zero] = I
        self.t = 0
        return self.render()

    def step(self, action: Any = None) -> tuple[np.ndarray, float, bool]:
        """Advance one step (no action); return (frame, number newly infected, done)."""
        check_no_action("cascade", action)
        self.states, new = spread_step(self.adjacency, self.states, self.transmission, self.gamma, self.rng)
        self.t += 1
        done = not (self.states == I).any() or self.t >= self.max_steps
        return self.render(), float(new.sum()), done

    def render(self) -> np.ndarray:
        """The current frame: one-hot S/I/R per node, float32 of shape (N, 3)."""
        return np.eye(3, dtype=np.float32)[self.states]

    # --- branching --------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """A copy of the complete state, the generator's included."""
        return {"states": self.states.copy(), "t": self.t, "rng": generator_state(self.rng)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state from `get_state` exactly (replay reproduces the same future)."""
        states = np.asarray(state["states"], dtype=np.int8)
        if states.shape != (self.num_nodes,):
            raise ValueError(f"expected node states of shape ({self.num_nodes},), got {states.shape}")
        self.states = states.copy()
        self.t = int(state["t"])
        self.rng = restore_generator(state["rng"])

    def reseed(self, seed: int) -> None:
        """Replace the generator, so a restored state continues with fresh noise."""
        self.rng = np.random.default_rng(seed)

    # --- decoding ---------------------------------------------------------------------------

    def decode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frames [..., N, 3] -> (S/I/R fractions [..., 3], valid [...] bool: every row one-hot)."""
        a = np.asarray(frames)
        if a.ndim < 2 or a.shape[-2:] != (self.num_nodes, 3):
            raise ValueError(f"cascade frames must have shape [..., {self.num_nodes}, 3], got {list(a.shape)}")
        return decode(a)


#: Given the states at the start of a step, every node's next state is drawn independently of the
#: others' (each infection try and each recovery is its own coin), so the marginal sampler — one
#: network evaluation, then each node drawn from the model's estimate of its own distribution —
#: samples this world exactly when the estimate is right. An ODE sampler with a few steps instead
#: rounds the estimate to its most likely state: a node with a 30% chance of infection is never
#: infected, and the dreamed epidemic stalls.
SAMPLER_DEFAULTS = {"method": "marginal"}
