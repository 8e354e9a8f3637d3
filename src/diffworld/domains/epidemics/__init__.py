"""Epidemics on networks (the cascade world): who gets infected, how big the epidemic gets, who is a hub.

- `evaluation`: the protocol `diffworld eval` runs on a checkpoint — held-out epidemics beside the
  Monte-Carlo oracle, persistence and mean field; the hub ranking;
- `scores`: node Brier scores, epidemic curves, the oracle, mean field, hub ranking;
- `demo`: collect, train, evaluate (`diffworld demo --world cascade`);
- `pictures`: the spread on the graph, the curves, the hubs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from diffworld.domains.base import (
    DemoOptions,
    EvalOptions,
    checkpoint_sampler,
    given,
    refuse_existing_demo,
    with_training,
)
from diffworld.spec import WorldSpec


class Epidemics:
    """The epidemics domain (`diffworld.domains.base.Domain`)."""

    name = "epidemics"
    label = "cascade"
    demo_worlds = ("cascade",)
    eval_options = frozenset({"cases", "members", "horizon", "seed_offset", "data"})
    demo_options = frozenset({"steps", "preset", "episodes", "cases", "members", "batch_size", "hub_members"})

    def serves(self, world: str) -> bool:
        return world == "cascade"

    def worlds(self) -> list[tuple[str, WorldSpec | None]]:
        from diffworld.worlds import make_world

        return [("cascade", make_world("cascade").spec)]

    def evaluate(self, checkpoint: str | Path, out: Path, options: EvalOptions) -> dict[str, Any]:
        from diffworld.domains.epidemics.evaluation import CascadeDemoConfig, evaluate_cascade_checkpoint
        from diffworld.domains.epidemics.observed import evaluate_observed_checkpoint, trained_on_observed

        if trained_on_observed(checkpoint) or options.data is not None:
            sampler = checkpoint_sampler(checkpoint, options.sampler)
            sizes = options.sizes("cases", "members", "horizon")
            return evaluate_observed_checkpoint(
                checkpoint, options.data, out, sampler, device=options.device, seed=options.seed, **sizes
            )
        sizes = options.sizes("cases", "members", "horizon", "seed_offset")
        if options.members is not None:  # few members: as few hub dreams (the demo's rule)
            sizes["hub_members"] = min(options.members, CascadeDemoConfig().hub_members)
        sampler = checkpoint_sampler(checkpoint, options.sampler)
        return evaluate_cascade_checkpoint(
            checkpoint, out, sampler, device=options.device, log=options.log, seed=options.seed, **sizes
        )

    def demo(self, world: str, out: Path, options: DemoOptions) -> dict[str, Any]:
        from diffworld.domains.epidemics.demo import run_cascade_demo
        from diffworld.domains.epidemics.evaluation import CascadeDemoConfig

        refuse_existing_demo(out)
        cfg = CascadeDemoConfig()
        hub_members = given(options.hub_members, min(given(options.members, cfg.hub_members), cfg.hub_members))
        cfg = replace(
            cfg,
            preset=given(options.preset, cfg.preset),
            episodes=given(options.episodes, cfg.episodes),
            train=with_training(cfg.train, options),
            cases=given(options.cases, cfg.cases),
            members=given(options.members, cfg.members),
            hub_members=hub_members,
        )
        return run_cascade_demo(out, cfg, log=options.log)

    def print_summary(self, metrics: dict[str, Any]) -> None:
        """Node Brier scores beside the oracle's, the infected curve's skill by step, the hubs' Kendall τ."""
        head = metrics["headline"]
        if "node_brier_ratio_to_fitted_ic" in head:  # observed cascades: against the fitted models
            print("node Brier: " + ", ".join(f"{k} {v:.4f}" for k, v in head["node_brier"].items()))
            print(f"model / fitted independent cascade: {head['node_brier_ratio_to_fitted_ic']:.2f}")
            return
        print(
            f"node Brier: model {head['node_brier_model']:.4f}, oracle {head['node_brier_oracle']:.4f} "
            f"(ratio {head['node_brier_ratio']:.2f})"
        )
        print(
            "infected-curve skill vs oracle by step: " + " ".join(f"{x:.2f}" for x in head["infected_skill_vs_oracle"])
        )
        if "reach_crps" in head:
            print("reach CRPS (mean over steps): " + ", ".join(f"{k} {v:.4f}" for k, v in head["reach_crps"].items()))
        if "hub_kendall_tau" in head:
            print("hub Kendall tau: " + ", ".join(f"{k} {v:.2f}" for k, v in head["hub_kendall_tau"].items()))
        if "hub_top_overlap" in head:
            print(
                f"true top {head['hub_top_k']} spreaders found: "
                + ", ".join(f"{k} {v:.2f}" for k, v in head["hub_top_overlap"].items())
            )
        top = (metrics.get("hub") or {}).get("top_spreaders")
        if top:
            print("top spreaders by dreamed reach: " + ", ".join(f"{t['node']} {t['model']:.1f}" for t in top[:5]))

    def outputs(self, world: str, demo: bool) -> list[str]:
        return ["metrics.json", "spread.gif", "curves.png", "hubs.png"] + (["checkpoint/"] if demo else [])


#: The epidemics domain.
DOMAIN = Epidemics()

__all__ = ["DOMAIN", "Epidemics"]
