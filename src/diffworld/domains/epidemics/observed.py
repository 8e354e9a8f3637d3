"""Scoring a model of observed cascades, where no simulator exists to branch.

The baselines need only the training cascades: persistence, and an independent-cascade model whose
per-edge probabilities are fitted to them by maximum likelihood (the expectation-maximisation of
Saito, Nakano and Kimura, 2008), both sampled (`FittedCascade` runs the cascade world's own
`spread_step`) and in the individual-based mean field. Cascades are in the cascade world's IC
encoding (`diffworld.data.cascades`): a node is Infected in the step it is reached, then Removed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp
import torch

from diffworld.checks import check_output_dir
from diffworld.data.store import EpisodeStore
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.domains.epidemics import scores as ev
from diffworld.domains.epidemics.evaluation import forecast_cases, uses_frontier
from diffworld.domains.epidemics.pictures import graph_heatmap_gif, plot_cascade_curves
from diffworld.model.world_model import WorldModel, read_config, resolve_pretrained
from diffworld.worlds.cascade import I

NEVER = np.iinfo(np.int64).max // 2  # the reach step of a node a cascade never reaches
FLOOR = 1e-4  # fitted probabilities stay in [FLOOR, 1 − FLOOR]


@dataclass(frozen=True)
class FittedCascade:
    """An independent-cascade model on a graph: what `scores.oracle_trajectories` and
    `scores.mean_field` need of a world."""

    #: [N, N] 0/1, row v, column u: u can reach v.
    adjacency: sp.csr_array
    #: The fitted probability of each edge, on the adjacency's entries.
    transmission: sp.csr_array
    #: Every trial per edge seen in the training cascades (edges never tried keep the mean).
    trials: np.ndarray
    gamma: float = 1.0


def reach_steps(states: np.ndarray) -> np.ndarray:
    """Node state codes [T, N] of one cascade -> [N]: the step each node is Infected first (NEVER if none)."""
    infected = states == I
    return np.where(infected.any(0), infected.argmax(0), NEVER)


def fit_independent_cascade(
    cascades: list[np.ndarray], adjacency: sp.csr_array, iterations: int = 100
) -> FittedCascade:
    """Per-edge probabilities from node state codes [T_i, N] of observed cascades, by EM.

    An edge u -> v is tried when u is reached at step k and v has not been reached by step k; it
    may have succeeded where v is reached at k + 1 (then the credit is shared among every u
    reached at k that can reach v, in proportion to their probabilities), and failed otherwise.
    A node reached with no such parent (a new seed) says nothing about the edges."""
    a = sp.coo_array(adjacency)
    rows, cols = a.row.astype(np.int64), a.col.astype(np.int64)  # edge e: cols[e] -> rows[e]
    trials = np.zeros(len(rows))
    member_edges, member_event = [], []  # candidate parents: (edge, success event) pairs
    events = 0
    for states in cascades:
        k = reach_steps(np.asarray(states))
        ku, kv = k[cols], k[rows]
        tried = (ku < NEVER) & (kv > ku)
        trials += tried
        cand = np.flatnonzero(tried & (kv == ku + 1))
        if len(cand):
            _, event = np.unique(rows[cand], return_inverse=True)  # one success event per reached node
            member_edges.append(cand)
            member_event.append(event + events)
            events += int(event.max()) + 1
    edges = np.concatenate(member_edges) if member_edges else np.zeros(0, np.int64)
    event_of = np.concatenate(member_event) if member_event else np.zeros(0, np.int64)
    tried = trials > 0
    p = np.full(len(rows), 0.1)
    for _ in range(iterations):
        log_miss = np.zeros(events)
        np.add.at(log_miss, event_of, np.log1p(-p[edges]))
        chance = -np.expm1(log_miss)  # P(the reached node was reached by one of its candidates)
        credit = np.zeros(len(rows))
        np.add.at(credit, edges, p[edges] / np.maximum(chance[event_of], 1e-300))
        new = np.where(tried, credit / np.maximum(trials, 1), p)
        new = np.clip(new, FLOOR, 1 - FLOOR)
        if np.abs(new - p).max() < 1e-6:
            p = new
            break
        p = new
    if tried.any():
        p[~tried] = p[tried].mean()  # an edge never tried: the average edge
    fitted = sp.csr_array((p, (rows, cols)), shape=adjacency.shape)
    fitted.sort_indices()
    return FittedCascade(sp.csr_array(adjacency), fitted, trials)


def observed_report(
    model: WorldModel,
    train: list[np.ndarray],
    test: list[np.ndarray],
    adjacency: sp.csr_array,
    horizon: int = 8,
    members: int = 32,
    runs: int = 500,
    seed: int = 0,
    frontier: bool | None = None,
    cases: int | None = None,
) -> dict[str, Any]:
    """Forecast each held-out cascade (one-hot frames [T_i, N, 3], at least the model's context + 1
    frames long) from its first frames, by the model's dreams, the fitted independent cascade (sampled
    and mean field) and persistence; the scores of `scores.score` by forecaster, with a headline of
    node Brier against the fitted model's. The dreams run on the spread's frontier if `frontier`
    (default: for a model with sparse graph attention); `cases` keeps the first so many usable
    cascades (default all)."""
    context = model.frames - 1
    usable = [f for f in test if len(f) > context][:cases]
    if not usable:
        raise ValueError(f"expected held-out cascades longer than the model's {context} context frames, found none")
    fitted = fit_independent_cascade([ev.node_states(f) for f in train], adjacency)
    need = context + horizon  # a cascade that ends early stays as it ended: nobody Infected from then on
    frames = np.stack(
        [np.concatenate([f, np.repeat(_removed(f[-1])[None], max(0, need - len(f)), 0)])[:need] for f in usable]
    )
    truth, last = ev.node_states(frames[:, context:]), ev.node_states(frames[:, context - 1])
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    forecasts, first, _ = forecast_cases(
        model, frames[:, :context], last, horizon, members, fitted, runs, rng, gen,
        uses_frontier(model, frontier), names=("fitted_ic", "fitted_mean_field"),
    )  # fmt: skip
    scores = {name: ev.score(fc, truth, last) for name, fc in forecasts.items()}
    brier = {name: s["node_brier_mean"] for name, s in scores.items()}
    ratio = brier["model"] / brier["fitted_ic"] if brier["fitted_ic"] > 0 else float("nan")
    return {
        "headline": {
            "node_brier": brier,
            "node_brier_ratio_to_fitted_ic": ratio,
            "beats_fitted_ic": bool(brier["model"] < brier["fitted_ic"]),
        },
        "scores": scores,
        "cases": {"cascades": len(frames), "context": context, "horizon": horizon, "members": members},
        "fitted_ic": {"edges_tried": int((fitted.trials > 0).sum()), "edges": len(fitted.trials),
                      "mean_probability": float(fitted.transmission.data.mean())},
        "_pictures": {"traj": first, "truth": truth[:1], "forecasts": forecasts},
    }  # fmt: skip


def _removed(frame: np.ndarray) -> np.ndarray:
    """The one-hot frame after `frame` [N, 3] with no further reach: Infected nodes Removed."""
    states = ev.node_states(frame[None])[0]
    return np.eye(3, dtype=frame.dtype)[np.where(states == I, 2, states)]


def trained_on_observed(checkpoint: str | Path) -> bool:
    """Whether the checkpoint's model trained on a store that was not collected from a simulator."""
    data = read_config(resolve_pretrained(checkpoint)).get("data") or {}
    return bool(data.get("store")) and not data.get("collect")


def evaluate_observed_checkpoint(
    checkpoint: str | Path,
    held_out: str | Path | None,
    out: str | Path,
    sampler: SamplerConfig | None = None,
    device: str = "cpu",
    seed: int = 0,
    horizon: int = 8,
    members: int = 32,
    cases: int | None = None,
) -> dict[str, Any]:
    """`observed_report` of a checkpoint trained on observed cascades, on the held-out cascades of
    the store `held_out`, with the baselines fitted to the checkpoint's own training store; writes
    `out`/metrics.json, spread.gif and curves.png and returns the metrics."""
    out = check_output_dir(out, "evaluation output")
    config = read_config(resolve_pretrained(checkpoint))
    data = config.get("data") or {}
    if not trained_on_observed(checkpoint):
        raise ValueError(
            f"--data scores a model trained on observed cascades; {checkpoint} was trained on simulated ones"
        )
    if held_out is None:
        raise ValueError(f"{checkpoint} was trained on observed cascades: give the store of held-out ones with --data")
    if Path(held_out).resolve() == Path(data["store"]).resolve():
        raise ValueError(f"--data {held_out} is the store the model trained on; give one of held-out cascades")
    train_store, test_store = EpisodeStore.open(data["store"]), EpisodeStore.open(held_out)
    if test_store.spec.edges != train_store.spec.edges or test_store.spec.frame_shape != train_store.spec.frame_shape:
        raise ValueError(f"--data {held_out}: expected cascades on the graph the model trained on, found another graph")
    t0 = time.perf_counter()
    model = WorldModel.from_pretrained(checkpoint, device=device)
    if sampler is not None:
        model.sampler = sampler
    adjacency = _adjacency(train_store)
    train = [e.frames for e in train_store.episodes()]
    test = [e.frames for e in test_store.episodes()]
    report = observed_report(model, train, test, adjacency, horizon=horizon, members=members, seed=seed, cases=cases)
    pictures = report.pop("_pictures")
    report["data"] = {"train": str(data["store"]), "held_out": str(held_out)}
    report["total_seconds"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1))
    graph = nx.from_scipy_sparse_array(adjacency)
    labels = train_store.meta.get("nodes")
    graph_heatmap_gif(graph, pictures["truth"][0], pictures["forecasts"], out / "spread.gif", labels=labels)
    plot_cascade_curves(pictures["traj"], pictures["truth"], out / "curves.png", case=0)
    return report


def _adjacency(store: EpisodeStore) -> sp.csr_array:
    """Row v, column u: u can reach v, from the store's graph (its edges both ways: the spec keeps pairs)."""
    n = store.spec.frame_shape[0]
    pairs = np.array(store.spec.edges, dtype=np.int64).reshape(-1, 2)
    rows, cols = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
    a = sp.csr_array((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(n, n))
    a.sort_indices()
    return a
