"""Domain evaluation of the `cascade` world: who gets infected, how big the epidemic gets, who is a hub.

Every forecaster is reduced to the same three summaries (`CascadeForecast`) and scored by the same
code against the true future of each held-out case:

- per node and step, P(node is Infected) — scored by the Brier score per horizon;
- per node, P(node is reached, I or R, by the end of the horizon) — one Brier score;
- per member and step, the S/I/R fractions (the epidemic curve) — fair CRPS per horizon.

Forecasters: the world model (its dreams decoded to node states), the oracle (Monte-Carlo of the
true simulator from each case's state, vectorised over runs with the world's own `spread_step`),
persistence (the last context state held) and the individual-based mean-field approximation.

Hub ranking: each node's expected final reach as the single seed, by Monte-Carlo of the simulator
(the truth) and by the model's dreams, compared by Kendall τ and by the overlap of the top
spreaders beside degree and eigenvector centrality. On large graphs the Monte-Carlo follows each
run's infected nodes only (`expected_final_reach_mc` with `sparse`) and the model dreams on the
spread's frontier (`expected_final_reach_frontier`).

Shapes: S cases, M members (runs), H horizons, N nodes; node states are codes 0 S, 1 I, 2 R.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp
import scipy.stats
import torch

from diffworld.domains.epidemics.frontier import frontier_rollout
from diffworld.evaluate.metrics import crps, skill_vs_reference
from diffworld.model.world_model import WorldModel
from diffworld.rollout import rollout
from diffworld.worlds import cascade as cascade_world
from diffworld.worlds.cascade import I, R, S, extinct, spread_step

#: The issue's bar: the model's node Brier score at most this multiple of the oracle's.
BRIER_BAR = 1.25
_ELEMENTS = 4_000_000  # node states per Monte-Carlo batch (the step draws two float64 arrays of this size)
_SPARSE_ELEMENTS = 50_000_000  # reached flags (bool) per batch of the sparse Monte-Carlo
#: Above this many nodes the hub truth's Monte-Carlo follows infected nodes instead of every node.
SPARSE_MC_NODES = 1000
#: The hub ranking's top set: the k nodes of largest expected reach, k = min(TOP_K, N // 10).
TOP_K = 100


# --- states and summaries -----------------------------------------------------------------------


def node_states(frames: np.ndarray) -> np.ndarray:
    """Frames [..., N, 3] (one-hot or soft) -> node state codes [..., N] int8 by the largest channel."""
    return cascade_world.node_states(frames)[0]


def infection_probability(traj: np.ndarray) -> np.ndarray:
    """Trajectories [S, M, H, N] -> P(node is I at step h) [S, H, N], the member mean."""
    return (_states(traj, 4, "traj") == I).mean(axis=1)


def reach_probability(traj: np.ndarray, last: np.ndarray | None = None) -> np.ndarray:
    """Trajectories [S, M, H, N] -> P(node ever I or R by the end of the horizon) [S, N].

    A node counts as reached if it is not S at the last context frame `last` [S, N] or at any
    dreamed step: the true dynamics never leave R, but a model's dreams might, and a node it once
    showed as infected was reached in that dream.
    """
    traj = _states(traj, 4, "traj")
    reached = (traj != S).any(axis=2)  # [S, M, N]
    if last is not None:
        reached |= _states(last, 2, "last")[:, None] != S
    return reached.mean(axis=1)


def curves(traj: np.ndarray) -> np.ndarray:
    """Trajectories [..., H, N] -> S/I/R fractions [..., H, 3] (the epidemic curve per member)."""
    traj = np.asarray(traj)
    return np.stack([(traj == c).mean(-1) for c in (S, I, R)], axis=-1)


def curve_quantiles(curve: np.ndarray, qs: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)) -> np.ndarray:
    """Curves [S, M, H, 3] -> quantiles over members [Q, S, H, 3] (fan charts)."""
    return np.quantile(np.asarray(curve, np.float64), qs, axis=1)


@dataclass
class CascadeForecast:
    """What every forecaster is scored on, whether it gives samples or probabilities."""

    infected: np.ndarray  # [S, H, N] P(node is I at step h)
    reached: np.ndarray  # [S, N] P(node is I or R by the end of the horizon)
    curves: np.ndarray  # [S, M, H, 3] S/I/R fractions per member (M = 1: a point forecast)


def summarize(traj: np.ndarray, last: np.ndarray | None = None) -> CascadeForecast:
    """An ensemble of trajectories [S, M, H, N] (model, oracle, persistence) -> its summaries."""
    return CascadeForecast(infection_probability(traj), reach_probability(traj, last), curves(traj))


def summarize_probabilities(prob: np.ndarray) -> CascadeForecast:
    """Marginals [S, H, N, 3] (mean-field) -> summaries; the curve is the expected fractions (M = 1)."""
    prob = np.asarray(prob, np.float64)
    if prob.ndim != 4 or prob.shape[-1] != 3:
        raise ValueError(f"prob: expected shape [S, H, N, 3], got {list(prob.shape)}")
    return CascadeForecast(prob[..., I], 1.0 - prob[:, -1, :, S], prob.mean(axis=2)[:, None])


# --- scores -----------------------------------------------------------------------------------


def node_brier(prob: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Brier score per horizon [H] of P(infected) [S, H, N] against the truth [S, H, N] bool."""
    prob, truth = np.asarray(prob, np.float64), np.asarray(truth, bool)
    if prob.shape != truth.shape or prob.ndim != 3:
        raise ValueError(f"prob and truth must both be [S, H, N], got {list(prob.shape)} and {list(truth.shape)}")
    return ((prob - truth) ** 2).mean(axis=(0, 2))


def reach_brier(prob: np.ndarray, truth: np.ndarray) -> float:
    """Brier score of P(reached) [S, N] against the truth [S, N] bool (mean over cases and nodes)."""
    prob, truth = np.asarray(prob, np.float64), np.asarray(truth, bool)
    if prob.shape != truth.shape or prob.ndim != 2:
        raise ValueError(f"prob and truth must both be [S, N], got {list(prob.shape)} and {list(truth.shape)}")
    return float(((prob - truth) ** 2).mean())


def curve_crps(curve: np.ndarray, truth_curve: np.ndarray, state: int = I) -> np.ndarray:
    """Fair CRPS per horizon [H] of one state's fraction: curves [S, M, H, 3] vs the truth [S, H, 3].

    With one member (a point forecast: persistence, mean-field) this is the absolute error.
    """
    curve, truth_curve = np.asarray(curve), np.asarray(truth_curve)
    if curve.ndim != 4 or truth_curve.shape != curve.shape[:1] + curve.shape[2:]:
        raise ValueError(
            f"expected curves [S, M, H, 3] and truth [S, H, 3], got {list(curve.shape)} and {list(truth_curve.shape)}"
        )
    return crps(curve[..., state], truth_curve[..., state])


def score(fc: CascadeForecast, truth: np.ndarray, last: np.ndarray) -> dict[str, Any]:
    """Every cascade score of one forecaster against the true future [S, H, N] (codes), JSON-ready."""
    truth = _states(truth, 3, "truth")
    truth_curve = curves(truth)  # [S, H, 3]
    brier = node_brier(fc.infected, truth == I)
    # The peak of the infected curve within the horizon: its size (a fraction of the nodes) and its step.
    dreamed, true = np.asarray(fc.curves, np.float64)[..., I], truth_curve[..., I]  # [S, M, H], [S, H]
    return {
        "node_brier": brier.tolist(),
        "node_brier_mean": float(brier.mean()),
        "reach_brier": reach_brier(fc.reached, reach_probability(truth[:, None], last) > 0.5),
        "infected_crps": curve_crps(fc.curves, truth_curve, I).tolist(),
        "recovered_crps": curve_crps(fc.curves, truth_curve, R).tolist(),
        # the reached fraction (I or R) is 1 − the S fraction, and CRPS is unchanged by that map
        "reach_crps": curve_crps(fc.curves, truth_curve, S).tolist(),
        "peak_size_crps": float(crps(dreamed.max(-1)[..., None], true.max(-1)[:, None])[0]),
        "peak_step_crps": float(crps(dreamed.argmax(-1)[..., None] + 1.0, true.argmax(-1)[:, None] + 1.0)[0]),
    }


# --- baselines --------------------------------------------------------------------------------


def oracle_trajectories(
    world: Any, states: np.ndarray, horizon: int, runs: int, rng: np.random.Generator
) -> np.ndarray:
    """[S, runs, H, N]: the true simulator run `runs` times from each case's node states [S, N].

    All S × runs epidemics advance together through the world's own `spread_step` (same β, γ,
    model and update order as `world.step`). `world` needs `adjacency`, `beta` and `gamma`.
    """
    states = _states(states, 2, "states")
    _check_nodes(world, states)
    if horizon < 1 or runs < 1:
        raise ValueError(f"need horizon and runs >= 1, got {horizon} and {runs}")
    s, n = states.shape
    out = np.empty((s, runs, horizon, n), dtype=np.int8)
    per_chunk = max(1, _ELEMENTS // (runs * n))
    for lo in range(0, s, per_chunk):
        x = np.repeat(states[lo : lo + per_chunk, None], runs, axis=1)  # [s', runs, N]
        for h in range(horizon):
            x, _ = spread_step(world.adjacency, x, world.transmission, world.gamma, rng)
            out[lo : lo + per_chunk, :, h] = x
    return out


def persistence_trajectories(last: np.ndarray, horizon: int) -> np.ndarray:
    """[S, 1, H, N]: the last context states [S, N] held."""
    last = _states(last, 2, "last")
    return np.repeat(last[:, None, None], horizon, axis=2)


def mean_field(world: Any, states: np.ndarray, horizon: int) -> np.ndarray:
    """[S, H, N, 3]: individual-based (quenched) mean-field marginals p_S, p_I, p_R from node states [S, N].

    Each node's state is assumed independent of its neighbours', so one step of `spread_step`
    (infection from the states at the start of the step, then recovery of the nodes infected at
    its start with probability γ; IC: γ = 1) becomes
        escape_i = Π_j (1 − β_ij A_ij p_I_j)     (no infected neighbour transmits; β_ij = β unweighted)
        p_S' = p_S escape,  p_I' = p_S (1 − escape) + (1 − γ) p_I,  p_R' = p_R + γ p_I.
    Exact while every node's neighbours are independent of it (e.g. IC from the hub of a star, or
    the first arrival on a tree); otherwise biased upward by echoes: an infected neighbour is
    counted as a threat to the very node that infected it (see DMP, Lokhov et al. 2015, for the
    message-passing fix that is exact on trees).
    """
    states = _states(states, 2, "states")
    _check_nodes(world, states)
    edges = sp.coo_array(world.adjacency)  # row v, column j: j can infect v
    beta = world.transmission
    p_edge = beta.tocoo().data if sp.issparse(beta) else np.full(edges.nnz, beta)  # same entries, same order
    # Sums a value per edge into its row v.
    into = sp.csr_array((np.ones(edges.nnz), (edges.row, np.arange(edges.nnz))), shape=(edges.shape[0], edges.nnz))
    p = np.eye(3)[states]  # [S, N, 3]
    out = np.empty((len(states), horizon, states.shape[1], 3))
    for h in range(horizon):
        p_s, p_i, p_r = p[..., S], p[..., I], p[..., R]  # [S, N]
        log_safe = np.log(np.maximum(1.0 - p_edge * p_i[:, edges.col], 1e-300))  # [S, E] log(1 − β_vj p_I_j)
        escape = np.exp((into @ log_safe.T).T)  # [S, N] Π_j over the nodes that can infect v
        p = np.stack([p_s * escape, p_s * (1.0 - escape) + (1.0 - world.gamma) * p_i, p_r + world.gamma * p_i], axis=-1)
        out[:, h] = p
    return out


# --- hub ranking ------------------------------------------------------------------------------


def seed_frames(num_nodes: int) -> np.ndarray:
    """[N, N, 3] one-hot frames: frame v has node v Infected and every other node Susceptible."""
    states = np.full((num_nodes, num_nodes), S, dtype=np.int8)
    np.fill_diagonal(states, I)
    return np.eye(3, dtype=np.float32)[states]


def expected_final_reach_mc(
    world: Any, runs: int, rng: np.random.Generator, horizon: int | None = None, sparse: bool | None = None
) -> np.ndarray:
    """[N]: each node's expected number of reached nodes (I or R, itself included) as the single seed.

    Monte-Carlo of the true simulator, `runs` epidemics per seed advanced together. Runs until no
    node is infected (at most `world.max_steps` steps), or exactly `horizon` steps if given — pass
    the model's horizon for a like-for-like comparison when epidemics outlast it. `sparse` (default:
    above `SPARSE_MC_NODES` nodes) follows each run's infected nodes along their edges instead of
    stepping every node (`_reach_mc_sparse`): the same law, a cost that grows with the spread.
    """
    n = world.adjacency.shape[0]
    steps = int(world.max_steps) if horizon is None else int(horizon)
    if runs < 1 or steps < 1:
        raise ValueError(f"need runs and horizon >= 1, got {runs} and {steps}")
    if n > SPARSE_MC_NODES if sparse is None else sparse:
        return _reach_mc_sparse(world, runs, steps, rng)
    out = np.empty(n)
    per_chunk = max(1, _ELEMENTS // (runs * n))
    for lo in range(0, n, per_chunk):
        seeds = np.arange(lo, min(n, lo + per_chunk))
        x = np.full((len(seeds), runs, n), S, dtype=np.int8)  # [seeds, runs, N]
        x[np.arange(len(seeds)), :, seeds] = I
        for _ in range(steps):
            if not (x == I).any():
                break  # every epidemic is over; more steps change nothing (and draw nothing needed)
            x, _ = spread_step(world.adjacency, x, world.transmission, world.gamma, rng)
        out[seeds] = (x != S).sum(-1).mean(-1)
    return out


def _reach_mc_sparse(world: Any, runs: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """`expected_final_reach_mc` by following infected nodes: each step every (run, infected node)
    tries each of its out-edges with the edge's probability, a susceptible node tried successfully
    becomes infected, and the nodes infected at the step's start recover with probability γ — the
    law of `spread_step` (whose 1 − Π(1 − β) is the chance that one of the independent tries
    succeeds), drawn edge by edge."""
    n = world.adjacency.shape[0]
    beta = world.transmission
    # out-edges of u: column u of the adjacency (row v, column u: u can infect v)
    out_edges = sp.csr_array((beta if sp.issparse(beta) else world.adjacency).T)
    out_edges.sort_indices()
    indptr, targets = out_edges.indptr, out_edges.indices
    prob = out_edges.data.astype(np.float64) if sp.issparse(beta) else None
    degree = np.diff(indptr)
    out = np.empty(n)
    per_chunk = max(1, _SPARSE_ELEMENTS // (runs * n))
    for lo in range(0, n, per_chunk):
        seeds = np.arange(lo, min(n, lo + per_chunk))
        epidemics = len(seeds) * runs  # epidemic e: seed e // runs
        reached = np.zeros((epidemics, n), dtype=bool)
        ep = np.arange(epidemics)  # the (epidemic, node) pairs now infected
        node = np.repeat(seeds, runs)
        reached[ep, node] = True
        for _ in range(steps):
            if len(ep) == 0:
                break
            tries = degree[node]
            start = np.repeat(indptr[node] - np.cumsum(tries) + tries, tries) + np.arange(tries.sum())
            p = prob[start] if prob is not None else float(beta)
            hit = rng.random(len(start)) < p
            e_new, v_new = np.repeat(ep, tries)[hit], targets[start][hit]
            fresh = ~reached[e_new, v_new]
            key = np.unique(e_new[fresh] * n + v_new[fresh])  # a node tried by several neighbours once
            e_new, v_new = key // n, key % n
            reached[e_new, v_new] = True
            stays = rng.random(len(ep)) >= world.gamma  # IC: γ = 1, nobody stays infected
            ep, node = np.concatenate([ep[stays], e_new]), np.concatenate([node[stays], v_new])
        out[seeds] = reached.sum(1).reshape(len(seeds), runs).mean(1)
    return out


def expected_final_reach_model(
    model: WorldModel,
    world: Any,
    members: int,
    horizon: int,
    generator: torch.Generator | None = None,
    context_frames: int | None = None,
    batch: int = 512,
    nodes: np.ndarray | None = None,
) -> np.ndarray:
    """[N]: each node's expected number of reached nodes as the single seed, from the model's dreams
    (for the seeds `nodes` only if given, the others NaN).

    The context is the seed frame repeated `context_frames` times (default: the model's full
    context, `model.frames − 1`). The model never saw a context shorter than its training windows
    give it, so the seed frame is repeated rather than given alone; the repeat reads as "the seed
    has been infected for a few steps without transmitting", a possible SIR past (impossible
    under IC, where the seed recovers after one step) — pass `context_frames=1` to give it alone.
    A node counts as reached when it is I or R at the last dreamed step. A dream ends, as the
    world does, when no node is infected (`extinct`), and holds that frame.
    """
    n = world.adjacency.shape[0]
    length = model.frames - 1 if context_frames is None else int(context_frames)
    if length < 1 or members < 1 or horizon < 1:
        raise ValueError(f"need context_frames, members and horizon >= 1, got {length}, {members}, {horizon}")
    seeds = np.arange(n) if nodes is None else np.asarray(nodes)
    ctx = np.repeat(seed_frames(n)[seeds, None], length, axis=1)  # [seeds, L, N, 3]
    per_chunk = max(1, batch // members)
    out = np.full(n, np.nan)
    for lo in range(0, len(seeds), per_chunk):
        chunk = torch.as_tensor(ctx[lo : lo + per_chunk])  # [n', L, N, 3]
        dream = rollout(
            model, chunk, None, horizon=horizon, n_samples=members, generator=generator, stop=extinct
        )  # [n', M, H, N, 3]
        final = node_states(dream[:, :, -1].float().cpu().numpy())  # [n', M, N]
        out[seeds[lo : lo + per_chunk]] = (final != S).sum(-1).mean(-1)
    return out


def expected_final_reach_frontier(
    model: WorldModel,
    world: Any,
    members: int,
    horizon: int,
    generator: torch.Generator | None = None,
    nodes: np.ndarray | None = None,
    log: Any = None,
) -> np.ndarray:
    """[N]: `expected_final_reach_model` with each seed's dreams computed on the spread's frontier
    (`frontier_rollout`): the cost of a seed grows with its dreamed epidemic, not with the graph.

    The same context (the seed frame repeated for the model's context) and the same reached count at
    the last dreamed step; one seed at a time, for the seeds `nodes` (default all; the others NaN).
    `log(str)` if given hears of the progress every tenth of the seeds.
    """
    n = world.adjacency.shape[0]
    length = model.frames - 1
    if members < 1 or horizon < 1:
        raise ValueError(f"need members and horizon >= 1, got {members} and {horizon}")
    seeds = np.arange(n) if nodes is None else np.asarray(nodes)
    out = np.full(n, np.nan)
    ctx = torch.zeros((1, length, n, 3))
    ctx[..., S] = 1.0
    for i, v in enumerate(seeds):
        ctx[0, :, v, S], ctx[0, :, v, I] = 0.0, 1.0  # node v infected, every other node susceptible
        dream = frontier_rollout(model, ctx, horizon, members, generator, stop=extinct)  # [1, M, H, N, 3]
        ctx[0, :, v, S], ctx[0, :, v, I] = 1.0, 0.0
        out[v] = (node_states(dream[0, :, -1].cpu().numpy()) != S).sum(-1).mean()
        if log is not None and (i + 1) % max(1, len(seeds) // 10) == 0:
            log(f"  dreamed reach of {i + 1} of {len(seeds)} seeds")
    return out


def hub_ranking_scores(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Kendall τ (τ-b, ties handled) between a node score [N] and the true expected reach [N]."""
    estimate, truth = np.asarray(estimate, np.float64), np.asarray(truth, np.float64)
    if estimate.shape != truth.shape or estimate.ndim != 1:
        raise ValueError(f"estimate and truth must both be [N], got {list(estimate.shape)} and {list(truth.shape)}")
    return float(scipy.stats.kendalltau(estimate, truth).statistic)


def top_k(num_nodes: int) -> int:
    """The size of the hub ranking's top set on a graph of `num_nodes` nodes: min(TOP_K, N // 10), at least 1."""
    return max(1, min(TOP_K, num_nodes // 10))


def top_overlap(estimate: np.ndarray, truth: np.ndarray, k: int) -> float:
    """The share of the `k` nodes of largest `truth` [N] found among the `k` of largest `estimate` [N].

    Ties at the k-th place are broken by node order (stable sort), the same for every estimate.
    """
    estimate, truth = np.asarray(estimate, np.float64), np.asarray(truth, np.float64)
    if estimate.shape != truth.shape or estimate.ndim != 1:
        raise ValueError(f"estimate and truth must both be [N], got {list(estimate.shape)} and {list(truth.shape)}")
    if not 1 <= k <= len(truth):
        raise ValueError(f"top set: expected 1 <= k <= {len(truth)}, found {k}")
    best = np.argsort(-truth, kind="stable")[:k]
    guess = np.argsort(-estimate, kind="stable")[:k]
    return float(len(np.intersect1d(best, guess)) / k)


def centrality_baselines(graph: nx.Graph) -> dict[str, np.ndarray]:
    """{"degree": [N], "eigenvector": [N]} centralities of nodes 0..N−1, the classic hub guesses
    (of a directed graph: out-degree and the eigenvector centrality of spreading along out-edges).

    Eigenvector centrality is networkx's on a connected graph; on a disconnected one (networkx
    refuses it) the leading eigenvector of the whole adjacency, which gives nodes outside the
    dominant component ~0.
    """
    nodes = range(graph.number_of_nodes())
    if graph.is_directed():
        degree = nx.out_degree_centrality(graph)
        values, vectors = np.linalg.eig(nx.to_numpy_array(graph, nodelist=nodes, weight=None))  # A[u, v]: u -> v
        eigenvector = np.abs(vectors[:, np.argmax(values.real)].real)
    elif nx.is_connected(graph):
        degree = nx.degree_centrality(graph)
        eig = nx.eigenvector_centrality_numpy(graph)
        eigenvector = np.array([eig[v] for v in nodes])
    else:
        degree = nx.degree_centrality(graph)
        _, vectors = np.linalg.eigh(nx.to_numpy_array(graph, nodelist=nodes))
        eigenvector = np.abs(vectors[:, -1])
    return {"degree": np.array([degree[v] for v in nodes]), "eigenvector": eigenvector}


# --- report -----------------------------------------------------------------------------------


def cascade_report(
    forecasts: dict[str, CascadeForecast],
    truth: np.ndarray,
    last: np.ndarray,
    hub: dict[str, np.ndarray] | None = None,
    candidates: np.ndarray | None = None,
) -> dict[str, Any]:
    """JSON-ready cascade scores of every forecaster, with a `headline` section.

    Args:
        forecasts: summaries by name; "model", "oracle" and "persistence" are required (others,
            e.g. "mean_field", are scored alongside).
        truth: [S, H, N] true node states after each case's last context frame.
        last: [S, N] node states at the last context frame.
        hub: [N] node scores by name; "truth" (the Monte-Carlo expected reach) is the reference
            every other one ("model", "degree", "eigenvector", ...) is ranked against.
        candidates: the nodes the model's hub score covers when not all (its others NaN): Kendall
            τ ranks every score on them alone; the top sets take the model's from them and every
            other score's from all nodes.
    """
    missing = {"model", "oracle", "persistence"} - set(forecasts)
    if missing:
        raise ValueError(f"forecasts must include model, oracle and persistence; missing {sorted(missing)}")
    scores = {name: score(fc, truth, last) for name, fc in forecasts.items()}
    m, o, p = scores["model"], scores["oracle"], scores["persistence"]
    ratio = m["node_brier_mean"] / o["node_brier_mean"] if o["node_brier_mean"] > 0 else float("nan")
    skill = skill_vs_reference(np.array(m["infected_crps"]), np.array(p["infected_crps"]), np.array(o["infected_crps"]))
    # The all-node Brier is dominated by nodes every forecaster gets right (already recovered, or
    # far from the infection): also score only the contested ones, where the oracle is unsure.
    truth_i = _states(truth, 3, "truth") == I
    contested = (forecasts["oracle"].infected > 0.01) & (forecasts["oracle"].infected < 0.99)
    contested_brier = {
        name: float(((np.asarray(fc.infected, np.float64) - truth_i) ** 2)[contested].mean())
        if contested.any()
        else float("nan")
        for name, fc in forecasts.items()
    }
    headline: dict[str, Any] = {
        "node_brier_model": m["node_brier_mean"],
        "node_brier_oracle": o["node_brier_mean"],
        "node_brier_persistence": p["node_brier_mean"],
        "node_brier_ratio": ratio,
        "node_brier_contested": contested_brier,
        "node_brier_contested_share": float(contested.mean()),
        "node_brier_bar": BRIER_BAR,
        "node_brier_passes": bool(ratio <= BRIER_BAR),
        # (CRPS_persistence − CRPS_model) / (CRPS_persistence − CRPS_oracle) per horizon
        "infected_skill_vs_oracle": skill.tolist(),
        "infected_skill_vs_oracle_mean": float(np.nanmean(skill)) if np.isfinite(skill).any() else float("nan"),
        # fair CRPS of the reached fraction, mean over horizons: how far the spread got
        "reach_crps": {name: float(np.mean(sc["reach_crps"])) for name, sc in scores.items()},
    }
    horizons = list(range(1, np.shape(truth)[1] + 1))
    report: dict[str, Any] = {"horizons": horizons, "headline": headline, "scores": scores}
    if hub is not None:
        if "truth" not in hub:
            raise ValueError(f"hub needs the Monte-Carlo reference under 'truth', got keys {sorted(hub)}")
        on = slice(None) if candidates is None else np.asarray(candidates)
        scored = {name: np.asarray(v, np.float64) for name, v in hub.items() if name != "truth"}
        truth_reach = np.asarray(hub["truth"], np.float64)
        taus = {name: hub_ranking_scores(v[on], truth_reach[on]) for name, v in scored.items()}
        k = top_k(len(truth_reach))
        overlap = {name: top_overlap(np.nan_to_num(v, nan=-np.inf), truth_reach, k) for name, v in scored.items()}
        headline["hub_kendall_tau"] = taus
        headline["hub_top_overlap"] = overlap
        headline["hub_top_k"] = k
        headline["hub_seeds_dreamed"] = len(truth_reach) if candidates is None else len(candidates)
        reach = {
            name: [None if np.isnan(x) else x for x in np.asarray(v, np.float64).tolist()] for name, v in hub.items()
        }
        report["hub"] = {"kendall_tau": taus, "top_overlap": overlap, "top_k": k, "expected_reach": reach}
    return report


# --- helpers ----------------------------------------------------------------------------------


def _states(x: np.ndarray, ndim: int, what: str) -> np.ndarray:
    """Node state codes with `ndim` axes, validated (0 S, 1 I, 2 R)."""
    a = np.asarray(x)
    if a.ndim != ndim:
        raise ValueError(f"{what}: expected node state codes with {ndim} axes, got shape {list(a.shape)}")
    if a.size and (a.min() < S or a.max() > R or not np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{what}: expected integer codes 0 (S), 1 (I), 2 (R); decode frames with node_states first")
    return a.astype(np.int8, copy=False)


def _check_nodes(world: Any, states: np.ndarray) -> None:
    n = world.adjacency.shape[0]
    if states.shape[-1] != n:
        raise ValueError(f"states: expected {n} nodes (the world's graph), got {states.shape[-1]}")
