"""Does a `fields` model draw the simulator's randomness? One step, model against the branched simulator.

    python benchmarks/fields_probe.py --model runs/fields/checkpoint
    python benchmarks/fields_probe.py --model runs/fields/checkpoint \\
        --samplers '[{}, {"steps": 32, "sigma_ctx": 0.01}]'

From `--cases` states of validation trajectories (seeds 200,050+; `--held-out`: the scoring
seeds 1,000,050+, for reporting a choice rather than making one) the true simulator is
branched `--members` times one step ahead (the oracle: its futures differ only by which
sources appear and whether the wind turns), and the model dreams the same step `--members`
times from the true context.
Per ensemble, with the oracle's per-cell median as the "nothing new happened" frame:

- *births/step*: share of members whose first channel rises more than 0.3 above that median
  somewhere (a new source: the simulator starts 0.3 per step, amplitudes 0.5–1.5);
- *mean increment*: change of the field's spatial mean over the step, per channel (sources add
  to it, damping takes away; a model that under-adds drains the field in a free run);
- *spread*: per-cell standard deviation across members;
- *distance to median*: RMS distance of the ensemble mean from the oracle's median frame (the
  one-step map's own error; the oracle's ensemble mean is the floor);
- *random power by scale*: the isotropic power spectrum of each member's departure from its
  ensemble mean (the step's randomness), first channel, over wavenumbers 1–5 (the sources' and
  the wind's scales) and 8 to the grid's limit, as a share of the oracle's in the same band
  (1 is right; below 1 the model draws too little randomness at those scales).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np

from diffworld import WorldModel
from diffworld.domains.forecasting.weather import radial_spectrum
from diffworld.evaluate.forecasts import make_cases, model_forecast, oracle_forecast
from diffworld.splits import FIELDS_PROBE_SEED_OFFSET, HELD_OUT_SEED_BASE, VALIDATION_START_SEED_BASE
from diffworld.worlds import make_world, random_policy

BIRTH_RISE = 0.3


LARGE, SMALL = slice(0, 5), slice(7, None)  # wavenumbers 1–5 and 8.. (radial_spectrum starts at 1)


def random_spectrum(next_frames: np.ndarray) -> np.ndarray:
    """Radial power spectrum of the first channel's departures from the ensemble mean, [n // 2]."""
    return radial_spectrum(next_frames[:, :, 0] - next_frames[:, :, 0].mean(axis=1, keepdims=True))


def one_step_stats(
    next_frames: np.ndarray, median: np.ndarray, last: np.ndarray, oracle_random: np.ndarray
) -> dict[str, object]:
    """Statistics of one-step ensembles [S, M, C, n, n] against the oracle's median [S, 1, C, n, n], the
    last true frame [S, C, n, n] and the oracle's `random_spectrum`."""
    s, m = next_frames.shape[:2]
    rise = (next_frames - median)[:, :, 0].reshape(s, m, -1).max(-1)
    increment = (next_frames.mean(axis=(-1, -2)) - last[:, None].mean(axis=(-1, -2))).mean(axis=(0, 1))
    return {
        "births/step": float((rise > BIRTH_RISE).mean()),
        "mean increment": [round(float(v), 4) for v in increment],
        "spread": float(next_frames.std(axis=1).mean()),
        "distance to median": float(np.sqrt(((next_frames.mean(1, keepdims=True) - median) ** 2).mean())),
        "random power": [
            float(random_spectrum(next_frames)[band].sum() / oracle_random[band].sum()) for band in (LARGE, SMALL)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint directory of a fields model")
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--members", type=int, default=48)
    parser.add_argument(
        "--samplers", default="[{}]", help="JSON list of SamplerConfig overrides ({} = the model's own)"
    )
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="states of the held-out (scoring) trajectories instead of validation ones",
    )
    args = parser.parse_args()
    model = WorldModel.from_pretrained(args.model)
    if model.spec.name != "fields":
        raise SystemExit(f"this probe needs a fields model, got one of {model.spec.name!r}")
    make = lambda: make_world("fields")  # noqa: E731
    first = (HELD_OUT_SEED_BASE if args.held_out else VALIDATION_START_SEED_BASE) + FIELDS_PROBE_SEED_OFFSET
    seeds = list(range(first, first + args.cases))
    context = model.frames - 1
    cases = make_cases(
        make, seeds, random_policy, args.cases, context, 1, np.random.default_rng(1), max_steps=context + 200
    )
    oracle = oracle_forecast(make, cases, args.members, seed=3)[:, :, 0]
    median = np.median(oracle, axis=1, keepdims=True)
    last = cases.context[:, -1]
    split = "held-out" if args.held_out else "validation"
    print(f"model {args.model}: {args.cases} {split} states (seeds from {first}) × {args.members} members, one step")
    header = (
        "| ensemble | births/step | mean increment (per channel) | spread | distance to median "
        "| random power k 1–5 / k ≥ 8 (÷ oracle's) |"
    )
    print(header + "\n" + "|---" * 6 + "|", flush=True)
    oracle_random = random_spectrum(oracle)

    def row(name: str, frames: np.ndarray) -> None:
        st = one_step_stats(frames, median, last, oracle_random)
        large, small = st["random power"]
        print(
            f"| {name} | {st['births/step']:.3f} | {st['mean increment']} | {st['spread']:.4f} "
            f"| {st['distance to median']:.4f} | {large:.2f} / {small:.2f} |",
            flush=True,
        )

    row("oracle (the simulator)", oracle)
    for overrides in json.loads(args.samplers):
        sampler = replace(model.sampler, **overrides)
        row(
            f"model {json.dumps(overrides)}",
            model_forecast(model, cases.context, cases.actions, args.members, sampler=sampler, seed=0)[:, :, 0],
        )


if __name__ == "__main__":
    main()
