"""The cascade demo: collect epidemics on a social network, train a graph world model on them, and
score it as `diffworld eval` scores any cascade checkpoint (`evaluation.evaluate_and_draw`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from diffworld.domains.epidemics.evaluation import CascadeDemoConfig, evaluate_and_draw
from diffworld.model.world_model import ModelConfig
from diffworld.recipes import train_world


def run_cascade_demo(
    out: str | Path,
    cfg: CascadeDemoConfig = CascadeDemoConfig(),
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Collect, train, evaluate; write checkpoint/, metrics.json, spread.gif, curves.png and hubs.png into `out`."""
    out = Path(out)
    t0 = time.perf_counter()
    result = train_world(
        "cascade", out, ModelConfig.preset(cfg.preset), cfg.train, cfg.episodes,
        progress=progress, log=log, world_options=cfg.world_options,
    )  # fmt: skip
    log("evaluating on held-out epidemics")
    report = evaluate_and_draw(result.model, cfg, out, log)
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


__all__ = ["run_cascade_demo"]
