"""Forecasting physical systems (Lorenz-96, fields): ensembles scored like a weather centre's.

- `evaluation`: the protocol `diffworld eval` runs on a checkpoint — held-out start dates beside
  persistence, climatology, AR(1) and the oracle, free runs, spectra;
- `weather`: the scores and baselines (fair CRPS by lead, AR(1), twin ensembles, spectra);
- `events`: the fields world's chance events (source births, wind turns);
- `demo`: collect, train, evaluate (`diffworld demo --world lorenz96` or `fields`);
- `pictures`: scores by lead, spectra, Hovmöller diagrams, forecast animations.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from diffworld.domains.base import (
    EVENTS_HEADING,
    DemoOptions,
    EvalOptions,
    checkpoint_sampler,
    given,
    model_and_oracle,
    refuse_existing_demo,
    with_training,
)
from diffworld.spec import WorldSpec

#: The worlds this domain serves.
WORLDS = ("lorenz96", "fields")


class Forecasting:
    """The forecasting domain (`diffworld.domains.base.Domain`)."""

    name = "forecasting"
    label = "lorenz96 and fields"
    demo_worlds = WORLDS
    eval_options = frozenset({"cases", "members", "horizon", "validation", "guide", "guide_weight"})
    demo_options = frozenset({"steps", "preset", "episodes", "cases", "members", "batch_size", "validate_every"})

    def serves(self, world: str) -> bool:
        return world in WORLDS

    def worlds(self) -> list[tuple[str, WorldSpec | None]]:
        from diffworld.worlds import make_world

        return [(w, make_world(w).spec) for w in WORLDS]

    def evaluate(self, checkpoint: str | Path, out: Path, options: EvalOptions) -> dict[str, Any]:
        from diffworld.domains.forecasting.evaluation import evaluate_forecast_checkpoint
        from diffworld.splits import VALIDATION_START_SEED_BASE

        if options.guide is None and options.guide_weight is not None:
            raise ValueError("--guide-weight needs --guide, the checkpoint that guides")
        sizes = options.sizes("cases", "members", "horizon")
        if options.validation:
            sizes["seed_base"] = VALIDATION_START_SEED_BASE
        weight = {} if options.guide_weight is None else {"guide_weight": options.guide_weight}
        sampler = checkpoint_sampler(checkpoint, options.sampler)
        return evaluate_forecast_checkpoint(
            checkpoint, out, sampler, device=options.device, log=options.log, guide=options.guide, seed=options.seed,
            **weight, **sizes,
        )  # fmt: skip

    def demo(self, world: str, out: Path, options: DemoOptions) -> dict[str, Any]:
        from diffworld.domains.forecasting.demo import run_forecast_demo
        from diffworld.domains.forecasting.evaluation import ForecastDemoConfig

        refuse_existing_demo(out)
        cfg = ForecastDemoConfig.for_world(world)
        cfg = replace(
            cfg,
            preset=given(options.preset, cfg.preset),
            episodes=given(options.episodes, cfg.episodes),
            train=with_training(cfg.train, options),
            cases=given(options.cases, cfg.cases),
            members=given(options.members, cfg.members),
            validate_every=given(options.validate_every, cfg.validate_every),
        )
        return run_forecast_demo(out, cfg, log=options.log)

    def print_summary(self, metrics: dict[str, Any]) -> None:
        """The forecast evaluation's headline numbers, one line each, then its chance events."""
        head = metrics["headline"]
        lead, n = metrics["lead_time"], head["headline_leads"]
        for name in ("model", "persistence", "ar1", "oracle"):
            c = head["crps_by_lead"][name]
            print(f"CRPS {name:>11}: " + " ".join(f"t={lead[i]:g} {c[i]:.3f}" for i in (0, n // 4, n // 2, n - 1)))
        verdict = (
            "yes" if head["beats_persistence_and_ar1"] else f"no (first miss at lead {head['first_lead_not_beating']})"
        )
        print(f"model beats persistence and AR(1) at every lead to {lead[n - 1]:g}: {verdict}")
        print(
            f"free run: mean off by {head['free_run_mean_rel_error']:.1%}, "
            f"variance by {head['free_run_var_rel_error']:.1%}"
        )
        print(
            f"skill vs oracle to lead {head['oracle_saturation_lead']} (saturation): "
            f"min {head['skill_vs_oracle_min_to_saturation']:.2f}"
        )
        lo, hi = head["spread_skill_range_to_saturation"]
        o_lo, o_hi = head["oracle_spread_skill_range_to_saturation"]
        spectrum = head["spectrum_ratio_range"]
        print(
            f"spread/skill to saturation: {lo:.2f}..{hi:.2f} (the oracle's {o_lo:.2f}..{o_hi:.2f}); "
            f"forecast/truth spectrum: {spectrum[0]:.2f}..{spectrum[1]:.2f}"
        )
        for line in event_lines(metrics.get("events")):
            print(line)

    def outputs(self, world: str, demo: bool) -> list[str]:
        picture = "forecast.gif" if world == "fields" else "hovmoller.png"  # a grid's animation, a ring's diagrams
        return ["metrics.json", "scores.png", "spectra.png", picture] + (["checkpoint/"] if demo else [])


def event_lines(events: dict[str, Any] | None) -> list[str]:
    """The fields world's chance events in a few lines: the model's numbers beside the oracle's."""
    if not events or "source_births" not in events:
        return []
    sb, wind = events["source_births"], events["wind"]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    at_birth = lambda r: None if r["strength_by_age"] is None else r["strength_by_age"][0]  # noqa: E731
    return [
        EVENTS_HEADING,
        f"  source births a step {model_and_oracle(lambda r: mean(r['rate']), sb)}, "
        f"emission at birth {model_and_oracle(at_birth, sb, '.2f')}; "
        f"wind turns a step {model_and_oracle(lambda r: r['turns_a_step'], wind)}",
    ]


#: The forecasting domain.
DOMAIN = Forecasting()

__all__ = ["DOMAIN", "WORLDS", "Forecasting", "event_lines"]
