"""The forecast demo: collect trajectories of Lorenz-96 or fields, train a world model on them, and
score it as `diffworld eval` scores any forecast checkpoint (`evaluation.evaluate_and_draw`).

Early stopping (`validate_every`) keeps the weights whose free runs from validation trajectories
best keep the climate's mean and variance.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from diffworld.domains.forecasting.evaluation import WORLDS, ForecastDemoConfig, evaluate_and_draw, true_run
from diffworld.evaluate.forecasts import model_forecast
from diffworld.model.world_model import ModelConfig, WorldModel
from diffworld.recipes import train_world
from diffworld.splits import VALIDATION_SEED_BASE
from diffworld.worlds import make_world


def climate_validator(cfg: ForecastDemoConfig, log: Callable[[str], None] = print) -> Callable[[WorldModel], float]:
    """The early-stopping score: relative mean error + relative variance error of free runs from validation
    trajectories."""
    context = ModelConfig.preset(cfg.preset, **cfg.dit).dit.frames - 1
    seeds = range(VALIDATION_SEED_BASE, VALIDATION_SEED_BASE + cfg.validation_runs)
    runs = np.stack(
        [true_run(make_world(cfg.world, **cfg.world_options), seed, context + cfg.validation_frames) for seed in seeds]
    )
    starts, real = runs[:, :context], runs[:, context:]  # [R, L, *frame]
    no_actions = np.full((len(runs), cfg.validation_frames), -1)

    def score(model: WorldModel) -> float:
        dream = model_forecast(model, starts, no_actions, 1, seed=cfg.seed + 2)[:, 0]
        mean_err = abs(dream.mean() - real.mean()) / abs(real.mean())
        var_err = abs(dream.var() - real.var()) / real.var()
        log(f"validation free runs: mean error {mean_err:.1%}, variance error {var_err:.1%}")
        return float(mean_err + var_err) if np.isfinite(dream).all() else float("inf")

    return score


def run_forecast_demo(
    out: str | Path,
    cfg: ForecastDemoConfig = ForecastDemoConfig(),
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Collect, train, evaluate; write checkpoint/, metrics.json and the pictures of `evaluate_and_draw` into `out`."""
    if cfg.world not in WORLDS:
        raise ValueError(f"the forecast demo serves {', '.join(WORLDS)}, got {cfg.world!r}")
    out = Path(out)
    t0 = time.perf_counter()
    validate = climate_validator(cfg, log) if cfg.validate_every else None
    result = train_world(
        cfg.world, out, ModelConfig.preset(cfg.preset, **cfg.dit), cfg.train, cfg.episodes,
        progress=progress, log=log, world_options=cfg.world_options, validate=validate,
        validate_every=cfg.validate_every or 1,
    )  # fmt: skip
    log("evaluating on held-out trajectories")
    report = evaluate_and_draw(result.model, cfg, out, log)
    metrics = {
        "world": cfg.world,
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "train_seconds": result.seconds,
        "early_stopping": result.best,
        **report,
        "total_seconds": time.perf_counter() - t0,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


__all__ = ["climate_validator", "run_forecast_demo"]
