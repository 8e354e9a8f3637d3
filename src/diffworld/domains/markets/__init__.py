"""Markets (daily returns): scenarios from a world model, judged like a risk desk's.

- `evaluation`: the protocol `diffworld eval` runs on a one-asset checkpoint — a VaR / ES backtest
  of the test period beside GARCH peers, stylised facts of free paths, a fan chart;
- `scenarios`: N return paths h days ahead, one-day-ahead forecasts (`diffworld scenarios`);
- `risk`: VaR, ES, Kupiec and Christoffersen tests, the traffic light, stylised facts;
- `peers`: GARCH(1,1), GJR-GARCH-t, historical simulation and climatology on the same days;
- `demo`: train, backtest, joint scenarios (`diffworld demo --world market`);
- `pictures`: the fan chart and the VaR backtest.
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


class Markets:
    """The markets domain (`diffworld.domains.base.Domain`)."""

    name = "markets"
    label = "market"
    demo_worlds = ("market",)
    eval_options = frozenset({"members", "horizon", "series"})
    demo_options = frozenset({"steps", "preset", "members", "batch_size", "series"})

    def serves(self, world: str) -> bool:
        return world == "market"

    def worlds(self) -> list[tuple[str, WorldSpec | None]]:
        from diffworld.worlds.market import market_spec

        return [("market", market_spec(("return",)))]  # one asset; a joint model has one variable per asset

    def evaluate(self, checkpoint: str | Path, out: Path, options: EvalOptions) -> dict[str, Any]:
        from diffworld.domains.markets.evaluation import evaluate_market_checkpoint

        sizes = options.sizes("members", "horizon", "series")
        sampler = checkpoint_sampler(checkpoint, options.sampler)
        return evaluate_market_checkpoint(
            checkpoint, out, sampler, device=options.device, log=options.log, seed=options.seed, **sizes
        )

    def demo(self, world: str, out: Path, options: DemoOptions) -> dict[str, Any]:
        from diffworld.domains.markets.demo import run_market_demo
        from diffworld.domains.markets.evaluation import MarketDemoConfig

        refuse_existing_demo(out)
        cfg = MarketDemoConfig()
        cfg = replace(
            cfg,
            preset=given(options.preset, cfg.preset),
            train=with_training(cfg.train, options),
            members=given(options.members, cfg.members),
            series=given(options.series, cfg.series),
        )
        return run_market_demo(out, cfg, log=options.log)

    def print_summary(self, metrics: dict[str, Any]) -> None:
        """CRPS, VaR hits and Kupiec p per forecaster over the test period; the model against GJR-GARCH-t."""
        head = metrics["headline"]
        print(f"test period {metrics['test_period'][0]}..{metrics['test_period'][1]}, one day ahead:")
        for name, c in head["crps"].items():
            k, h = head["kupiec_p"][name], head["hits"][name]
            print(
                f"  {name:>16}: CRPS {c:.4f}  hits 1% {h['1%']:>3} (Kupiec p {k['1%']:.3f})  "
                f"hits 5% {h['5%']:>3} (Kupiec p {k['5%']:.3f})"
            )
        ratio = head["stylised_ratio_model_to_real"]
        print(
            f"model CRPS / GJR-GARCH-t: {head['model_crps_over_gjr_garch_t']:.4f}; stylised facts model/real: "
            f"kurtosis {ratio['kurtosis']:.2f}, |r| autocorrelation {ratio['abs_acf']:.2f}"
        )

    def outputs(self, world: str, demo: bool) -> list[str]:
        return ["metrics.json", "backtest.md", "fan_chart.png", "var_backtest.png"] + (["checkpoint/"] if demo else [])


#: The markets domain.
DOMAIN = Markets()

__all__ = ["DOMAIN", "Markets"]
