"""Games (pong, MinAtar, Gymnasium and ALE games): held-out episodes, decoded state, chance events, agents.

- `evaluation`: the protocol `diffworld eval` runs on a checkpoint — held-out episodes beside
  persistence, climatology and the oracle, per horizon; births, pong's serve, action fidelity;
- `events`: pong's serve as a drawn event;
- `demo`: collect, train, evaluate, animate (`diffworld demo`, pong by default);
- `pictures`: scores against horizon, dreams beside the true game (`diffworld rollout`);
- `agents`: reward and end heads for a checkpoint, PPO in its dream (`diffworld heads`, `agent`).
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


class Games:
    """The games domain (`diffworld.domains.base.Domain`)."""

    name = "games"
    label = "game worlds"
    demo_worlds = ("pong",)
    eval_options = frozenset({"cases", "members", "horizon", "seed_offset", "policy", "world"})
    demo_options = frozenset({"steps", "preset", "episodes", "cases", "members", "batch_size"})

    def serves(self, world: str) -> bool:
        from diffworld.worlds import ADAPTERS

        prefix, colon, _ = world.partition(":")  # an adapter's game: minatar:<game>, gym:<env id>, ale:<Game>
        return world == "pong" or bool(colon) and prefix in ADAPTERS

    def worlds(self) -> list[tuple[str, WorldSpec | None]]:
        from diffworld.worlds import make_world

        adapted = ["minatar:<game>", "gym:<env id>", "ale:<Game>"]  # each game has its own spec
        return [("pong", make_world("pong").spec)] + [(name, None) for name in adapted]

    def evaluate(self, checkpoint: str | Path, out: Path, options: EvalOptions) -> dict[str, Any]:
        from diffworld.domains.games.evaluation import EvalConfig, evaluate_checkpoint

        sampler = checkpoint_sampler(checkpoint, options.sampler)
        sizes = options.sizes("cases", "members", "horizon")
        cfg = EvalConfig(seed=options.seed, seed_offset=given(options.seed_offset, 0), **sizes)
        return evaluate_checkpoint(
            checkpoint, out, cfg, sampler, options.device, log=options.log, policy=options.policy, world=options.world
        )

    def demo(self, world: str, out: Path, options: DemoOptions) -> dict[str, Any]:
        from diffworld.domains.games.demo import DemoConfig, run_demo

        cfg = DemoConfig(world=world)
        scoring = replace(
            cfg.eval, cases=given(options.cases, cfg.eval.cases), members=given(options.members, cfg.eval.members)
        )
        cfg = replace(
            cfg,
            preset=given(options.preset, cfg.preset),
            episodes=given(options.episodes, cfg.episodes),
            train=with_training(cfg.train, options),
            eval=scoring,
        )
        refuse_existing_demo(out)
        return run_demo(out, cfg, log=options.log)

    def print_summary(self, metrics: dict[str, Any]) -> None:
        """A table of the headline numbers of an evaluation, then skill, validity, fidelity, speed and chance events."""
        from rich.console import Console
        from rich.table import Table

        console = Console()
        columns = [  # (summary key, heading, format): only those the evaluation produced
            ("state_crps", "state CRPS (mean over h)", ".3f"),
            ("cell_f1", "cell F1 (mean over h)", ".3f"),
            ("pixel_crps", "pixel CRPS", ".4f"),
        ]
        summary = metrics["summary"]
        columns = [c for c in columns if any(c[0] in s for s in summary.values())]
        table = Table("forecaster", *(c[1] for c in columns), title=f"{metrics['world']}: held-out")
        for name, s in summary.items():
            table.add_row(name, *(format(s.get(key, float("nan")), fmt) for key, _, fmt in columns))
        console.print(table)
        if "state_skill_vs_oracle" in metrics:
            skill = metrics["state_skill_vs_oracle"]
            console.print(
                f"state skill vs oracle by horizon: min {min(skill):.2f}, " + " ".join(f"{x:.2f}" for x in skill)
            )
        if "cell_f1_skill_vs_oracle" in metrics:
            skill = metrics["cell_f1_skill_vs_oracle"]
            console.print(
                f"cell-F1 skill vs oracle by horizon: min {min(skill):.2f}, " + " ".join(f"{x:.2f}" for x in skill)
            )
        for key in ("valid_frac", "action_fidelity", "rollout_fps", "evaluations_per_frame"):
            if key in metrics:
                console.print(f"{key}: {metrics[key]:.3f}")
        for line in event_lines(metrics.get("events")):
            console.print(line, highlight=False, soft_wrap=True)

    def outputs(self, world: str, demo: bool) -> list[str]:
        return ["metrics.json", "horizon.png"] + (["rollout.gif", "checkpoint/"] if demo else [])


def event_lines(events: dict[str, Any] | None) -> list[str]:
    """A game's chance events in a few lines (births, pong's serve): the model's numbers beside the oracle's."""
    if not events or not ({"births", "serve"} & set(events)):
        return []
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    lines = [EVENTS_HEADING]
    if "births" in events:
        b = events["births"]
        lines.append(
            f"  births a frame, mean over h = 1..{len(b['model']['rate'])}: "
            f"{model_and_oracle(lambda r: mean(r['rate']), b)} "
            f"(h = 1: {model_and_oracle(lambda r: r['rate'][0], b)}; persistence {mean(b['persistence']['rate']):.3f})"
        )
    if "serve" in events:
        sv = events["serve"]
        lines.append(
            f"  serve, {sv['model']['frames']} draws from {sv['moments']} moments: "
            f"valid ball {model_and_oracle(lambda r: r['served'], sv)}, "
            f"no ball {model_and_oracle(lambda r: r['no_ball'], sv)}, "
            f"rows vs uniform chi-square p {model_and_oracle(lambda r: r['p'], sv)}"
        )
    if "first_move" in events:
        fm = events["first_move"]
        lines.append(
            f"  served ball's first move, {fm['model']['frames']} draws from {fm['moments']} moments: "
            f"valid {model_and_oracle(lambda r: r['valid'], fm)}, "
            f"directions vs uniform chi-square p {model_and_oracle(lambda r: r['p'], fm)}"
        )
    if "free_dreams" in events:
        fd = events["free_dreams"]
        lines.append(
            f"  free dreams, {fd['dreams']} x {fd['frames']} frames under random actions: "
            f"one ball {fd['one_ball']:.3f}, no ball {fd['no_ball']:.3f}, valid {fd['valid']:.3f}, "
            f"first invalid frame (median) {sorted(fd['first_invalid'])[len(fd['first_invalid']) // 2]}"
        )
    return lines


#: The games domain.
DOMAIN = Games()

__all__ = ["DOMAIN", "Games", "event_lines"]
