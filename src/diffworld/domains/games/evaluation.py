"""The games' evaluation: a world model on held-out episodes against persistence, climatology and the oracle.

`diffworld eval CKPT` on a game checkpoint (pong, MinAtar, Gymnasium or ALE; trained on a world
or on a store) replays held-out episodes (seeds from HELD_OUT_SEED_BASE + seed_offset) as its
training data was collected, and scores the model per horizon on the decoded state where the
world offers a decoder, on pixels and cells otherwise; beside it the chance events (births, and
pong's serve), action fidelity and the dream's speed.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld.checks import MAX_SEED, check_int, check_output_dir
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.domains.games.events import serve_report
from diffworld.domains.games.pictures import plot_horizons
from diffworld.evaluate.events import birth_report, by_event
from diffworld.evaluate.forecasts import (
    Cases,
    cases_at,
    climatology_forecast,
    counting_evaluations,
    make_cases,
    model_forecast,
    oracle_forecast,
    persistence_forecast,
    training_frames,
)
from diffworld.evaluate.metrics import cell_f1, decoded_state, score_forecast, skill_vs_reference
from diffworld.model.world_model import WorldModel, read_config, resolve_pretrained
from diffworld.recipes import checkpoint_train_seeds, data_source
from diffworld.rollout import rollout
from diffworld.splits import HELD_OUT_SEED_BASE
from diffworld.worlds import default_policy, make_world
from diffworld.worlds.base import BranchableWorld, DecodableWorld, Policy, World, run_episode
from diffworld.worlds.pong import FIRST_MOVES, SERVE_ROWS, Pong, one_ball, read_first_move, read_serve, serve_frames


@dataclass(frozen=True)
class EvalConfig:
    """How much held-out data an evaluation uses."""

    #: Forecast start points, spread over the held-out episodes.
    cases: int = 64
    #: Held-out episodes the cases are drawn from (seeds HELD_OUT_SEED_BASE + offset + i).
    episodes: int = 32
    #: Ensemble members of the model, the oracle and climatology.
    members: int = 16
    horizon: int = 16
    #: Rollouts with random commanded actions for action fidelity.
    fidelity_rollouts: int = 256
    #: Training-seed episodes the climatology draws frames from.
    climatology_episodes: int = 16
    #: Offset of the held-out seeds (to draw a different held-out set).
    seed_offset: int = 0
    #: Seed of the evaluation's own draws (start points, sampling, oracle noise).
    seed: int = 0
    #: Rollouts per batch on the device.
    batch: int = 512
    #: Pong's serve: moments of held-out episodes whose next frame is a serve, each drawn this
    #: many times by the model and by the true game (32 × 16 = 512 draws of 15 rows).
    serve_moments: int = 32
    serve_members: int = 16
    #: Pong's free dreams: this many dreams of `free_frames` frames each under uniformly random
    #: actions, from the first frames of held-out episodes (0 frames: none).
    free_dreams: int = 8
    free_frames: int = 1000

    def __post_init__(self) -> None:
        for name in (
            "cases",
            "episodes",
            "horizon",
            "fidelity_rollouts",
            "climatology_episodes",
            "batch",
            "serve_moments",
            "serve_members",
            "free_dreams",
        ):
            check_int(f"eval {name}", getattr(self, name), 1)
        check_int("eval free_frames", self.free_frames, 0)
        check_int("eval members", self.members, 2)  # fair CRPS and spread need two
        check_int("eval seed_offset", self.seed_offset, 0)
        check_int("eval seed", self.seed, 0, MAX_SEED)


def evaluate(
    model: WorldModel,
    world: str,
    cfg: EvalConfig = EvalConfig(),
    sampler: SamplerConfig | None = None,
    train_seeds: list[int] | None = None,
    log: Callable[[str], None] = lambda s: None,
    world_options: dict[str, Any] | None = None,
    policy: Policy | None = None,
    max_steps: int = 1000,
) -> dict[str, Any]:
    """Score `model` per horizon on held-out episodes of `world`; a JSON-ready dict.

    `world_options`, `policy` and `max_steps` should be those the training data was collected
    with (the world's default policy if None), so held-out episodes come from the same process.
    """
    if model.spec.name != world:
        raise ValueError(f"model was trained on world {model.spec.name!r}, not {world!r}")
    options = dict(world_options or {})
    make: Callable[[], World] = lambda: make_world(world, **options)  # noqa: E731
    probe = make()
    policy = policy or default_policy(world)
    sampler = sampler or model.sampler
    rng = np.random.default_rng(cfg.seed)
    context = model.frames - 1
    held_out = [HELD_OUT_SEED_BASE + cfg.seed_offset + i for i in range(cfg.episodes)]
    train_seeds = list(train_seeds if train_seeds is not None else range(cfg.climatology_episodes))
    if set(held_out) & set(train_seeds):
        raise ValueError("held-out seeds overlap the training seeds")

    log(f"held-out cases: {cfg.cases} starts from {cfg.episodes} episodes (seeds {held_out[0]}..{held_out[-1]})")
    cases = make_cases(make, held_out, policy, cfg.cases, context, cfg.horizon, rng, max_steps)
    s, m, h = cfg.cases, cfg.members, cfg.horizon

    log(f"model: {s} × {m} rollouts of {h} frames")
    t0 = time.perf_counter()
    with counting_evaluations(model) as evaluations:
        dream = model_forecast(
            model, cases.context, cases.actions, m, cases.context_actions, sampler, cfg.seed, cfg.batch
        )
    ensemble_fps = s * m * h / (time.perf_counter() - t0)
    forecasts = {"model": dream, "persistence": persistence_forecast(cases)}
    clim_pool = training_frames(make, train_seeds[: cfg.climatology_episodes], policy, max_steps)
    forecasts["climatology"] = climatology_forecast(clim_pool, (s, m, h), rng)
    if isinstance(probe, BranchableWorld):
        log("oracle: the true world branched from each case")
        forecasts["oracle"] = oracle_forecast(make, cases, m, cfg.seed)

    metrics: dict[str, dict[str, Any]] = {}
    cells = model.spec.layout == "grid" and model.spec.value_kind == "binary"
    channel_names = list(model.spec.variables) or [f"c{c}" for c in range(model.spec.frame_shape[0])]
    decodable = isinstance(probe, DecodableWorld)
    truth_state = probe.decode(cases.truth)[0] if decodable else None  # type: ignore[union-attr]
    for name, fct in forecasts.items():
        px = score_forecast(fct, cases.truth)
        entry: dict[str, Any] = {
            "pixel_crps": px["crps"],
            "pixel_rmse": px["rmse"],
            "pixel_spread_skill": px["spread_skill"],
        }
        if decodable:
            state, valid = decoded_state(probe, fct, truth_state)
            st = score_forecast(state, truth_state)
            entry |= {"state_crps": st["crps"], "state_rmse": st["rmse"], "state_spread_skill": st["spread_skill"]}
            entry["state_crps_by_variable"] = {
                v: score_forecast(state[..., k], truth_state[..., k])["crps"]  # type: ignore[index]
                for k, v in enumerate(probe.state_names)  # type: ignore[union-attr]
            }
            entry["valid_frac"] = valid.reshape(valid.shape[0], valid.shape[1], h).mean(axis=(0, 1)).tolist()
        if cells:
            f1 = cell_f1(fct, cases.truth)  # [H, C]
            entry["cell_f1"] = _nanmean_rows(f1)
            entry["cell_f1_by_channel"] = {v: f1[:, c].tolist() for c, v in enumerate(channel_names)}
        metrics[name] = entry

    result: dict[str, Any] = {
        "world": world,
        "horizons": list(range(1, h + 1)),
        "held_out": {"seeds": [held_out[0], held_out[-1]], "episodes": cfg.episodes, "cases": s, "members": m},
        "eval_config": asdict(cfg),
        "sampler": asdict(sampler),
        "metrics": metrics,
    }
    if decodable:
        result["valid_frac"] = float(np.mean(metrics["model"]["valid_frac"]))
        if "oracle" in metrics:
            result["state_skill_vs_oracle"] = skill_vs_reference(
                np.array(metrics["model"]["state_crps"]),
                np.array(metrics["persistence"]["state_crps"]),
                np.array(metrics["oracle"]["state_crps"]),
            ).tolist()
        if hasattr(probe, "controlled_next") and model.spec.action.kind == "discrete":
            log(f"action fidelity: {cfg.fidelity_rollouts} rollouts under random commands")
            result["action_fidelity"] = action_fidelity(model, probe, cases, cfg, sampler)
    if cells and "oracle" in metrics:
        result["cell_f1_skill_vs_oracle"] = skill_vs_reference(
            -np.array(metrics["model"]["cell_f1"]),
            -np.array(metrics["persistence"]["cell_f1"]),
            -np.array(metrics["oracle"]["cell_f1"]),
        ).tolist()
    result["summary"] = {
        name: {
            k: float(np.mean(v)) for k, v in entry.items() if k in ("state_crps", "pixel_crps", "state_rmse", "cell_f1")
        }
        for name, entry in metrics.items()
    }
    result["events"] = None
    if model.spec.layout == "grid" and model.spec.value_kind in ("binary", "categorical"):
        serves = f"; serves: {cfg.serve_moments} moments × {cfg.serve_members} draws" if isinstance(probe, Pong) else ""
        log("events: births in every forecast" + serves)
        result["events"] = game_events(model, make, cases, forecasts, cfg, sampler, train_seeds, policy, max_steps)
    result["rollout_fps"] = rollout_fps(model, cases, sampler)
    result["rollout_fps_ensemble"] = ensemble_fps
    result["evaluations_per_frame"] = evaluations[0] / (s * m * h)  # network evaluations per dreamed frame
    return result


def game_events(
    model: WorldModel,
    make: Callable[[], World],
    cases: Cases,
    forecasts: dict[str, np.ndarray],
    cfg: EvalConfig,
    sampler: SamplerConfig,
    train_seeds: list[int],
    policy: Policy,
    max_steps: int,
) -> dict[str, Any]:
    """The chance events of a grid game's forecasts, each event's numbers by forecaster (`events.by_event`).

    `births` for every forecast but climatology (its frames are independent draws, so everything
    in them is born); persistence has none by construction. For pong also `serve` (`serve_draws`),
    `first_move` (`first_move_draws`) and, unless `cfg.free_frames` is 0, `free_dreams`.
    """
    spec = model.spec
    channels = list(spec.variables) or [f"c{c}" for c in range(spec.frame_shape[0])]
    value_range = spec.value_range or (0.0, 1.0)
    reports = {
        name: {"births": birth_report(cases.context[:, -1], fct, spec.value_kind, channels, value_range)}
        for name, fct in forecasts.items()
        if name != "climatology"
    }
    events = by_event(reports)
    if isinstance(make(), Pong):
        events["serve"] = serve_draws(model, make, cfg, sampler, train_seeds, policy, max_steps)
        events["first_move"] = first_move_draws(model, make, cfg, sampler, train_seeds, policy, max_steps)
        if cfg.free_frames:
            events["free_dreams"] = free_dreams(model, make, cfg, sampler, train_seeds, policy)
    return events


def serve_moments(
    context: int,
    make: Callable[[], World],
    cfg: EvalConfig,
    train_seeds: list[int],
    policy: Policy,
    max_steps: int,
    moved: bool = False,
) -> tuple[list[tuple[Any, int]], list[int]]:
    """The first `cfg.serve_moments` moments of held-out episodes whose next frame shows a new
    serve, with `context` frames before (and, if `moved`, a frame after the serve: the last point's
    serve ends its episode): ((episode, index of the frame before the serve) each, the seeds played)."""
    world, picks, seeds, trained = make(), [], [], set(train_seeds)
    first = HELD_OUT_SEED_BASE + cfg.seed_offset
    for seed in range(first, first + 10 * cfg.serve_moments + cfg.episodes):  # a pong episode has 3 points or more
        if seed in trained:
            raise ValueError(f"held-out seed {seed} of the serve moments is a training seed")
        ep = run_episode(world, seed, policy, max_steps, keep_states=True)
        ends = len(ep) - 1 - int(moved)
        found = [(ep, int(t) - 1) for t in serve_frames(ep.rewards) if context <= t <= ends]
        picks += found[: cfg.serve_moments - len(picks)]
        seeds.append(seed)
        if len(picks) == cfg.serve_moments:
            return picks, seeds
    raise ValueError(f"found {len(picks)} serve moments in {len(seeds)} held-out episodes, wanted {cfg.serve_moments}")


def serve_draws(
    model: WorldModel,
    make: Callable[[], World],
    cfg: EvalConfig,
    sampler: SamplerConfig,
    train_seeds: list[int],
    policy: Policy,
    max_steps: int,
) -> dict[str, Any]:
    """Pong's serve drawn from true contexts, by the model and by the true game (`serve_report` each).

    Moments: the first `cfg.serve_moments` frames of held-out episodes (seeds from
    HELD_OUT_SEED_BASE + seed_offset, as many as it takes) that show a new serve, with the whole
    context before them; each is drawn `cfg.serve_members` times from the true context under the
    true action, and by the true game branched from the frame before with fresh noise.
    """
    context = model.frames - 1
    picks, seeds = serve_moments(context, make, cfg, train_seeds, policy, max_steps)
    at = cases_at(picks, context, 1)
    m, noise = cfg.serve_members, cfg.seed + 2
    drawn = {
        "model": model_forecast(model, at.context, at.actions, m, at.context_actions, sampler, noise, cfg.batch),
        "oracle": oracle_forecast(make, at, m, noise),
    }
    report: dict[str, Any] = {"moments": len(picks), "members": m, "seeds": [seeds[0], seeds[-1]]}
    for name, frames in drawn.items():
        report[name] = serve_report(*read_serve(frames[:, :, 0]), SERVE_ROWS)
    return report


def first_move_draws(
    model: WorldModel,
    make: Callable[[], World],
    cfg: EvalConfig,
    sampler: SamplerConfig,
    train_seeds: list[int],
    policy: Policy,
    max_steps: int,
) -> dict[str, Any]:
    """Pong's served ball's first move, which shows the direction the serve drew (`serve_report` of
    `read_first_move` each): the model from the true context up to the serve frame; the true game
    branched from the frame before the serve, so that both the serve and its direction are drawn
    afresh. Moments as `serve_draws`'s, of serves followed by a frame."""
    context = model.frames - 1
    picks, seeds = serve_moments(context, make, cfg, train_seeds, policy, max_steps, moved=True)
    m, noise = cfg.serve_members, cfg.seed + 3
    at = cases_at([(ep, t + 1) for ep, t in picks], context, 1)
    served = Pong().decode(at.context[:, -1])[0][:, 1]  # [S] the true serve's row
    dreamed = model_forecast(model, at.context, at.actions, m, at.context_actions, sampler, noise, cfg.batch)
    two = oracle_forecast(make, cases_at(picks, context, 2), m, noise)  # [S, M, 2, ...]: a serve, then its move
    report: dict[str, Any] = {"moments": len(picks), "members": m, "seeds": [seeds[0], seeds[-1]]}
    for name, moved, rows in (
        ("model", dreamed[:, :, 0], np.repeat(served[:, None], m, 1)),
        ("oracle", two[:, :, 1], Pong().decode(two[:, :, 0])[0][..., 1]),
    ):
        valid, no_ball, move = read_first_move(moved, rows)
        report[name] = serve_report(valid, no_ball, move, FIRST_MOVES)
    return report


def free_dreams(
    model: WorldModel,
    make: Callable[[], World],
    cfg: EvalConfig,
    sampler: SamplerConfig,
    train_seeds: list[int],
    policy: Policy,
) -> dict[str, Any]:
    """Pong's long dreams: `cfg.free_dreams` dreams of `cfg.free_frames` frames under uniformly random
    actions, each from the first frames of a held-out episode: the shares of frames that are valid,
    that show exactly one ball and none, and the frame where each dream is first invalid (the
    dream's length where it never is)."""
    context, world, trained = model.frames - 1, make(), set(train_seeds)
    seeds = [HELD_OUT_SEED_BASE + cfg.seed_offset + i for i in range(cfg.free_dreams)]
    if trained & set(seeds):
        raise ValueError(f"held-out seeds {seeds[0]}..{seeds[-1]} of the free dreams overlap the training seeds")
    starts = [run_episode(world, seed, policy, context - 1) for seed in seeds]
    if any(len(ep) < context for ep in starts):
        raise ValueError(f"a free dream starts from {context} frames; a held-out episode ended sooner")
    rng = np.random.default_rng([cfg.seed, 2])
    actions = rng.integers(model.spec.action.n, size=(len(seeds), cfg.free_frames))
    frames = model_forecast(
        model,
        np.stack([ep.frames[:context] for ep in starts]),
        actions,
        1,
        np.stack([ep.actions[:context] for ep in starts]),
        sampler,
        cfg.seed + 4,
        cfg.batch,
    )[:, 0]  # [dreams, frames, *frame]
    state, valid = Pong().decode(frames)
    first_invalid = np.where(valid.all(1), cfg.free_frames, (~valid).argmax(1))
    return {
        "dreams": len(seeds),
        "frames": cfg.free_frames,
        "seeds": [seeds[0], seeds[-1]],
        "valid": float(valid.mean()),
        "one_ball": float(one_ball(frames).mean()),
        "no_ball": float(np.isnan(state[..., 0]).mean()),
        "first_invalid": first_invalid.tolist(),
    }


def _nanmean_rows(a: np.ndarray) -> list[float]:
    """Mean over the last axis ignoring NaN; NaN where a row is all NaN."""
    with np.errstate(invalid="ignore"):
        counts = (~np.isnan(a)).sum(-1)
        return np.where(counts > 0, np.nansum(a, -1) / np.maximum(counts, 1), np.nan).tolist()


def action_fidelity(model: WorldModel, world: Any, cases: Cases, cfg: EvalConfig, sampler: SamplerConfig) -> float:
    """Share of dreamed steps where the controlled object moves exactly as the true world would.

    Each rollout starts from a held-out context and follows uniformly random commands; at every
    step the expected position is the world's rule applied to the dreamed previous frame (the
    true last context frame at the first step), walls included.
    """
    rng = np.random.default_rng([cfg.seed, 1])
    n, h = cfg.fidelity_rollouts, cfg.horizon
    idx = np.arange(n) % len(cases.context)
    commands = rng.integers(model.spec.action.n, size=(n, h))
    dream = model_forecast(
        model, cases.context[idx], commands, 1, cases.context_actions[idx], sampler, cfg.seed + 1, cfg.batch
    )
    state = world.decode(dream[:, 0])[0]  # [n, H, K]
    last_ctx = world.decode(cases.context[idx, -1])[0]  # [n, K]
    prev = np.concatenate([last_ctx[:, None], state[:, :-1]], axis=1)  # [n, H, K]
    expected = world.controlled_next(prev, commands)
    got = state[..., world.controlled_index]
    return float(np.mean(np.abs(got - expected) < 1e-6))


def rollout_fps(model: WorldModel, cases: Cases, sampler: SamplerConfig, frames: int = 32, repeats: int = 3) -> float:
    """Frames per second of one dream (batch 1, one member) with `sampler`: the median of
    `repeats` dreams of `frames` frames, after a warm-up (one dream of a busy machine can read half)."""
    ctx = torch.as_tensor(cases.context[:1])
    acts = torch.zeros(1, frames, dtype=torch.long) if model.spec.action.kind == "discrete" else None
    rollout(model, ctx, acts if acts is None else acts[:, :4], horizon=4, sampler=sampler)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rollout(model, ctx, acts, horizon=frames, sampler=sampler).cpu()  # on a GPU: until the frames are done
        times.append(time.perf_counter() - t0)
    return frames / statistics.median(times)


def evaluate_checkpoint(
    path: str | Path,
    out: str | Path,
    eval_config: EvalConfig = EvalConfig(),
    sampler: SamplerConfig | None = None,
    device: str = "cpu",
    extra: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    policy: str | Policy | None = None,
    world: str | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on held-out episodes; write `metrics.json` and `horizon.png` into `out`.

    `policy` and `world`: what this run may play and build beyond the checkpoint's data (`data_source`).
    """
    out = check_output_dir(out, "evaluation output")  # before any computing
    if (out / "metrics.json").exists():  # e.g. a demo's own directory: its scores would be lost
        raise FileExistsError(f"{out / 'metrics.json'} exists; choose another --out or remove it")
    directory = resolve_pretrained(path)
    source = data_source(read_config(directory), policy, world, str(directory))
    model = WorldModel.from_pretrained(path, device=device)
    config = read_config(directory)
    metrics = evaluate(model, model.spec.name, eval_config, sampler, checkpoint_train_seeds(path), log, **source)
    metrics["checkpoint"] = str(path)
    metrics["train_seconds"] = config.get("train_seconds")
    metrics |= extra or {}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_horizons(metrics, out / "horizon.png")
    return metrics


__all__ = [
    "EvalConfig",
    "action_fidelity",
    "evaluate",
    "evaluate_checkpoint",
    "first_move_draws",
    "free_dreams",
    "game_events",
    "rollout_fps",
    "serve_draws",
    "serve_moments",
]
