"""The forecast evaluation: score a chaotic or physical system's ensembles like a weather centre.

`diffworld eval CKPT` on a Lorenz-96 or fields checkpoint (and the forecast demo on its own
model) forecasts from start dates of held-out trajectories (seeds from HELD_OUT_SEED_BASE, never
seen in training), beside persistence, climatology, a per-point AR(1) and the oracle (the true
simulator from the same state with fresh noise; for a deterministic world a twin ensemble from
starts perturbed by `twin_scale`). Per lead: fair CRPS, ensemble-mean RMSE, spread/skill, CRPS
skill vs the oracle; pooled: the rank histogram. Then free-running rollouts `free_factor` times
longer than the training window test whether the model stays on the attractor: their mean,
variance and spectrum against long true trajectories. Spectra: over the ring of variables
(Lorenz-96) or the isotropic spectrum of the grid (fields).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffworld.checks import MAX_SEED, check_int, check_number, check_output_dir
from diffworld.diffusion.guidance import GUIDE_WEIGHT
from diffworld.diffusion.loss import LossConfig
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.domains.forecasting import weather
from diffworld.domains.forecasting.events import fields_report
from diffworld.domains.forecasting.pictures import (
    field_forecast_gif,
    plot_lead_scores,
    plot_ring_forecast,
    plot_spectra,
)
from diffworld.evaluate.events import by_event
from diffworld.evaluate.forecasts import (
    climatology_forecast,
    make_cases,
    model_forecast,
    oracle_forecast,
    persistence_forecast,
)
from diffworld.inputs import check_guide
from diffworld.model.world_model import ModelConfig, WorldModel, read_config, resolve_pretrained
from diffworld.splits import FREE_RUN_SEED_OFFSET, HELD_OUT_SEED_BASE, VALIDATION_START_SEED_BASE
from diffworld.train import TrainConfig
from diffworld.worlds import collect_episodes, make_world, random_policy, training_defaults

#: Worlds this demo serves (real-valued, branchable, without actions) and how each differs from
#: `ForecastDemoConfig`'s defaults.
WORLD_DEFAULTS: dict[str, dict[str, Any]] = {
    "lorenz96": {},
    # 32×32 smooth fields: patches of 4 cells (64 tokens); errors saturate within ~40 steps. The
    # refiner head (circular on the periodic grid) removes the patch-scale artefacts a linear
    # unpatchify leaves in the forecasts (validation spectra up to 51× the truth's at wavenumber
    # ~11, 2.3× with it; docs/research-log.md, "Fields: the patch-scale artefact").
    "fields": {
        "episodes": 100,
        "dit": {"patch": 4, "refine": 4},
        "train": TrainConfig(steps=2000, batch_size=8, loss=LossConfig(**training_defaults("fields"))),
        "horizon": 48,
        "headline_time": None,
    },
}
WORLDS = tuple(WORLD_DEFAULTS)


@dataclass(frozen=True)
class ForecastDemoConfig:
    """Everything the forecast demo does."""

    world: str = "lorenz96"
    world_options: dict[str, Any] = field(default_factory=dict)
    episodes: int = 200
    preset: str = "small"
    #: Overrides of the preset's DiT settings, e.g. {"patch": 4}.
    dit: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = TrainConfig(steps=2000, batch_size=16)
    #: Start dates (one per held-out trajectory), members per ensemble, leads 1..horizon.
    cases: int = 32
    #: Seed of the first start date's trajectory; the free runs start from seed_base + FREE_RUN_SEED_OFFSET.
    #: HELD_OUT_SEED_BASE scores a model; VALIDATION_START_SEED_BASE is for choosing settings.
    seed_base: int = HELD_OUT_SEED_BASE
    members: int = 16
    horizon: int = 48
    #: Beat persistence and AR(1) at leads up to this many of the world's time units (Lorenz-96:
    #: 2 model time units); None: up to the oracle's saturation lead.
    headline_time: float | None = 2.0
    #: Twin-ensemble perturbation (world units) for a deterministic world's oracle.
    twin_scale: float = 0.01
    #: Training trajectories the climatology and the AR(1) are fitted on (seeds 0..n−1).
    climate_episodes: int = 32
    #: Free runs: this many, each free_factor × the training window long.
    free_runs: int = 8
    free_factor: int = 100
    #: Early stopping on the climate of free runs: every `validate_every` steps (0: off) the EMA
    #: model runs `validation_runs` × `validation_frames` frames freely from validation
    #: trajectories (seeds from VALIDATION_SEED_BASE, neither trained on nor scored); the
    #: weights whose relative mean error + variance error is lowest are kept.
    validate_every: int = 0
    validation_runs: int = 4
    validation_frames: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.world not in WORLD_DEFAULTS:
            raise ValueError(f"the forecast demo serves {', '.join(WORLDS)}, got {self.world!r}")
        ModelConfig.preset(self.preset, **self.dit)  # a bad preset or DiT setting fails here, before any work
        for name in (
            "episodes",
            "cases",
            "horizon",
            "climate_episodes",
            "free_runs",
            "free_factor",
            "validation_runs",
            "validation_frames",
        ):
            check_int(f"forecast demo {name}", getattr(self, name), 1)
        check_int("forecast demo members", self.members, 2)  # fair CRPS and spread need two
        check_int("forecast demo validate_every", self.validate_every, 0)
        check_int("forecast demo seed_base", self.seed_base, 0)
        check_int("forecast demo seed", self.seed, 0, MAX_SEED)
        check_number("forecast demo twin_scale", self.twin_scale, least=0.0)
        if self.headline_time is not None:
            check_number("forecast demo headline_time", self.headline_time, above=0.0)

    @classmethod
    def for_world(cls, world: str, **overrides: Any) -> ForecastDemoConfig:
        """The demo's settings for `world` (its WORLD_DEFAULTS), with `overrides` on top."""
        if world not in WORLD_DEFAULTS:
            raise ValueError(f"the forecast demo serves {', '.join(WORLDS)}, got {world!r}")
        return cls(world=world, **{**WORLD_DEFAULTS[world], **overrides})


def evaluate_forecasts(
    model: WorldModel,
    cfg: ForecastDemoConfig,
    log: Callable[[str], None] = print,
    guide: WorldModel | None = None,
    guide_weight: float = 1.0,
) -> dict[str, Any]:
    """Score `model` on held-out start dates and free runs; the report, plus its pictures' data under
    `_pictures`. `guide`, `guide_weight`: autoguidance of every forecast and free run (see `rollout`)."""
    make = lambda: make_world(cfg.world, **cfg.world_options)
    world = make()
    rng = np.random.default_rng(cfg.seed)
    context = model.frames - 1
    seeds = list(range(cfg.seed_base, cfg.seed_base + cfg.cases))
    cases = make_cases(
        make, seeds, random_policy, cfg.cases, context, cfg.horizon, rng, max_steps=context + cfg.horizon + 200
    )
    climate = [e.frames for e in collect_episodes(make, range(cfg.climate_episodes), random_policy)]
    split = (
        "held-out"
        if cfg.seed_base == HELD_OUT_SEED_BASE
        else "validation"
        if cfg.seed_base == VALIDATION_START_SEED_BASE
        else "other"
    )
    log(f"{cfg.cases} {split} start dates (seeds from {cfg.seed_base}), {cfg.members} members, leads 1..{cfg.horizon}")
    t0 = time.perf_counter()
    forecasts = {
        "model": model_forecast(
            model, cases.context, cases.actions, cfg.members, seed=cfg.seed, guide=guide, guide_weight=guide_weight
        )
    }
    fps = cfg.cases * cfg.members * cfg.horizon / (time.perf_counter() - t0)
    if getattr(world, "deterministic", False):  # branching alone would give identical members
        oracle = weather.twin_forecast(make, cases, cfg.members, cfg.twin_scale, cfg.seed)
        oracle_kind = f"twin ensemble, starts perturbed by N(0, {cfg.twin_scale}²)"
    else:
        oracle = oracle_forecast(make, cases, cfg.members, cfg.seed)
        oracle_kind = "the true simulator branched with fresh noise"
    forecasts |= {
        "persistence": persistence_forecast(cases),
        "climatology": climatology_forecast(np.concatenate(climate), (cfg.cases, cfg.members, cfg.horizon), rng),
        "ar1": weather.AR1.fit(climate).forecast(cases.context[:, -1], cfg.members, cfg.horizon, rng),
        "oracle": oracle,
    }
    scores = weather.score_ensembles(forecasts, cases.truth, rng)
    step = world.spec.step_duration
    leads = np.arange(1, cfg.horizon + 1)
    crps = {n: np.asarray(s["crps"]) for n, s in scores.items()}
    # A large ensemble's mean scores the climate's std once its errors have saturated.
    saturated = float(np.concatenate(climate).std()) * np.sqrt(1 + 1 / cfg.members)
    sat = weather.saturation_lead(np.asarray(scores["oracle"]["rmse"]), saturated)
    bar_leads = sat if cfg.headline_time is None else min(cfg.horizon, int(np.floor(cfg.headline_time / step + 1e-9)))
    beats = (crps["model"] < crps["persistence"]) & (crps["model"] < crps["ar1"])
    skill = np.asarray(weather.skill_against(scores, "model"))
    spread_skill = np.asarray(scores["model"]["spread_skill"])
    # The oracle is a perfect ensemble: its spread/skill strays from 1 only by the noise of this
    # many start dates (large for fields at short leads, where rare source births carry the error).
    oracle_spread_skill = np.asarray(scores["oracle"]["spread_skill"])
    spectrum = spectrum_fn(world.spec)
    by_lead = [(spectrum(forecasts["model"][:, :, h]), spectrum(cases.truth[:, h])) for h in range(cfg.horizon)]
    ratio = np.stack([m / t for m, t in by_lead])  # [H, wavenumbers]
    log(f"free runs: {cfg.free_runs} × {cfg.free_factor * model.frames} frames")
    free = free_run(model, make, cfg, log, guide, guide_weight)
    headline = {
        "crps_by_lead": {n: c.tolist() for n, c in crps.items()},
        "skill_vs_oracle": skill.tolist(),
        "spread_skill": spread_skill.tolist(),
        "oracle_saturation_lead": sat,
        "headline_leads": bar_leads,
        "skill_vs_oracle_min_to_saturation": float(skill[:sat].min()),
        "spread_skill_range_to_saturation": [float(spread_skill[:sat].min()), float(spread_skill[:sat].max())],
        "oracle_spread_skill_range_to_saturation": [
            float(oracle_spread_skill[:sat].min()),
            float(oracle_spread_skill[:sat].max()),
        ],
        "spectrum_ratio_range": [float(ratio.min()), float(ratio.max())],
        "beats_persistence_and_ar1": bool(beats[:bar_leads].all()),
        "first_lead_not_beating": None if beats[:bar_leads].all() else int(np.flatnonzero(~beats)[0]) + 1,
        "free_run_mean_rel_error": free["mean_rel_error"],
        "free_run_var_rel_error": free["var_rel_error"],
    }
    report = {
        "headline": headline,
        "events": forecast_events(world, cases.context, forecasts),
        "leads": leads.tolist(),
        "lead_time": (leads * step).tolist(),
        "scores": scores,
        "forecast_spectrum_ratio_by_lead": ratio.tolist(),
        "free_run": free,
        "oracle": oracle_kind,
        "rollout_fps_ensemble": fps,
        "cases": {
            "split": split,
            "seeds_from": cfg.seed_base,
            "cases": cfg.cases,
            "context": context,
            "members": cfg.members,
        },
        "_pictures": {"truth": cases.truth, "forecasts": forecasts},
    }
    return report


def forecast_events(world: Any, context: np.ndarray, forecasts: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """The chance events of the model's and the oracle's forecasts, each event's numbers side by side
    (`events.fields_report`); None for a world without discrete events (Lorenz-96)."""
    if not hasattr(world, "read_events"):
        return None
    return by_event({name: fields_report(world.read_events(context, forecasts[name])) for name in ("model", "oracle")})


def spectrum_fn(spec: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Power spectrum of a world's frames: isotropic on a grid, along the ring for a series or graph of one feature."""
    if spec.layout == "grid":
        return weather.radial_spectrum
    return lambda x: weather.ring_spectrum(np.asarray(x)[..., 0])


def true_run(world: Any, seed: int, frames: int) -> np.ndarray:
    """[frames, *frame]: the world from `reset(seed)`, stepped on past the episode cut it reports
    (the physics goes on; `done` only marks where training episodes were cut)."""
    out = [world.reset(seed)]
    while len(out) < frames:
        out.append(world.step(None)[0])
    return np.stack(out)


def free_run(
    model: WorldModel,
    make: Callable[[], Any],
    cfg: ForecastDemoConfig,
    log: Callable[[str], None] = print,
    guide: WorldModel | None = None,
    guide_weight: float = 1.0,
) -> dict[str, Any]:
    """Free-running rollouts free_factor × the training window long, against true runs as long
    (autoguided by `guide` with weight `guide_weight`, see `rollout`).

    Starts: trajectories from seed `cfg.seed_base` + FREE_RUN_SEED_OFFSET (past the forecast cases'). The
    climate of each is its pooled mean, variance and spectrum over all frames and runs.
    """
    length = cfg.free_factor * model.frames
    context = model.frames - 1
    base = cfg.seed_base + FREE_RUN_SEED_OFFSET
    runs = np.stack([true_run(make(), seed, context + length) for seed in range(base, base + cfg.free_runs)])
    starts, truth = runs[:, :context], runs[:, context:]  # [R, L, *frame]
    no_actions = np.full((cfg.free_runs, length), -1)
    t0 = time.perf_counter()
    dream = model_forecast(model, starts, no_actions, 1, seed=cfg.seed + 1, guide=guide, guide_weight=guide_weight)[
        :, 0
    ]  # [R, L, *frame]
    log(f"free runs took {time.perf_counter() - t0:.0f}s")
    m_mean, t_mean = float(dream.mean()), float(truth.mean())
    m_var, t_var = float(dream.var()), float(truth.var())
    spectrum = spectrum_fn(model.spec)
    spec_m, spec_t = spectrum(dream), spectrum(truth)
    thirds = np.array_split(np.arange(length), 3)  # drift shows as a trend across the run
    return {
        "frames": length,
        "runs": cfg.free_runs,
        "mean": {"model": m_mean, "truth": t_mean},
        "var": {"model": m_var, "truth": t_var},
        "mean_rel_error": abs(m_mean - t_mean) / abs(t_mean),
        "var_rel_error": abs(m_var - t_var) / t_var,
        "var_by_third": {
            "model": [float(dream[:, i].var()) for i in thirds],
            "truth": [float(truth[:, i].var()) for i in thirds],
        },
        "spectrum": {"model": spec_m.tolist(), "truth": spec_t.tolist(), "ratio": (spec_m / spec_t).tolist()},
        "finite": bool(np.isfinite(dream).all()),
        "_dream": dream,
        "_truth": truth,
    }


def evaluate_forecast_checkpoint(
    path: str | Path,
    out: str | Path,
    sampler: SamplerConfig | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    guide: str | Path | None = None,
    guide_weight: float = GUIDE_WEIGHT,
    **overrides: Any,
) -> dict[str, Any]:
    """Score a trained checkpoint of a forecast world as the demo scores its own model.

    The held-out start dates, baselines, free runs and pictures of `evaluate_and_draw`, with the
    world options the checkpoint's data was collected with; `overrides` go to the world's
    `ForecastDemoConfig` (cases, members, horizon, seed, …), `sampler` replaces the checkpoint's.
    `guide`: a weaker checkpoint of the same world that autoguides every forecast and free run
    with weight `guide_weight` (see `rollout`). Writes `out`/metrics.json and the
    pictures; returns the metrics.
    """
    out = check_output_dir(out, "evaluation output")  # before any computing
    if (out / "metrics.json").exists():
        raise FileExistsError(f"{out / 'metrics.json'} exists; choose another --out or remove it")
    config = read_config(resolve_pretrained(path))
    world, data = config["spec"]["name"], config.get("data") or {}
    if world not in WORLDS or data.get("store"):
        source = f"store {data['store']}" if data.get("store") else f"world {world!r}"
        raise ValueError(
            f"the forecast evaluation needs a checkpoint trained on {' or '.join(WORLDS)} trajectories, "
            f"got one trained on {source}"
        )
    options = (data.get("collect") or {}).get("world_options") or {}
    cfg = ForecastDemoConfig.for_world(world, world_options=dict(options), **overrides)
    guide_data = {} if guide is None else read_config(resolve_pretrained(guide)).get("data") or {}
    for name, seeds in (("checkpoint", data.get("train_seeds")), ("guide", guide_data.get("train_seeds"))):
        if seeds and seeds[1] >= cfg.seed_base:
            raise ValueError(
                f"{name} trained on seeds {seeds[0]}..{seeds[1]}, "
                f"which reach the start dates' seeds from {cfg.seed_base}"
            )
    model = WorldModel.from_pretrained(path, device=device)
    if sampler is not None:
        model.sampler = sampler
    guide_model = None if guide is None else WorldModel.from_pretrained(guide, device=device)
    weight = 1.0 if guide is None else guide_weight
    check_guide(model, guide_model, weight)  # before any computing
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log(f"sampler: {model.sampler}" + ("" if guide is None else f", autoguided by {guide} with weight {guide_weight}"))
    report = evaluate_and_draw(model, cfg, out, log, guide_model, weight)
    metrics = {
        "world": world,
        "checkpoint": str(path),
        "sampler": asdict(model.sampler),
        "guide": None if guide is None else {"checkpoint": str(guide), "weight": guide_weight},
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "train_seconds": config.get("train_seconds"),
        **report,
        "total_seconds": time.perf_counter() - t0,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def evaluate_and_draw(
    model: WorldModel,
    cfg: ForecastDemoConfig,
    out: Path,
    log: Callable[[str], None] = print,
    guide: WorldModel | None = None,
    guide_weight: float = 1.0,
) -> dict[str, Any]:
    """`evaluate_forecasts` (autoguided by `guide`, if given), then its pictures in `out`; the report without
    picture data.

    Always scores.png and spectra.png; for a grid world forecast.gif (truth, ensemble mean, one
    member, spread), for a ring of variables hovmoller.png.
    """
    report = evaluate_forecasts(model, cfg, log, guide, guide_weight)
    pics = report.pop("_pictures")
    free = report["free_run"]
    dream, truth = free.pop("_dream"), free.pop("_truth")
    plot_lead_scores(report, out / "scores.png")
    plot_spectra(report, out / "spectra.png")
    if model.spec.layout == "grid":
        field_forecast_gif(
            pics["truth"][0], pics["forecasts"]["model"][0], out / "forecast.gif", names=model.spec.variables
        )
    else:
        plot_ring_forecast(
            pics["truth"][0], pics["forecasts"]["model"][0], out / "hovmoller.png", free=(truth[0], dream[0])
        )
    return report


__all__ = [
    "WORLDS",
    "ForecastDemoConfig",
    "evaluate_and_draw",
    "evaluate_forecast_checkpoint",
    "evaluate_forecasts",
    "free_run",
    "true_run",
]
