"""Does a `fields` model draw the simulator's randomness? One step, model against the branched simulator.

    python benchmarks/fields_probe.py --model runs/fields/checkpoint
    python benchmarks/fields_probe.py --model runs/fields/checkpoint \\
        --samplers '[{}, {"steps": 32, "sigma_ctx": 0.01}]'

From `--cases` held-out states (seeds 1,000,050+) the true simulator is branched `--members`
times one step ahead (the oracle: its futures differ only by which sources appear and whether
the wind turns), and the model dreams the same step `--members` times from the true context.
Per ensemble, with the oracle's per-cell median as the "nothing new happened" frame:

- *births/step*: share of members whose first channel rises more than 0.3 above that median
  somewhere (a new source: the simulator starts 0.3 per step, amplitudes 0.5–1.5);
- *mean increment*: change of the field's spatial mean over the step, per channel (sources add
  to it, damping takes away; a model that under-adds drains the field in a free run);
- *spread*: per-cell standard deviation across members;
- *distance to median*: RMS distance of the ensemble mean from the oracle's median frame (the
  one-step map's own error; the oracle's ensemble mean is the floor).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np

from diffworld import WorldModel
from diffworld.data.collect import HELD_OUT_SEED_BASE
from diffworld.evaluate.forecasts import make_cases, model_forecast, oracle_forecast
from diffworld.worlds import make_world, random_policy

BIRTH_RISE = 0.3


def one_step_stats(next_frames: np.ndarray, median: np.ndarray, last: np.ndarray) -> dict[str, object]:
    """Statistics of one-step ensembles [S, M, C, n, n] against the oracle's median [S, 1, C, n, n] and the last true frame [S, C, n, n]."""
    s, m = next_frames.shape[:2]
    rise = (next_frames - median)[:, :, 0].reshape(s, m, -1).max(-1)
    increment = (next_frames.mean(axis=(-1, -2)) - last[:, None].mean(axis=(-1, -2))).mean(axis=(0, 1))
    return {
        "births/step": float((rise > BIRTH_RISE).mean()),
        "mean increment": [round(float(v), 4) for v in increment],
        "spread": float(next_frames.std(axis=1).mean()),
        "distance to median": float(np.sqrt(((next_frames.mean(1, keepdims=True) - median) ** 2).mean())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint directory of a fields model")
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--members", type=int, default=48)
    parser.add_argument("--samplers", default="[{}]", help="JSON list of SamplerConfig overrides ({} = the model's own)")
    args = parser.parse_args()
    model = WorldModel.from_pretrained(args.model)
    if model.spec.name != "fields":
        raise SystemExit(f"this probe needs a fields model, got one of {model.spec.name!r}")
    make = lambda: make_world("fields")  # noqa: E731
    seeds = list(range(HELD_OUT_SEED_BASE + 50, HELD_OUT_SEED_BASE + 50 + args.cases))
    context = model.frames - 1
    cases = make_cases(make, seeds, random_policy, args.cases, context, 1, np.random.default_rng(1), max_steps=context + 200)
    oracle = oracle_forecast(make, cases, args.members, seed=3)[:, :, 0]
    median = np.median(oracle, axis=1, keepdims=True)
    last = cases.context[:, -1]
    print(f"model {args.model}: {args.cases} held-out states × {args.members} members, one step")
    print("| ensemble | births/step | mean increment (per channel) | spread | distance to median |\n|---|---|---|---|---|")
    rows = [("oracle (the simulator)", oracle)]
    for overrides in json.loads(args.samplers):
        sampler = replace(model.sampler, **overrides)
        rows.append((f"model {json.dumps(overrides)}", model_forecast(model, cases.context, cases.actions, args.members, sampler=sampler, seed=0)[:, :, 0]))
    for name, frames in rows:
        st = one_step_stats(frames, median, last)
        print(f"| {name} | {st['births/step']:.3f} | {st['mean increment']} | {st['spread']:.4f} | {st['distance to median']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
