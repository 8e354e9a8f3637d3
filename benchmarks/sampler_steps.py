"""Sampler steps against quality and speed on the demo world, to choose the default by measurement.

    python benchmarks/sampler_steps.py                    # the shipped pong model
    python benchmarks/sampler_steps.py --model runs/mine/checkpoint --cases 64
    python benchmarks/sampler_steps.py --device cuda --methods euler --steps 1 4

For Euler and Heun with 1, 2, 3, 4, 8 and 16 steps, the model dreams the same validation cases
(seeds 1,500,000+: neither trained on nor the held-out test seeds that `diffworld eval`
reports) under the true actions, `--members` futures each, and the table gives state CRPS (the
decoded ball and paddles, pixels; a missing ball costs the largest possible error) and pixel
CRPS at h = 1 and h = 8, the share of dreamed frames that decode as valid game frames, the
network evaluations per frame and frames/s of one dream (median of `--repeats` 32-frame dreams).
Persistence and the oracle (the true game branched from the same states) are scored on the same
cases for scale.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
from common import machine

from diffworld import WorldModel
from diffworld.domains.games.evaluation import rollout_fps
from diffworld.evaluate.forecasts import make_cases, model_forecast, oracle_forecast, persistence_forecast
from diffworld.evaluate.metrics import crps, decoded_state
from diffworld.splits import GAME_VALIDATION_SEED_BASE
from diffworld.worlds import default_policy, make_world

#: Validation seeds: the ones the reference model's sampler was chosen on (see its MODEL.md).
HORIZONS = (1, 8)


def scores(
    world, fct: np.ndarray, truth: np.ndarray, truth_state: np.ndarray
) -> tuple[list[float], list[float], float]:
    """(state CRPS at HORIZONS, pixel CRPS at HORIZONS, valid share) of a forecast [S, M, H, *frame]."""
    state, valid = decoded_state(world, fct, truth_state)
    state_crps, pixel_crps = crps(state, truth_state), crps(fct, truth)  # per horizon
    return (
        [float(state_crps[h - 1]) for h in HORIZONS],
        [float(pixel_crps[h - 1]) for h in HORIZONS],
        float(np.mean(valid)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="pong", help="checkpoint directory or shipped model name")
    parser.add_argument("--cases", type=int, default=32)
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 3, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=3, help="timed 32-frame dreams per setting (median)")
    parser.add_argument("--methods", nargs="+", default=["euler", "heun"], choices=["euler", "heun"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    model = WorldModel.from_pretrained(args.model, device=args.device)
    name = model.spec.name
    world = make_world(name)
    if not hasattr(world, "decode"):
        raise SystemExit(f"world {name!r} has no state decoder; this benchmark needs one (pong has)")
    make = lambda: make_world(name)  # noqa: E731
    seeds = [GAME_VALIDATION_SEED_BASE + i for i in range(max(1, args.cases // 2))]
    horizon = max(HORIZONS)
    cases = make_cases(
        make, seeds, default_policy(name), args.cases, model.frames - 1, horizon, np.random.default_rng(0)
    )
    truth_state = world.decode(cases.truth)[0]
    print(machine(args.device))
    print(
        f"model {args.model}; {args.cases} validation cases (seeds {seeds[0]}..{seeds[-1]}) × {args.members} members; "
        f"state CRPS in pixels"
    )
    head = f"{'sampler':>10} {'evals/frame':>11} " + " ".join(f"{f'state h={h}':>10}" for h in HORIZONS)
    head += " " + " ".join(f"{f'pixel h={h}':>10}" for h in HORIZONS) + f" {'valid':>6} {'frames/s':>8}"
    print(head)

    def row(label: str, evals: str, fct: np.ndarray, fps: str) -> None:
        state, pixel, valid = scores(world, fct, cases.truth, truth_state)
        print(
            f"{label:>10} {evals:>11} "
            + " ".join(f"{v:>10.3f}" for v in state)
            + " "
            + " ".join(f"{v:>10.4f}" for v in pixel)
            + f" {valid:>6.3f} {fps:>8}"
        )

    row("persist.", "", persistence_forecast(cases), "")
    row("oracle", "", oracle_forecast(make, cases, args.members), "")
    for method in args.methods:
        for steps in args.steps:
            sampler = replace(model.sampler, method=method, steps=steps)
            fct = model_forecast(model, cases.context, cases.actions, args.members, cases.context_actions, sampler)
            evals = steps if method == "euler" else 2 * steps - 1  # Heun's last step is an Euler step
            fps = rollout_fps(model, cases, sampler, repeats=args.repeats)
            row(f"{method} {steps}", f"{evals}", fct, f"{fps:.0f}")
    print(
        "The first evaluation of each frame also writes the frame before it into the KV cache (two frames, one pass)."
    )


if __name__ == "__main__":
    main()
