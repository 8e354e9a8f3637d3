"""The cascade demo: learn how an epidemic spreads on a social network, then forecast and rank hubs.

`diffworld demo --world cascade --out DIR` collects epidemics on a graph (Les Misérables by
default), trains a graph world model on them, and scores it on held-out epidemics against the
Monte-Carlo oracle, persistence and the individual-based mean-field baseline:

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

from diffworld.checks import MAX_SEED, check_int
from diffworld.evaluate import cascade as ev
from diffworld.evaluate.forecasts import model_forecast
from diffworld.evaluate.pictures import graph_heatmap_gif, plot_cascade_curves, plot_hubs
from diffworld.model.world_model import ModelConfig, WorldModel
from diffworld.splits import HELD_OUT_SEED_BASE
from diffworld.train import TrainConfig
from diffworld.worlds import make_world, run_episode
from diffworld.worlds.cascade import extinct


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


def held_out_cases(world: Any, context: int, horizon: int, n_cases: int, max_tries: int = 100_000) -> dict[str, np.ndarray]:
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
    """Score `model` on held-out epidemics: the report of `diffworld.evaluate.cascade`, plus its pictures' data."""
    world = make_world("cascade", **cfg.world_options)
    rng = np.random.default_rng(cfg.seed)
    context = model.frames - 1
    cases = held_out_cases(world, context, cfg.horizon, cfg.cases)
    truth, last = ev.node_states(cases["truth"]), cases["last"]
    log(f"{cfg.cases} held-out epidemics (seeds from {HELD_OUT_SEED_BASE}); model: {cfg.members} dreams of {cfg.horizon} steps each")
    no_actions = np.full((cfg.cases, cfg.horizon), -1)
    t0 = time.perf_counter()
    dream = model_forecast(model, cases["context"], no_actions, cfg.members, seed=cfg.seed, stop=extinct)  # [S, M, H, N, 3]
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
    report["rollout_fps_ensemble"] = fps
    taus = model.denoiser.net.diffusion_times()  # [depth, heads] learned heat-kernel times
    report["diffusion_times"] = None if taus is None else taus.detach().cpu().tolist()
    report["cases"] = {"seeds_from": HELD_OUT_SEED_BASE, "cases": cfg.cases, "context": context, "members": cfg.members}
    report["_pictures"] = {"world": world, "cases": cases, "traj": traj, "truth": truth, "forecasts": forecasts}
    return report


def run_cascade_demo(
    out: str | Path, cfg: CascadeDemoConfig = CascadeDemoConfig(), progress: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Collect, train, evaluate; write checkpoint/, metrics.json, spread.gif, curves.png and hubs.png into `out`."""
    from diffworld.recipes import train_world  # recipes imports this module's caller, not the reverse

    out = Path(out)
    t0 = time.perf_counter()
    result = train_world(
        "cascade", out, ModelConfig.preset(cfg.preset), cfg.train, cfg.episodes,
        progress=progress, log=log, world_options=cfg.world_options,
    )  # fmt: skip
    log("evaluating on held-out epidemics")
    report = evaluate_cascade(result.model, cfg, log)
    pics = report.pop("_pictures")
    graph_heatmap_gif(pics["world"].graph, pics["truth"][0], pics["forecasts"], out / "spread.gif", case=0)
    plot_cascade_curves(pics["traj"], pics["truth"], out / "curves.png", case=0)
    plot_hubs(report["hub"]["expected_reach"], report["hub"]["kendall_tau"], out / "hubs.png")
    metrics = {
        "world": "cascade",
        "world_options": cfg.world_options,
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "train_seconds": result.seconds,
        **report,
        "total_seconds": time.perf_counter() - t0,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


__all__ = ["CascadeDemoConfig", "evaluate_cascade", "held_out_cases", "run_cascade_demo"]
