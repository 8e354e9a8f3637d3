"""Does a `fields` forecast invent the simulator's random events, lead by lead, and as strongly?

    python benchmarks/fields_events.py --model runs/fields/checkpoint
    python benchmarks/fields_events.py --model runs/fields/checkpoint --samplers '[{}, {"steps": 64}]'

Two kinds of event make one `fields` future differ from another: a source birth (0.3 a step,
amplitude 0.5–1.5, emission decaying as exp(−age/8)) and a wind turn (four directions; a turn
with probability 0.05 a step). From `--cases` validation start dates (seeds 200,300+;
`--held-out`: the scoring seeds) the branched simulator and the model each run `--members`
futures `--horizon` steps ahead, and every step of every member is read back as the world's
physics (`Fields.read_steps`: the wind regime whose exact transport best explains the step, and
the residual it leaves — the step's emission and noise, and a model's error):

- *a birth* is a blob where the residual (first channel) rises above 0.3 while the previous
  step's residual stayed below 0.15 within a cell (a live source emits in place every step);
  its *strength* is the residual's mean over the 3×3 cells round the blob's peak, followed over
  the next 8 steps (the simulator: a 3×3 mean of ~0.69 at birth, decaying about as exp(−age/8));
- *wind*: the share of members whose wind differs from the start's by lead (a Markov chain
  turning 5% a step: 0.75·(1 − 0.933^lead)), and after a turn, the share of next steps back on
  the old wind (the simulator: 1/60 by its law, ~0.04 as read back; turns that do not stick make
  no spread);
- *the field* (first channel): its spatial mean and variance by lead, averaged over members;
- *the ensemble*: spread/skill by lead (`evaluate.metrics.spread_skill`) and the spread (RMS of
  members about their mean, all channels) as a share of the simulator's.

`--weakened A LIFE` also branches a simulator whose sources are weaker (amplitudes × A) and whose
emission dies sooner (lifetime LIFE steps instead of 8, the sources alive at the start
included) — set from a model's read-back birth strengths, it shows how much of the model's
missing spread its weak sources alone would explain.

The counts are the read-back's, not the simulator's own: on its steps the reader finds ~0.38
births a step for the 0.3 it draws (blobs split at the grid's edge or by noise, births that
overlap) — compare a model with the simulator's row, not with 0.3.

`--guide CKPT --guide-weights W …` reads the model's forecasts autoguided by a weaker checkpoint
of the same world (`WorldModel.guide_with`), one block per weight.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
from scipy import ndimage

from diffworld import WorldModel
from diffworld.data.collect import HELD_OUT_SEED_BASE
from diffworld.evaluate.forecasts import make_cases, model_forecast, oracle_forecast
from diffworld.evaluate.metrics import ensemble_spread, spread_skill
from diffworld.forecast_demo import VALIDATION_START_SEED_BASE
from diffworld.worlds import make_world, random_policy
from diffworld.worlds.fields import Fields

NEW_EMISSION, OLD_EMISSION = 0.3, 0.15
AGES = 9  # strength followed at ages 0..8


def births(previous: np.ndarray, current: np.ndarray) -> list[tuple[int, int]]:
    """Peaks (y, x) of new emission: blobs of `current` residual [n, n] above NEW_EMISSION where `previous` stayed below OLD_EMISSION."""
    quiet = ndimage.maximum_filter(previous, size=3, mode="wrap") < OLD_EMISSION
    labels, count = ndimage.label((current > NEW_EMISSION) & quiet)
    peaks = ndimage.maximum_position(current, labels, range(1, count + 1))
    return [(int(y), int(x)) for y, x in peaks]


def strength(residual: np.ndarray, y: int, x: int) -> float:
    """Mean of `residual` [n, n] over the 3×3 cells round (y, x), wrapping at the edges."""
    n = residual.shape[-1]
    return float(residual[np.ix_([(y + d) % n for d in (-1, 0, 1)], [(x + d) % n for d in (-1, 0, 1)])].mean())


def read_events(world: Fields, context: np.ndarray, futures: np.ndarray) -> dict[str, np.ndarray]:
    """Events of an ensemble: context [S, L, C, n, n], futures [S, M, H, C, n, n]."""
    s, m, h = futures.shape[:3]
    frames = np.concatenate([np.repeat(context[:, None, -1:], m, axis=1), futures], axis=2)  # [S, M, H + 1, ...]
    regime, residual = world.read_steps(frames[:, :, :-1], frames[:, :, 1:])
    start_regime, start_residual = world.read_steps(context[:, -2], context[:, -1])
    born = np.zeros((s, m, h), dtype=int)
    curves = []  # strength at ages 0..AGES-1 of births early enough to be followed that long
    for i in range(s):
        for j in range(m):
            previous = start_residual[i, 0]
            for k in range(h):
                peaks = births(previous, residual[i, j, k, 0])
                born[i, j, k] = len(peaks)
                if k + AGES <= h:
                    curves += [[strength(residual[i, j, k + a, 0], y, x) for a in range(AGES)] for y, x in peaks]
                previous = residual[i, j, k, 0]
    return {"regime": regime, "start_regime": start_regime, "births": born, "strength": np.asarray(curves).reshape(-1, AGES), "field": futures[:, :, :, 0]}


def summarize(ev: dict[str, np.ndarray]) -> dict[str, object]:
    regime, start = ev["regime"], ev["start_regime"]
    s, m, _ = regime.shape
    path = np.concatenate([np.broadcast_to(start[:, None, None], (s, m, 1)), regime], axis=2)
    turned = path[:, :, 1:] != path[:, :, :-1]
    back = [path[i, j, k + 1] == path[i, j, k - 1] for i, j, k in zip(*np.nonzero(turned[:, :, :-1]), strict=True) if k >= 1]
    field = ev["field"]
    return {
        "births a step by lead": ev["births"].mean(axis=(0, 1)),
        "birth strength by age": ev["strength"].mean(0),
        "followed births": len(ev["strength"]),
        "turned by lead": (regime != start[:, None, None]).mean(axis=(0, 1)),
        "turns a step": float(turned.mean()),
        "back after a turn": float(np.mean(back)) if back else float("nan"),
        "field mean by lead": field.mean(axis=(0, 1, 3, 4)),
        "field variance by lead": field.var(axis=(-1, -2)).mean(axis=(0, 1)),
    }


def report(name: str, r: dict[str, object]) -> str:
    row = lambda key: " ".join(f"{v:.2f}" for v in r[key])  # noqa: E731
    return "\n".join([
        name,
        f"  spread/skill by lead: {row('spread/skill by lead')}",
        f"  spread by lead, ÷ the simulator's: {row('spread ratio by lead')}",
        f"  births a step by lead: {row('births a step by lead')}",
        f"  birth strength at ages 0..{AGES - 1} ({r['followed births']} births): {row('birth strength by age')}",
        f"  turned from the start's wind by lead: {row('turned by lead')}",
        f"  turns a step {r['turns a step']:.3f}; back on the old wind the step after a turn: {r['back after a turn']:.2f}",
        f"  field mean by lead: {row('field mean by lead')}",
        f"  field variance by lead: {row('field variance by lead')}",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint directory of a fields model")
    parser.add_argument("--cases", type=int, default=32)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--samplers", default="[{}]", help="JSON list of SamplerConfig overrides ({} = the model's own)")
    parser.add_argument("--held-out", action="store_true", help="start dates of the held-out (scoring) trajectories instead of validation ones")
    parser.add_argument("--weakened", nargs=2, type=float, metavar=("A", "LIFE"), help="also branch a simulator with source amplitudes × A and emission lifetime LIFE steps")
    parser.add_argument("--guide", help="a weaker checkpoint of the same world that autoguides the model (WorldModel.guide_with)")
    parser.add_argument("--guide-weights", type=float, nargs="+", default=[2.0], help="autoguidance weights to read with --guide (1: the model alone)")
    args = parser.parse_args()
    if args.horizon < AGES:
        raise SystemExit(f"--horizon must be at least {AGES} to follow a birth's strength, got {args.horizon}")
    if args.weakened and not (args.weakened[0] >= 0 and args.weakened[1] > 0):
        raise SystemExit(f"--weakened needs an amplitude factor >= 0 and a lifetime > 0, got {args.weakened}")
    model = WorldModel.from_pretrained(args.model)
    world = make_world("fields")
    if model.spec.name != "fields" or tuple(model.spec.frame_shape) != tuple(world.spec.frame_shape):
        raise SystemExit(f"this benchmark reads the default fields world {world.spec.frame_shape}; the model is {model.spec.name!r} with frames {model.spec.frame_shape}")
    first = (HELD_OUT_SEED_BASE if args.held_out else VALIDATION_START_SEED_BASE) + 300
    context = model.frames - 1
    cases = make_cases(lambda: make_world("fields"), list(range(first, first + args.cases)), random_policy, args.cases, context, args.horizon, np.random.default_rng(5), max_steps=context + 200)
    split = "held-out" if args.held_out else "validation"
    print(f"model {args.model}: {args.cases} {split} starts (seeds from {first}) × {args.members} members, leads 1..{args.horizon}")
    oracle = oracle_forecast(lambda: make_world("fields"), cases, args.members, seed=7)

    def show(name: str, futures: np.ndarray) -> None:
        r = summarize(read_events(world, cases.context, futures))
        r["spread/skill by lead"] = spread_skill(futures, cases.truth)
        r["spread ratio by lead"] = ensemble_spread(futures) / ensemble_spread(oracle)
        print(report(name, r), flush=True)

    show("the simulator (oracle)", oracle)
    if args.weakened:
        amplitude, life = args.weakened
        weak = lambda: make_world("fields", source_amplitude=amplitude, source_life=life)  # noqa: E731
        show(f"the simulator with sources × {amplitude:g}, lifetime {life:g}", oracle_forecast(weak, cases, args.members, seed=7))
    guide = None if args.guide is None else WorldModel.from_pretrained(args.guide)
    for overrides in json.loads(args.samplers):
        sampler = replace(model.sampler, **overrides)
        for weight in args.guide_weights if guide is not None else [1.0]:
            model.guide_with(guide, weight)
            guided = "" if guide is None else f", autoguided by {args.guide} with weight {weight:g}"
            show(f"model {json.dumps(overrides)}: {sampler}{guided}", model_forecast(model, cases.context, cases.actions, args.members, sampler=sampler, seed=0))


if __name__ == "__main__":
    main()
