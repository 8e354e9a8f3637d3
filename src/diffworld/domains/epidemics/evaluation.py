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
from diffworld.domains.epidemics.pictures import graph_heatmap_gif, plot_cascade_curves, plot_hubs
from diffworld.evaluate.forecasts import model_forecast
from diffworld.model.world_model import ModelConfig, WorldModel, read_config, resolve_pretrained
from diffworld.splits import HELD_OUT_SEED_BASE
from diffworld.train import TrainConfig
from diffworld.worlds import make_world, run_episode
from diffworld.worlds.cascade import extinct

#: Nodes listed by name in the report's top spreaders (largest dreamed reach as the first spreader).
TOP_SPREADERS = 10


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

    def __post_init__(self) -> None:
        ModelConfig.preset(self.preset)  # an unknown preset fails here, before any work
        for name in ("episodes", "cases", "horizon", "oracle_runs", "hub_runs", "hub_members", "hub_horizon"):
            check_int(f"cascade demo {name}", getattr(self, name), 1)
        check_int("cascade demo members", self.members, 2)  # fair scores need two
        check_int("cascade demo seed", self.seed, 0, MAX_SEED)


def held_out_cases(
    world: Any, context: int, horizon: int, n_cases: int, max_tries: int = 100_000
) -> dict[str, np.ndarray]:
    """Epidemics of held-out seeds still running after `context` frames: their start, and what followed.

    An epidemic that ends early (nobody infected) stays as it is, so its truth is held from its
    last frame.
    """
    frames, futures, states = [], [], []
    for seed in range(HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + max_tries):
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
    data."""
    world = make_world("cascade", **cfg.world_options)
    rng = np.random.default_rng(cfg.seed)
    context = model.frames - 1
    cases = held_out_cases(world, context, cfg.horizon, cfg.cases)
    truth, last = ev.node_states(cases["truth"]), cases["last"]
    log(
        f"{cfg.cases} held-out epidemics (seeds from {HELD_OUT_SEED_BASE}); "
        f"model: {cfg.members} dreams of {cfg.horizon} steps each"
    )
    no_actions = np.full((cfg.cases, cfg.horizon), -1)
    t0 = time.perf_counter()
    dream = model_forecast(
        model, cases["context"], no_actions, cfg.members, seed=cfg.seed, stop=extinct
    )  # [S, M, H, N, 3]
    fps = cfg.cases * cfg.members * cfg.horizon / (time.perf_counter() - t0)
    traj = {
        "model": ev.node_states(dream),
        "oracle": ev.oracle_trajectories(world, last, cfg.horizon, cfg.oracle_runs, rng),
        "persistence": ev.persistence_trajectories(last, cfg.horizon),
    }
    forecasts = {name: ev.summarize(t, last) for name, t in traj.items()}
    forecasts["mean_field"] = ev.summarize_probabilities(ev.mean_field(world, last, cfg.horizon))
    log(f"hub ranking: {world.num_nodes} seeds × {cfg.hub_runs} Monte-Carlo runs and × {cfg.hub_members} dreams")
    gen = torch.Generator(device=model.device).manual_seed(cfg.seed)
    hub = {
        "truth": ev.expected_final_reach_mc(world, cfg.hub_runs, rng, horizon=cfg.hub_horizon),
        "model": ev.expected_final_reach_model(model, world, cfg.hub_members, cfg.hub_horizon, gen),
        # the true simulator with as many runs as the model has dreams: the best τ at this budget
        "simulator_at_budget": ev.expected_final_reach_mc(world, cfg.hub_members, rng, horizon=cfg.hub_horizon),
        **ev.centrality_baselines(world.graph),
    }
    report = ev.cascade_report(forecasts, truth, last, hub)
    labels = [str(v) for v in world.node_names]
    report["hub"]["nodes"] = labels  # the graph's own label of each node, in node order
    top = np.argsort(-np.asarray(hub["model"]), kind="stable")[:TOP_SPREADERS]
    report["hub"]["top_spreaders"] = [
        {"node": labels[v], "model": float(hub["model"][v]), "truth": float(hub["truth"][v])} for v in top
    ]
    report["rollout_fps_ensemble"] = fps
    taus = model.denoiser.net.diffusion_times()  # [depth, heads] learned heat-kernel times
    report["diffusion_times"] = None if taus is None else taus.detach().cpu().tolist()
    report["cases"] = {"seeds_from": HELD_OUT_SEED_BASE, "cases": cfg.cases, "context": context, "members": cfg.members}
    report["_pictures"] = {"world": world, "cases": cases, "traj": traj, "truth": truth, "forecasts": forecasts}
    return report


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
    "held_out_cases",
]
