"""Score a `fields` or `lorenz96` checkpoint on the validation start dates: the split for choosing settings.

    python benchmarks/fields_validation.py --model runs/fields/checkpoint
    python benchmarks/fields_validation.py --model runs/fields/checkpoint --samplers '[{}, {"sigma_max": 20}]'
    python benchmarks/fields_validation.py --model runs/long/checkpoint --guide runs/short/checkpoint \\
        --guide-weights 1.5 2

The forecast demo's weather-centre evaluation (`forecast_demo.evaluate_forecasts`) from start
dates of validation trajectories (seeds 200,000+, never trained on; `diffworld eval --validation`
is the same with the demo's full sizes and pictures), at sizes that take minutes on a CPU: 12
starts × 8 members, leads 1..16, 2 free runs of 300 frames (seeds 700,000+). The held-out seeds
(1,000,000+) stay for scoring whatever these numbers chose. One block per sampler: CRPS at leads
1 / 4 / 8 / 15 beside the AR(1)'s, skill against the oracle, spread/skill per lead, the range
of forecast/truth spectrum ratios (and its low and high end per lead), and the free runs'
climate against the truth's. The oracle's spread/skill is printed too: a perfect ensemble's
strays from 1 by the noise of the starts, which on `fields` is large at short leads (rare source
births carry the error): at lead 1, 5–95% of draws of 12 starts land in 0.63–1.73, of 32 in
0.72–1.37, of 64 in 0.80–1.23 (draws from 256 validation starts, 8 members); `--cases` narrows it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np

from diffworld import WorldModel
from diffworld.domains.forecasting.evaluation import WORLDS, ForecastDemoConfig, evaluate_forecasts
from diffworld.splits import VALIDATION_START_SEED_BASE


def report(r: dict, seconds: float) -> str:
    h = r["headline"]
    crps, ar1 = np.asarray(h["crps_by_lead"]["model"]), np.asarray(h["crps_by_lead"]["ar1"])
    at = [i for i in (0, 3, 7, 14) if i < len(crps)]
    ss, sat = np.asarray(h["spread_skill"]), h["oracle_saturation_lead"]
    ratio = np.asarray(r["forecast_spectrum_ratio_by_lead"])
    free = r["free_run"]
    return "\n".join([
        f"  CRPS at leads {' / '.join(str(i + 1) for i in at)}: " + " / ".join(f"{crps[i]:.4f}" for i in at)
        + "  (AR(1): " + " / ".join(f"{ar1[i]:.4f}" for i in at) + ")",
        f"  skill vs oracle: lead 1 {h['skill_vs_oracle'][0]:.2f}, "
        f"min to saturation (lead {sat}) {h['skill_vs_oracle_min_to_saturation']:.2f}",
        f"  spread/skill to saturation {ss[:sat].min():.2f}..{ss[:sat].max():.2f}; by lead {ss.round(2).tolist()}",
        f"  the oracle's spread/skill by lead {np.asarray(r['scores']['oracle']['spread_skill']).round(2).tolist()} "
        "(a perfect ensemble: 1 up to the noise of this many starts)",
        f"  spectrum ratio {h['spectrum_ratio_range'][0]:.2f}..{h['spectrum_ratio_range'][1]:.2f}; "
        f"lowest by lead {ratio.min(1).round(2).tolist()}; highest {ratio.max(1).round(2).tolist()}",
        "  free runs: " + ", ".join(
            f"{k} {free[k]['model']:.3f} (truth {free[k]['truth']:.3f}, {free[k]['model'] / free[k]['truth'] - 1:+.0%})"
            for k in ("mean", "var")
        ),
        f"  ({seconds:.0f} s)",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint directory of a fields or lorenz96 model")
    parser.add_argument(
        "--samplers", default="[{}]", help="JSON list of SamplerConfig overrides ({} = the model's own)"
    )
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--free-runs", type=int, default=2)
    parser.add_argument("--free-frames", type=int, default=300)
    parser.add_argument(
        "--guide", help="a weaker checkpoint of the same world that autoguides the model (rollout's guide)"
    )
    parser.add_argument(
        "--guide-weights",
        type=float,
        nargs="+",
        default=[2.0],
        help="autoguidance weights to score with --guide (1: the model alone)",
    )
    args = parser.parse_args()
    model = WorldModel.from_pretrained(args.model)
    if model.spec.name not in WORLDS:
        raise SystemExit(f"this benchmark scores {' or '.join(WORLDS)} models, got one of {model.spec.name!r}")
    guide = None if args.guide is None else WorldModel.from_pretrained(args.guide)
    cfg = ForecastDemoConfig.for_world(
        model.spec.name, seed_base=VALIDATION_START_SEED_BASE, cases=args.cases, members=args.members,
        horizon=args.horizon, free_runs=args.free_runs, free_factor=max(1, args.free_frames // model.frames),
    )  # fmt: skip
    own = model.sampler
    print(
        f"model {args.model}: {cfg.cases} validation starts (seeds from {cfg.seed_base}) × {cfg.members} members, "
        f"leads 1..{cfg.horizon}; {cfg.free_runs} free runs × {cfg.free_factor * model.frames} frames",
        flush=True,
    )
    for overrides in json.loads(args.samplers):
        for weight in args.guide_weights if guide is not None else [1.0]:
            model.sampler = replace(own, **overrides)
            t0 = time.perf_counter()
            r = evaluate_forecasts(model, cfg, log=lambda _: None, guide=guide, guide_weight=weight)
            guided = "" if guide is None else f", autoguided by {args.guide} with weight {weight:g}"
            print(
                f"sampler {json.dumps(overrides)}: {model.sampler}{guided}\n{report(r, time.perf_counter() - t0)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
