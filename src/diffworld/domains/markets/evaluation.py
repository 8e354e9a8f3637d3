"""The market evaluation: a model's one-day-ahead scenarios backtested like a risk desk's.

`diffworld eval CKPT` on a one-asset market checkpoint (and the market demo on its own models)
forecasts every day of the test period [train_end, test_end) from the days before it: VaR and
ES at 1% and 5% with the Kupiec and Christoffersen tests and the Basel traffic light, fair CRPS
and pinball loss — for the model and, on the same days, GARCH(1,1)-normal, GJR-GARCH(1,1)-t,
250-day historical simulation and a normal climatology (`peers`); then the stylised facts of
free-running dreamed paths beside the real ones, and a fan chart of h-day scenarios.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld.checks import MAX_SEED, check_int, check_output_dir
from diffworld.diffusion.loss import LossConfig
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.domains.markets import risk
from diffworld.domains.markets.peers import GARCH_PEERS, peer_forecasts
from diffworld.domains.markets.pictures import plot_fan_chart, plot_var_backtest
from diffworld.domains.markets.scenarios import load_series, one_day_ahead, path_risk, pooled, scenarios
from diffworld.model.world_model import ModelConfig, WorldModel, read_config, resolve_pretrained
from diffworld.splits import MARKET_TEST_END, MARKET_TRAIN_END, MARKET_VALIDATION_START
from diffworld.train import TrainConfig

#: Settings chosen on the validation years 2013–14 with training on 1999–2012 (see docs/research-log.md).
MARKET_SAMPLER = SamplerConfig(method="heun", steps=16, sigma_ctx=0.002)


MARKET_LOSS = LossConfig(motion_weight=0.0, surprise_weight=0.0, ctx_sigma_max=0.01)


@dataclass(frozen=True)
class MarketDemoConfig:
    """Everything the market demo does."""

    #: The series forecast: a name in `arch.data` (sp500, nasdaq, wti) or a CSV of prices.
    series: str = "sp500"
    #: More series whose training-period days the model also learns from (never their test days).
    extra_series: tuple[str, ...] = ("nasdaq", "wti")
    #: The model trains on the days before `validation_start` and is early-stopped on the CRPS of
    #: its one-day-ahead forecasts of [validation_start, train_end); the peers fit on all days
    #: before `train_end`. The test period is [train_end, test_end). Splits are by time only.
    validation_start: str = MARKET_VALIDATION_START
    train_end: str = MARKET_TRAIN_END
    test_end: str = MARKET_TEST_END
    preset: str = "small"
    dit: dict[str, Any] = field(default_factory=lambda: {"width": 64, "frames": 32})
    train: TrainConfig = TrainConfig(steps=1500, batch_size=32, loss=MARKET_LOSS)
    sampler: SamplerConfig = MARKET_SAMPLER
    #: Validation every this many steps, with this many scenarios per validation day drawn with
    #: this many Heun steps (half the test's: ranking checkpoints needs less precision).
    validate_every: int = 250
    validation_members: int = 64
    validation_steps: int = 8
    #: Scenarios per day for the one-day-ahead backtest.
    members: int = 200
    #: Free-running dreamed paths, as long as the test period, for the stylised facts.
    free_paths: int = 32
    #: Days ahead of the fan chart and the h-day VaR, and the paths drawn for them.
    horizon: int = 10
    fan_paths: int = 1000
    #: Joint model of these series (empty: skip the multi-asset part).
    joint: tuple[str, ...] = ("sp500", "nasdaq")
    #: Models trained with seeds seed, seed + 1, …: their scenarios are pooled in equal shares
    #: (what one model overfits, the others rarely share). The joint model uses the first seed.
    seeds: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        ModelConfig.preset(self.preset, **self.dit)  # a bad preset or DiT setting fails here, before any work
        for name in ("validate_every", "validation_steps", "free_paths", "horizon", "fan_paths", "seeds"):
            check_int(f"market demo {name}", getattr(self, name), 1)
        for name in ("validation_members", "members"):  # fair CRPS needs two
            check_int(f"market demo {name}", getattr(self, name), 2)
        check_int("market demo seed", self.seed, 0, MAX_SEED)
        dates = {}
        for name in ("validation_start", "train_end", "test_end"):
            try:
                dates[name] = datetime.date.fromisoformat(getattr(self, name))
            except (TypeError, ValueError):
                raise ValueError(
                    f"market demo {name}: expected a date YYYY-MM-DD, found {getattr(self, name)!r}"
                ) from None
        if not dates["validation_start"] < dates["train_end"] < dates["test_end"]:
            raise ValueError(
                "market demo dates: expected validation_start < train_end < test_end, "
                f"found {self.validation_start}, {self.train_end}, {self.test_end}"
            )


def gjr_paths(returns: Any, test: np.ndarray, cfg: MarketDemoConfig, params: dict[str, float]) -> np.ndarray:
    """Free-running GJR-GARCH-t paths over the test period with the fitted parameters (the peer's stylised facts)."""
    from arch import arch_model

    am = arch_model(returns.iloc[: test[0]], mean="Constant", **GARCH_PEERS["gjr_garch_t"])
    p = np.array(list(params.values()))  # mean, volatility and distribution parameters, in arch's order
    sims = [am.simulate(p, len(test), burn=500, initial_value=None)["data"].to_numpy() for _ in range(cfg.free_paths)]
    return np.stack(sims)


def headline(
    table: dict[str, dict[str, Any]], facts: dict[str, dict[str, float]], joint: dict[str, Any] | None
) -> dict[str, Any]:
    """The acceptance numbers: Kupiec p at 1% and 5%, CRPS beside the GARCH peers, stylised-fact ratios."""
    m, g, t = table["model"], table["garch_normal"], table["gjr_garch_t"]
    head: dict[str, Any] = {
        "crps": {name: row["crps"] for name, row in table.items()},
        "kupiec_p": {name: {"1%": row["kupiec_p_1"], "5%": row["kupiec_p_5"]} for name, row in table.items()},
        "hits": {name: {"1%": row["hits_1"], "5%": row["hits_5"], "days": row["days"]} for name, row in table.items()},
        "model_crps_below_garch_normal": m["crps"] < g["crps"],
        "model_crps_over_gjr_garch_t": m["crps"] / t["crps"],
        "model_kupiec_passes": m["kupiec_p_1"] > 0.05 and m["kupiec_p_5"] > 0.05,
        "stylised_ratio_model_to_real": {k: facts["model"][k] / facts["real"][k] for k in ("kurtosis", "abs_acf")},
    }
    if joint is not None:
        head["energy_score"] = joint["energy_score"]
    return head


def backtest_markdown(table: dict[str, dict[str, Any]]) -> str:
    """The backtest as a markdown table, one row per forecaster."""
    cols = [("crps", "CRPS", "{:.4f}"), ("hits_1", "hits 1%", "{}"), ("kupiec_p_1", "Kupiec p 1%", "{:.3f}"),
            ("christoffersen_p_1", "Christoffersen p 1%", "{:.3f}"), ("traffic_light_1", "traffic light 1%", "{}"),
            ("hits_5", "hits 5%", "{}"), ("kupiec_p_5", "Kupiec p 5%", "{:.3f}"),
            ("christoffersen_p_5", "Christoffersen p 5%", "{:.3f}"),
            ("pinball_1", "pinball 1%", "{:.4f}"), ("pinball_5", "pinball 5%", "{:.4f}")]  # fmt: skip
    lines = ["| forecaster | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(fmt.format(row[key]) for key, _, fmt in cols) + " |")
    return "\n".join(lines) + "\n"


def backtest(
    models: list[WorldModel],
    main: Any,
    test: np.ndarray,
    cfg: MarketDemoConfig,
    gen: torch.Generator,
    out: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Score `models` (their scenarios pooled in equal shares) on the `test` days (indices into the
    dated returns `main`) beside the peers: the backtest table, stylised facts of free paths, the
    fitted peers' parameters and the h-day scenario risk; fan_chart.png and var_backtest.png in `out`."""
    import pandas as pd

    log(f"one-day-ahead forecasts of {len(test)} test days, {cfg.members} scenarios each")
    values = main.to_numpy()
    obs = values[test]
    ahead = pooled(
        lambda m, k: one_day_ahead(m, values, test, k, generator=gen), models, cfg.members, axis=1
    )  # [T, M, 1]
    forecasts: dict[str, risk.Forecast] = {"model": risk.EnsembleForecast(ahead[:, :, 0])}
    peers, params = peer_forecasts(main, test, pd.Timestamp(cfg.train_end))
    forecasts |= peers
    table = {name: risk.backtest(fc, obs) for name, fc in forecasts.items()}

    log(f"{cfg.free_paths} free-running paths of {len(test)} days for the stylised facts")
    before = values[: test[0]]
    free = pooled(lambda m, k: scenarios(m, before, len(test), k, generator=gen), models, cfg.free_paths, axis=0)[
        :, :, 0
    ]  # [P, T]
    facts = {"real": risk.stylised_facts(obs[None]), "model": risk.stylised_facts(free)}
    gjr = gjr_paths(main, test, cfg, params["gjr_garch_t"])
    facts["gjr_garch_t"] = risk.stylised_facts(gjr)

    fan_day = test[len(test) // 2]
    fan = pooled(
        lambda m, k: scenarios(m, values[:fan_day], cfg.horizon, k, generator=gen), models, cfg.fan_paths, axis=0
    )[:, :, 0]
    plot_fan_chart(
        main.index[fan_day - 60 : fan_day + cfg.horizon],
        values[fan_day - 60 : fan_day + cfg.horizon],
        fan,
        out / "fan_chart.png",
    )
    plot_var_backtest(
        main.index[test],
        obs,
        {n: forecasts[n].quantile(0.01) for n in ("model", "gjr_garch_t")},
        out / "var_backtest.png",
    )
    scenario_risk = {"day": str(main.index[fan_day].date()), **path_risk(fan)}

    return {"table": table, "facts": facts, "scenario_risk": scenario_risk, "params": params}


def evaluate_market_checkpoint(
    path: str | Path,
    out: str | Path,
    sampler: SamplerConfig | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    **overrides: Any,
) -> dict[str, Any]:
    """Backtest a trained one-asset market checkpoint on the test period as the demo backtests its models.

    `overrides` go to `MarketDemoConfig` (series, members, horizon, free_paths, fan_paths, seed,
    train_end, test_end, …); `sampler` replaces the checkpoint's. The checkpoint must record the
    first day it did not train on (data.validation_start, as the demo's do), on or before the test
    period's start. Writes `out`/metrics.json, backtest.md and the pictures; returns the metrics.
    """
    import arch  # noqa: F401  (the peers and the scores: missing packages fail here, before any work)
    import scoringrules  # noqa: F401

    out = check_output_dir(out, "evaluation output")  # before any computing
    if (out / "metrics.json").exists():
        raise FileExistsError(f"{out / 'metrics.json'} exists; choose another --out or remove it")
    config = read_config(resolve_pretrained(path))
    spec, data = config["spec"], config.get("data") or {}
    if spec["name"] != "market" or spec["frame_shape"][0] != 1:
        raise ValueError(
            f"{path}: expected a one-asset market model, found world {spec['name']!r} with frames {spec['frame_shape']}"
        )
    cfg = MarketDemoConfig(**overrides)
    trained_until = data.get("validation_start")
    if not isinstance(trained_until, str):
        raise ValueError(
            f"{path}: expected data.validation_start (the first day it did not train on) in its config, "
            f"found {trained_until!r}"
        )
    if datetime.date.fromisoformat(trained_until) > datetime.date.fromisoformat(cfg.train_end):
        raise ValueError(f"{path} trained on days up to {trained_until}, past the test period's start {cfg.train_end}")
    main = load_series(cfg.series)
    test = np.flatnonzero((main.index >= cfg.train_end) & (main.index < cfg.test_end))
    if len(test) < 20:
        raise ValueError(
            f"expected at least 20 test days of {cfg.series} in [{cfg.train_end}, {cfg.test_end}), found {len(test)}"
        )
    model = WorldModel.from_pretrained(path, device=device)
    if sampler is not None:
        model.sampler = sampler
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    gen = torch.Generator(device=model.device).manual_seed(cfg.seed)
    scored = backtest([model], main, test, cfg, gen, out, log)
    (out / "backtest.md").write_text(backtest_markdown(scored["table"]))
    metrics = {
        "world": "market",
        "checkpoint": str(path),
        "sampler": asdict(model.sampler),
        "series": cfg.series,
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "test_period": [str(main.index[test[0]].date()), str(main.index[test[-1]].date())],
        "headline": headline(scored["table"], scored["facts"], None),
        "backtest": scored["table"],
        "stylised_facts": scored["facts"],
        "scenario_risk": scored["scenario_risk"],
        "peer_parameters": scored["params"],
        "train_seconds": config.get("train_seconds"),
        "total_seconds": time.perf_counter() - t0,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


__all__ = [
    "MARKET_LOSS",
    "MARKET_SAMPLER",
    "MarketDemoConfig",
    "backtest",
    "backtest_markdown",
    "evaluate_market_checkpoint",
    "headline",
]
