"""The epidemic evaluation: forecast how an epidemic spreads on a social network, and rank its hubs.

`diffworld eval CKPT` on a cascade checkpoint (and the cascade demo on its own model) scores the
model on held-out epidemics (seeds from HELD_OUT_SEED_BASE) against the Monte-Carlo oracle,
persistence and the individual-based mean-field baseline:

- node forecasts: each node's probability of being infected at each future step, and of being
  reached by the end (Brier scores);
- curves: the S/I/R fractions with quantile bands (fair CRPS, skill vs oracle);
- hubs: each node's expected final reach as the single seed, ranked against the Monte-Carlo
  truth by Kendall τ, beside degree and eigenvector centrality.

Every forecast starts from the first `frames − 1` moments of an epidemic (patient zero plus
the steps observed after it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld.checks import MAX_SEED, check_int, check_output_dir
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.domains.epidemics import scores as ev
from diffworld.domains.epidemics.frontier import frontier_rollout
from diffworld.domains.epidemics.pictures import graph_heatmap_gif, plot_cascade_curves, plot_hubs
from diffworld.evaluate.forecasts import model_forecast
from diffworld.model.world_model import ModelConfig, WorldModel, read_config, resolve_pretrained
from diffworld.splits import HELD_OUT_SEED_BASE
from diffworld.train import TrainConfig
from diffworld.worlds import make_world, run_episode
from diffworld.worlds.cascade import extinct

#: Nodes listed by name in the report's top spreaders (largest dreamed reach as the first spreader).
TOP_SPREADERS = 10
_CASE_STATES = 100_000_000  # node states (members × steps × nodes × cases) summarised at a time


@dataclass(frozen=True)
class CascadeDemoConfig:
    """Everything the cascade demo does: about half an hour on two CPU cores (17 min of training)."""

    world_options: dict[str, Any] = field(default_factory=lambda: {"graph": "lesmis", "model": "sir"})
    episodes: int = 400
    preset: str = "small"
    train: TrainConfig = TrainConfig(steps=2000, batch_size=8)
    #: Held-out epidemics, one forecast each (from its start).
    cases: int = 64
    members: int = 32
    horizon: int = 16
    #: Monte-Carlo runs of the oracle per case, and of the hub truth per seed node.
    oracle_runs: int = 1000
    hub_runs: int = 1000
    #: Dreams per seed node for the model's hub ranking, and how far they run (77 seeds × 64 × 20
    #: = 98,560 frames on Les Misérables, about half of them after the epidemic ended and not
    #: computed). Few dreams cap τ whatever the model: the true simulator itself ranks the hubs
    #: at τ ≈ 0.58 with 8 runs per seed, 0.77 with 32 and 0.87 with 128 against its 1,000-run
    #: truth, so the report also gives the simulator's τ at the model's budget.
    hub_members: int = 64
    hub_horizon: int = 20
    seed: int = 0
    #: Offset of the held-out epidemics' seeds (`splits.GAME_VALIDATION_OFFSET`: the validation set).
    seed_offset: int = 0
    #: The nodes the hub ranking dreams from: None every node up to `scores.SPARSE_MC_NODES` and,
    #: above, the 3·k of largest degree (k: the top set's size, `scores.top_k`); K the K of largest
    #: degree; 0 no hub ranking.
    hub_nodes: int | None = None
    #: Dream on the spread's frontier (`frontier_rollout`) instead of the whole graph; None: when
    #: the model's graph attention is sparse.
    frontier: bool | None = None

    def __post_init__(self) -> None:
        ModelConfig.preset(self.preset)  # an unknown preset fails here, before any work
        for name in ("episodes", "cases", "horizon", "oracle_runs", "hub_runs", "hub_members", "hub_horizon"):
            check_int(f"cascade demo {name}", getattr(self, name), 1)
        check_int("cascade demo members", self.members, 2)  # fair scores need two
        check_int("cascade demo seed", self.seed, 0, MAX_SEED)
        check_int("cascade demo seed_offset", self.seed_offset, 0, MAX_SEED - HELD_OUT_SEED_BASE)
        if self.hub_nodes is not None:
            check_int("cascade demo hub_nodes", self.hub_nodes, 0)


def held_out_cases(
    world: Any, context: int, horizon: int, n_cases: int, max_tries: int = 100_000, seed_offset: int = 0
) -> dict[str, np.ndarray]:
    """Epidemics of held-out seeds (from `HELD_OUT_SEED_BASE` + `seed_offset`) still running after
    `context` frames: their start, and what followed.

    An epidemic that ends early (nobody infected) stays as it is, so its truth is held from its
    last frame.
    """
    frames, futures, states = [], [], []
    first = HELD_OUT_SEED_BASE + seed_offset
    for seed in range(first, first + max_tries):
        ep = run_episode(world, seed, max_steps=context + horizon, keep_states=True)
        if len(ep) <= context:  # over before the forecast starts: nothing to forecast
            continue
        future = ep.frames[context : context + horizon]
        future = np.concatenate([future, np.repeat(future[-1:], horizon - len(future), axis=0)])
        frames.append(ep.frames[:context])
        futures.append(future)
        states.append(ep.states[context - 1]["states"])  # type: ignore[index]
        if len(frames) == n_cases:
            break
    if len(frames) < n_cases:
        raise ValueError(f"only {len(frames)} of {max_tries} held-out epidemics last the {context} frames a case needs")
    return {"context": np.stack(frames), "truth": np.stack(futures), "last": np.stack(states)}


def evaluate_cascade(model: WorldModel, cfg: CascadeDemoConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Score `model` on held-out epidemics: the report of `diffworld.domains.epidemics.scores`, plus its pictures'
    data.

    Cases are dreamed and simulated a few at a time and kept as their summaries, so memory stays
    bounded on large graphs; a model with sparse graph attention dreams on the spread's frontier
    (`frontier_rollout`) unless `cfg.frontier` says otherwise.
    """
    world = make_world("cascade", **cfg.world_options)
    rng = np.random.default_rng(cfg.seed)
    context = model.frames - 1
    frontier = uses_frontier(model, cfg.frontier)
    cases = held_out_cases(world, context, cfg.horizon, cfg.cases, seed_offset=cfg.seed_offset)
    first_seed = HELD_OUT_SEED_BASE + cfg.seed_offset
    truth, last = ev.node_states(cases["truth"]), cases["last"]
    n = world.num_nodes
    log(
        f"{cfg.cases} held-out epidemics (seeds from {first_seed}); "
        f"model: {cfg.members} dreams of {cfg.horizon} steps each" + (" on the frontier" if frontier else "")
    )
    gen = torch.Generator(device=model.device).manual_seed(cfg.seed)
    forecasts, first, dream_seconds = forecast_cases(
        model, cases["context"], last, cfg.horizon, cfg.members, world, cfg.oracle_runs, rng, gen, frontier, log=log
    )
    fps = cfg.cases * cfg.members * cfg.horizon / dream_seconds
    candidates = hub_candidates(world, cfg.hub_nodes)
    hub = None
    if len(candidates):
        log(
            f"hub ranking: {n} seeds × {cfg.hub_runs} Monte-Carlo runs, "
            f"{len(candidates)} seeds × {cfg.hub_members} dreams"
        )
        gen = torch.Generator(device=model.device).manual_seed(cfg.seed)
        if frontier:
            dreamed = ev.expected_final_reach_frontier(
                model, world, cfg.hub_members, cfg.hub_horizon, gen, nodes=candidates, log=log
            )
        else:
            dreamed = ev.expected_final_reach_model(
                model, world, cfg.hub_members, cfg.hub_horizon, gen, nodes=candidates
            )
        hub = {
            "truth": ev.expected_final_reach_mc(world, cfg.hub_runs, rng, horizon=cfg.hub_horizon),
            "model": dreamed,
            # the true simulator with as many runs as the model has dreams: the best τ at this budget
            "simulator_at_budget": ev.expected_final_reach_mc(world, cfg.hub_members, rng, horizon=cfg.hub_horizon),
            **ev.centrality_baselines(world.graph),
        }
    report = ev.cascade_report(forecasts, truth, last, hub, candidates=candidates if len(candidates) < n else None)
    labels = [str(v) for v in world.node_names]
    if hub is not None:
        report["hub"]["nodes"] = labels  # the graph's own label of each node, in node order
        ranked = np.argsort(-np.nan_to_num(hub["model"], nan=-np.inf), kind="stable")
        top = ranked[np.isfinite(hub["model"][ranked])][:TOP_SPREADERS]  # seeds dreamed from only
        report["hub"]["top_spreaders"] = [
            {"node": labels[v], "model": float(hub["model"][v]), "truth": float(hub["truth"][v])} for v in top
        ]
    report["rollout_fps_ensemble"] = fps
    report["frontier"] = frontier
    taus = model.denoiser.net.diffusion_times()  # [depth, heads] learned heat-kernel times
    report["diffusion_times"] = None if taus is None else taus.detach().cpu().tolist()
    report["cases"] = {"seeds_from": first_seed, "cases": cfg.cases, "context": context, "members": cfg.members}
    report["_pictures"] = {"world": world, "traj": first, "truth": truth[:1], "forecasts": forecasts}
    return report


def forecast_cases(
    model: WorldModel,
    context: np.ndarray,
    last: np.ndarray,
    horizon: int,
    members: int,
    simulator: Any,
    runs: int,
    rng: np.random.Generator,
    generator: torch.Generator,
    frontier: bool,
    names: tuple[str, str] = ("oracle", "mean_field"),
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, ev.CascadeForecast], dict[str, np.ndarray], float]:
    """Every forecaster's summaries of the cases (contexts [S, L, N, 3], last states [S, N]), a few
    cases at a time so memory stays bounded on large graphs.

    The model's `members` dreams (on the frontier if `frontier`), `runs` runs of `simulator` (the
    true world, or a fitted one) and its mean field under `names`, and persistence. Returns the
    summaries, the first case's trajectories [1, M, H, N] by name (for the pictures) and the
    seconds spent dreaming.
    """
    s, n = len(context), last.shape[-1]
    per_chunk = max(1, _CASE_STATES // (max(members, runs) * horizon * n))
    parts: dict[str, list[ev.CascadeForecast]] = {"model": [], names[0]: [], "persistence": [], names[1]: []}
    seconds, first = 0.0, {}
    for lo in range(0, s, per_chunk):
        sl = slice(lo, lo + per_chunk)
        t0 = time.perf_counter()
        if frontier:
            dream = frontier_rollout(model, torch.as_tensor(context[sl]), horizon, members, generator, stop=extinct)
            dream = dream.cpu().numpy()
        else:
            no_actions = np.full((len(context[sl]), horizon), -1)
            dream = model_forecast(model, context[sl], no_actions, members, stop=extinct, generator=generator)
        seconds += time.perf_counter() - t0
        traj = {
            "model": ev.node_states(dream),  # [s, M, H, N]
            names[0]: ev.oracle_trajectories(simulator, last[sl], horizon, runs, rng),
            "persistence": ev.persistence_trajectories(last[sl], horizon),
        }
        for name, t in traj.items():
            parts[name].append(ev.summarize(t, last[sl]))
        parts[names[1]].append(ev.summarize_probabilities(ev.mean_field(simulator, last[sl], horizon)))
        if lo == 0:
            first = {name: t[:1] for name, t in traj.items()}
        if log is not None and per_chunk == 1 and (lo + 1) % 8 == 0:
            log(f"  {lo + 1} of {s} cases forecast")
    return {name: _joined(p) for name, p in parts.items()}, first, seconds


def hub_candidates(world: Any, hub_nodes: int | None) -> np.ndarray:
    """The seeds the hub ranking dreams from, in node order (`CascadeDemoConfig.hub_nodes`)."""
    n = world.num_nodes
    if hub_nodes is None:
        hub_nodes = n if n <= ev.SPARSE_MC_NODES else 3 * ev.top_k(n)
    if hub_nodes >= n:
        return np.arange(n)
    degree = np.asarray(world.adjacency.sum(0)).ravel()  # column u: the nodes u can reach
    return np.sort(np.argsort(-degree, kind="stable")[:hub_nodes])


def uses_frontier(model: WorldModel, frontier: bool | None = None) -> bool:
    """Whether an evaluation dreams on the frontier: `frontier` if given, else when the model's graph
    attention is sparse (a graph too large to dream whole)."""
    if frontier is not None:
        return frontier
    return getattr(model.layout, "attention", None) == "sparse"


def _joined(parts: list[ev.CascadeForecast]) -> ev.CascadeForecast:
    """Summaries of consecutive chunks of cases, as one."""
    return ev.CascadeForecast(
        np.concatenate([p.infected for p in parts]),
        np.concatenate([p.reached for p in parts]),
        np.concatenate([p.curves for p in parts]),
    )


def evaluate_and_draw(
    model: WorldModel, cfg: CascadeDemoConfig, out: Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """`evaluate_cascade`, then its pictures in `out` (spread.gif, curves.png, hubs.png); the report without picture
    data."""
    report = evaluate_cascade(model, cfg, log)
    pics = report.pop("_pictures")
    world = pics["world"]
    graph_heatmap_gif(
        world.graph, pics["truth"][0], pics["forecasts"], out / "spread.gif", case=0, labels=world.node_names
    )
    plot_cascade_curves(pics["traj"], pics["truth"], out / "curves.png", case=0)
    if "hub" in report:
        plot_hubs(report["hub"]["expected_reach"], report["hub"]["kendall_tau"], out / "hubs.png")
    return report


def evaluate_cascade_checkpoint(
    path: str | Path,
    out: str | Path,
    sampler: SamplerConfig | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    **overrides: Any,
) -> dict[str, Any]:
    """Score a trained cascade checkpoint as the demo scores its own model.

    The held-out epidemics, baselines, hub ranking and pictures of `evaluate_and_draw`, on the graph
    and spreading model the checkpoint's data was collected with; `overrides` go to
    `CascadeDemoConfig` (cases, members, horizon, hub_members, seed, …), `sampler` replaces the
    checkpoint's. Writes `out`/metrics.json and the pictures; returns the metrics.
    """
    out = check_output_dir(out, "evaluation output")  # before any computing
    if (out / "metrics.json").exists():
        raise FileExistsError(f"{out / 'metrics.json'} exists; choose another --out or remove it")
    config = read_config(resolve_pretrained(path))
    world, data = config["spec"]["name"], config.get("data") or {}
    if world != "cascade":
        raise ValueError(
            "the epidemic evaluation needs a checkpoint trained on cascade epidemics, "
            f"got one trained on world {world!r}"
        )
    if data.get("store") and not data.get("collect"):
        raise ValueError(
            f"{path}: expected a model trained on epidemics collected from the cascade simulator, found one trained "
            f"on the store {data['store']} (observed cascades?), which has no simulator to score against"
        )
    options = (data.get("collect") or {}).get("world_options") or {}
    cfg = CascadeDemoConfig(world_options=dict(options), **overrides)
    seeds = data.get("train_seeds")
    if seeds and seeds[1] >= HELD_OUT_SEED_BASE:
        raise ValueError(
            f"checkpoint trained on seeds {seeds[0]}..{seeds[1]}, "
            f"which reach the held-out epidemics' seeds from {HELD_OUT_SEED_BASE}"
        )
    frame = list(make_world("cascade", **cfg.world_options).spec.frame_shape)
    if list(config["spec"]["frame_shape"]) != frame:
        raise ValueError(
            f"checkpoint frames {config['spec']['frame_shape']} "
            f"do not fit the cascade world {cfg.world_options} ({frame})"
        )
    model = WorldModel.from_pretrained(path, device=device)
    if sampler is not None:
        model.sampler = sampler
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report = evaluate_and_draw(model, cfg, out, log)
    metrics = {
        "world": "cascade",
        "checkpoint": str(path),
        "sampler": asdict(model.sampler),
        "world_options": cfg.world_options,
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "train_seconds": config.get("train_seconds"),
        **report,
        "total_seconds": time.perf_counter() - t0,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


__all__ = [
    "CascadeDemoConfig",
    "evaluate_and_draw",
    "evaluate_cascade",
    "evaluate_cascade_checkpoint",
    "forecast_cases",
    "held_out_cases",
    "hub_candidates",
    "uses_frontier",
]
