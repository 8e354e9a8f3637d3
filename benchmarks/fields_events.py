"""Does a `fields` forecast invent the simulator's random events, lead by lead, and as strongly?

    python benchmarks/fields_events.py --model runs/fields/checkpoint
    python benchmarks/fields_events.py --model runs/fields/checkpoint --samplers '[{}, {"steps": 64}]'

Two kinds of event make one `fields` future differ from another: a source birth (0.3 a step,
amplitude 0.5–1.5, emission decaying as exp(−age/8)) and a wind turn (four directions; a turn
with probability 0.05 a step). From `--cases` validation start dates (seeds 200,300+;
`--held-out`: the scoring seeds) the branched simulator and the model each run `--members`
futures `--horizon` steps ahead, and every step of every member is read back as the world's
physics (`Fields.read_events`, summed up by `evaluate.events.fields_report` as `diffworld eval`
does; `Fields.read_steps`: the wind regime whose exact transport best explains the step, and the
residual it leaves — the step's emission and noise, and a model's error):

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
of the same world (`rollout`'s `guide`), one block per weight.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

import numpy as np

from diffworld import WorldModel
from diffworld.domains.forecasting.events import fields_report
from diffworld.evaluate.forecasts import make_cases, model_forecast, oracle_forecast
from diffworld.evaluate.metrics import ensemble_spread, spread_skill
from diffworld.splits import FIELDS_EVENTS_SEED_OFFSET, HELD_OUT_SEED_BASE, VALIDATION_START_SEED_BASE
from diffworld.worlds import make_world, random_policy
from diffworld.worlds.fields import EVENT_AGES


def report(name: str, r: dict[str, dict[str, Any]]) -> str:
    """One forecaster's block: `events.fields_report`'s numbers and the ensemble's spread, by lead."""
    row = lambda values: " ".join(f"{v:.2f}" for v in values)
    births, wind, field, ensemble = r["source_births"], r["wind"], r["field"], r["ensemble"]
    strength = row(births["strength_by_age"]) if births["strength_by_age"] else "-"
    back = "-" if wind["back_after_turn"] is None else f"{wind['back_after_turn']:.2f}"
    return "\n".join([
        name,
        f"  spread/skill by lead: {row(ensemble['spread_skill'])}",
        f"  spread by lead, ÷ the simulator's: {row(ensemble['spread_ratio'])}",
        f"  births a step by lead: {row(births['rate'])}",
        f"  birth strength at ages 0..{EVENT_AGES - 1} ({births['followed']} births): {strength}",
        f"  turned from the start's wind by lead: {row(wind['turned_by_lead'])}",
        f"  turns a step {wind['turns_a_step']:.3f}; back on the old wind the step after a turn: {back}",
        f"  field mean by lead: {row(field['mean'])}",
        f"  field variance by lead: {row(field['variance'])}",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint directory of a fields model")
    parser.add_argument("--cases", type=int, default=32)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument(
        "--samplers", default="[{}]", help="JSON list of SamplerConfig overrides ({} = the model's own)"
    )
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="start dates of the held-out (scoring) trajectories instead of validation ones",
    )
    parser.add_argument(
        "--weakened",
        nargs=2,
        type=float,
        metavar=("A", "LIFE"),
        help="also branch a simulator with source amplitudes × A and emission lifetime LIFE steps",
    )
    parser.add_argument(
        "--guide", help="a weaker checkpoint of the same world that autoguides the model (rollout's guide)"
    )
    parser.add_argument(
        "--guide-weights",
        type=float,
        nargs="+",
        default=[2.0],
        help="autoguidance weights to read with --guide (1: the model alone)",
    )
    args = parser.parse_args()
    if args.horizon < EVENT_AGES:
        raise SystemExit(f"--horizon must be at least {EVENT_AGES} to follow a birth's strength, got {args.horizon}")
    if args.weakened and not (args.weakened[0] >= 0 and args.weakened[1] > 0):
        raise SystemExit(f"--weakened needs an amplitude factor >= 0 and a lifetime > 0, got {args.weakened}")
    model = WorldModel.from_pretrained(args.model)
    world = make_world("fields")
    if model.spec.name != "fields" or tuple(model.spec.frame_shape) != tuple(world.spec.frame_shape):
        raise SystemExit(
            f"this benchmark reads the default fields world {world.spec.frame_shape}; "
            f"the model is {model.spec.name!r} with frames {model.spec.frame_shape}"
        )
    first = (HELD_OUT_SEED_BASE if args.held_out else VALIDATION_START_SEED_BASE) + FIELDS_EVENTS_SEED_OFFSET
    context = model.frames - 1
    cases = make_cases(
        lambda: make_world("fields"),
        list(range(first, first + args.cases)),
        random_policy,
        args.cases,
        context,
        args.horizon,
        np.random.default_rng(5),
        max_steps=context + 200,
    )
    split = "held-out" if args.held_out else "validation"
    print(
        f"model {args.model}: {args.cases} {split} starts (seeds from {first}) × {args.members} members, "
        f"leads 1..{args.horizon}"
    )
    oracle = oracle_forecast(lambda: make_world("fields"), cases, args.members, seed=7)

    def show(name: str, futures: np.ndarray) -> None:
        r: dict[str, dict[str, Any]] = fields_report(world.read_events(cases.context, futures))
        r["ensemble"] = {
            "spread_skill": spread_skill(futures, cases.truth),
            "spread_ratio": ensemble_spread(futures) / ensemble_spread(oracle),
        }
        print(report(name, r), flush=True)

    show("the simulator (oracle)", oracle)
    if args.weakened:
        amplitude, life = args.weakened
        weak = lambda: make_world("fields", source_amplitude=amplitude, source_life=life)
        show(
            f"the simulator with sources × {amplitude:g}, lifetime {life:g}",
            oracle_forecast(weak, cases, args.members, seed=7),
        )
    guide = None if args.guide is None else WorldModel.from_pretrained(args.guide)
    for overrides in json.loads(args.samplers):
        sampler = replace(model.sampler, **overrides)
        for weight in args.guide_weights if guide is not None else [1.0]:
            guided = "" if guide is None else f", autoguided by {args.guide} with weight {weight:g}"
            futures = model_forecast(
                model,
                cases.context,
                cases.actions,
                args.members,
                sampler=sampler,
                seed=0,
                guide=guide,
                guide_weight=weight,
            )
            show(f"model {json.dumps(overrides)}: {sampler}{guided}", futures)


if __name__ == "__main__":
    main()
