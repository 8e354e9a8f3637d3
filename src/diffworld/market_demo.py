"""Market scenarios from a world model, and the demo that judges them like a risk desk.

`scenarios` draws N paths h days ahead from any day of a return history; `one_day_ahead`
forecasts each test day from the days before it (the backtest's forecasts). Both run the
model on volatility-scaled returns (`diffworld.worlds.market`) and multiply the dreamed z back
by each path's own volatility, which follows the dreamed returns day by day.

`diffworld demo --world market --out DIR` trains on a daily index (S&P 500 by default) and
two more daily series up to `validation_start`, early-stopped on its one-day-ahead CRPS over
[validation_start, train_end). Then, over the test period [train_end, test_end): one-day-ahead
VaR and ES at 1% and 5% with the Kupiec and Christoffersen tests and the Basel traffic light,
fair CRPS and pinball loss — for the model and, on the same days, GARCH(1,1)-normal, GJR-GARCH(1,1)-t, 250-day historical
simulation and a normal climatology; the stylised facts of free-running dreamed paths beside
the real ones; and joint scenarios of two indices scored with the energy score beside
independent per-asset GARCH.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld.checks import MAX_SEED, check_fits, check_int, check_output_dir
from diffworld.data.store import EpisodeStore
from diffworld.diffusion.loss import LossConfig
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.evaluate import risk
from diffworld.evaluate.market_peers import GARCH_PEERS, garch_forecast, peer_forecasts
from diffworld.model.world_model import ModelConfig, WorldModel
from diffworld.rollout import rollout
from diffworld.splits import MARKET_TEST_END, MARKET_TRAIN_END, MARKET_VALIDATION_START
from diffworld.train import TrainConfig, build_model, train
from diffworld.worlds.market import VolatilityState, load_returns, market_spec, read_csv, scale_returns

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
                raise ValueError(f"market demo {name}: expected a date YYYY-MM-DD, found {getattr(self, name)!r}") from None
        if not dates["validation_start"] < dates["train_end"] < dates["test_end"]:
            raise ValueError(f"market demo dates: expected validation_start < train_end < test_end, found {self.validation_start}, {self.train_end}, {self.test_end}")


def is_csv_path(series: str) -> bool:
    """Whether `series` names a CSV file rather than a series by name: it holds a path separator or ends in .csv.

    A bare word is always a name, even where a file or folder of that name exists (a run's own
    output folder, say), so a name is never read as a file."""
    return "/" in series or os.sep in series or series.lower().endswith(".csv")


def load_series(name: str) -> Any:
    """100·log-returns of an `arch.data` series by name, or of a CSV file of prices by path (`is_csv_path`)."""
    return read_csv(name) if is_csv_path(name) else load_returns(name)


def history_until(returns: Any, date: str | None, name: str = "the series", least: int = 100) -> Any:
    """The days of `returns` (a dated series) up to and including `date` (YYYY-MM-DD; None: all),
    at least `least` of them, or a one-line ValueError."""
    history = returns
    if date is not None:
        try:
            day = datetime.date.fromisoformat(date)
        except (TypeError, ValueError):
            raise ValueError(f"date: expected a day YYYY-MM-DD, found {date!r}") from None
        history = returns[returns.index.date <= day]
    if len(history) < least:
        raise ValueError(f"expected at least {least} days of {name} up to {date or 'its end'}, found {len(history)}")
    return history


def training_store(path: Path, series: list[Any], train_end: str) -> EpisodeStore:
    """A store of each series' scaled returns before `train_end` (one episode per series); series [T, V] frames."""
    frames, actions, names = [], [], None
    for s in series:
        part = s[s.index < train_end]
        values = part.to_numpy()
        values = values[:, None] if values.ndim == 1 else values
        z, f, _, _ = scale_returns(values)
        frames.append(z)
        actions.append(f)
        names = names or (tuple(part.columns) if values.shape[1] > 1 else ("return",))
    return EpisodeStore.from_arrays(path, market_spec(names), frames, actions, meta={"train_end": train_end})


def one_day_ahead(
    model: WorldModel,
    returns: np.ndarray,
    days: np.ndarray,
    members: int,
    sampler: SamplerConfig | None = None,
    generator: torch.Generator | None = None,
    chunk: int = 128,
) -> np.ndarray:
    """Scenarios [len(days), members, V] of the returns on `days` (indices into `returns` [T, V]), each from the days before it."""
    r = np.asarray(returns, np.float64)
    r = r[:, None] if r.ndim == 1 else r
    z, f, sigma, _ = scale_returns(r)
    rows = np.asarray(days) - (len(r) - len(z))  # frame index of each day
    context = model.frames - 1
    if rows.min() < context:
        raise ValueError(f"one_day_ahead needs {context} scaled days before the first forecast day, found {rows.min()}")
    out = []
    for a in range(0, len(rows), chunk):
        idx = rows[a : a + chunk]
        ctx = torch.from_numpy(np.stack([z[i - context : i] for i in idx]))  # [B, L, V, 1]
        ctx_a = torch.from_numpy(np.stack([f[i - context : i] for i in idx]))  # [B, L, V·2]
        act = torch.from_numpy(f[idx][:, None])  # [B, 1, V·2]
        dz = rollout(model, ctx, act, n_samples=members, context_actions=ctx_a, sampler=sampler, generator=generator)
        out.append(dz[:, :, 0, :, 0].cpu().numpy() * sigma[idx][:, None])  # [B, M, V]
    return np.concatenate(out)


def scenarios(
    model: WorldModel,
    history: np.ndarray,
    horizon: int,
    n: int,
    sampler: SamplerConfig | None = None,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """`n` return paths [n, horizon, V] for the days after `history` [T, V] (or [T]).

    Each path's volatility follows its own dreamed returns: the features leading into day h + 1
    come from the averages updated with the path's day h.
    """
    check_int("scenarios horizon", horizon, 1)
    check_int("scenarios n", n, 1)
    r = np.asarray(history, np.float64)
    r = r[:, None] if r.ndim == 1 else r
    check_fits(8 * n * horizon * r.shape[1], f"{n} scenario paths of {horizon} days")  # the paths, float64 [n, H, V]
    z, f, _, states = scale_returns(r)
    context = min(model.frames - 1, len(z))
    last = states[-1].update(r[-1])
    state = VolatilityState(np.repeat(last.fast[None], n, 0), np.repeat(last.slow[None], n, 0))  # [n, V]
    scales = []

    def policy(h: int, previous: torch.Tensor | None) -> torch.Tensor:
        nonlocal state
        if previous is not None:
            state = state.update(previous[:, :, 0].double().cpu().numpy() * scales[-1])
        scales.append(state.scale())
        return torch.from_numpy(state.features())

    ctx = torch.from_numpy(z[None, -context:])
    ctx_a = torch.from_numpy(f[None, -context:])
    dz = rollout(model, ctx, n_samples=n, context_actions=ctx_a, horizon=horizon, sampler=sampler, generator=generator, policy=policy)
    return dz[0, :, :, :, 0].cpu().numpy() * np.stack(scales, axis=1)  # [n, H, V]


def pooled(draw: Callable[[WorldModel, int], np.ndarray], models: list[WorldModel], n: int, axis: int) -> np.ndarray:
    """`draw(model, k)` for each model with k its share of `n` (shares differ by at most one), joined along `axis`."""
    shares = [len(part) for part in np.array_split(np.arange(n), len(models))]
    return np.concatenate([draw(m, k) for m, k in zip(models, shares) if k], axis=axis)


def path_risk(paths: np.ndarray, levels: tuple[float, ...] = risk.LEVELS) -> dict[str, float]:
    """One-day and h-day VaR and ES (returns, so negative) of scenario paths [n, H] of one asset."""
    out = {}
    for name, x in (("1d", paths[:, 0]), (f"{paths.shape[1]}d", paths.sum(axis=1))):
        for alpha in levels:
            q = float(np.quantile(x, alpha))
            out[f"var_{round(alpha * 100)}_{name}"] = q
            out[f"es_{round(alpha * 100)}_{name}"] = float(x[x <= q].mean())
    return out


def train_market_model(
    store: EpisodeStore, returns: np.ndarray, validation: np.ndarray, out: Path, cfg: MarketDemoConfig, progress: bool,
    log: Callable[[str], None], seed: int,
) -> tuple[WorldModel, dict[str, float]]:
    """Train the demo's model on `store` into `out`, early-stopped on its forecasts of `returns` [T, V] on the `validation` days.

    The score is the fair CRPS (one asset) or the energy score (several) of `validation_members`
    one-day-ahead scenarios; the best weights are returned (with their step and score) and saved in `out/best/`.
    """
    import scoringrules as sr

    model = build_model(store.spec, store, ModelConfig.preset(cfg.preset, **cfg.dit), cfg.sampler, seed=seed)
    log(f"market model (seed {seed}): {model.num_parameters() / 1e6:.2f}M parameters on {store.num_frames} days of {len(store)} series")
    r = returns.reshape(len(returns), -1)
    obs = r[validation]  # [T, V]
    sampler = replace(cfg.sampler, steps=cfg.validation_steps)

    def validate(m: WorldModel) -> float:
        fc = one_day_ahead(m, r, validation, cfg.validation_members, sampler, torch.Generator(device=m.device).manual_seed(cfg.seed + 1))  # [T, M, V]
        if r.shape[1] == 1:
            return float(np.mean(sr.crps_ensemble(obs[:, 0], fc[:, :, 0], estimator="fair")))
        return float(np.mean(sr.es_ensemble(obs, fc)))

    extra = {"data": {"store": str(store.path), "world": "market", "validation_start": cfg.validation_start, "frames": store.num_frames}}
    result = train(model, store, replace(cfg.train, seed=seed), out, progress=progress, extra_config=extra, validate=validate, validate_every=cfg.validate_every)
    best = result.best
    assert best is not None  # validate was given
    log(f"early stopping: best validation score {best['validation']:.4f} at step {best['step']} of {result.steps}")
    return result.model, best


def run_market_demo(out: str | Path, cfg: MarketDemoConfig = MarketDemoConfig(), progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, backtest against the peers, check stylised facts and joint scenarios; write metrics.json and pictures into `out`."""
    import pandas as pd

    from diffworld.evaluate.pictures import plot_fan_chart, plot_var_backtest

    import arch  # noqa: F401  (the peers and the scores: missing packages fail here, before any work)
    import scoringrules  # noqa: F401

    out = check_output_dir(out, "market demo output")
    t0 = time.perf_counter()
    gen = torch.Generator(device=cfg.train.device).manual_seed(cfg.seed)  # the models' draws, on their device
    # Every series the run needs, read now: a bad name or file fails before any training.
    loaded = {name: load_series(name) for name in dict.fromkeys([cfg.series, *cfg.extra_series, *cfg.joint])}
    main = loaded[cfg.series]
    extra = [loaded[s] for s in cfg.extra_series]
    test = np.flatnonzero((main.index >= cfg.train_end) & (main.index < cfg.test_end))
    validation = np.flatnonzero((main.index >= cfg.validation_start) & (main.index < cfg.train_end))
    if len(test) < 20 or len(validation) < 20:
        raise ValueError(
            f"expected at least 20 validation days in [{cfg.validation_start}, {cfg.train_end}) and 20 test days in "
            f"[{cfg.train_end}, {cfg.test_end}), found {len(validation)} and {len(test)}"
        )
    store = training_store(out / "train.zarr", [main, *extra], cfg.validation_start)
    trained = [
        train_market_model(store, main.to_numpy(), validation, out / (f"seed{k}" if k else ""), cfg, progress, log, cfg.seed + k)
        for k in range(cfg.seeds)
    ]
    models = [m for m, _ in trained]

    log(f"one-day-ahead forecasts of {len(test)} test days, {cfg.members} scenarios each")
    values = main.to_numpy()
    obs = values[test]
    ahead = pooled(lambda m, k: one_day_ahead(m, values, test, k, generator=gen), models, cfg.members, axis=1)  # [T, M, 1]
    forecasts: dict[str, risk.Forecast] = {"model": risk.EnsembleForecast(ahead[:, :, 0])}
    peers, params = peer_forecasts(main, test, pd.Timestamp(cfg.train_end))
    forecasts |= peers
    table = {name: risk.backtest(fc, obs) for name, fc in forecasts.items()}

    log(f"{cfg.free_paths} free-running paths of {len(test)} days for the stylised facts")
    before = values[: test[0]]
    free = pooled(lambda m, k: scenarios(m, before, len(test), k, generator=gen), models, cfg.free_paths, axis=0)[:, :, 0]  # [P, T]
    facts = {"real": risk.stylised_facts(obs[None]), "model": risk.stylised_facts(free)}
    gjr = _gjr_paths(main, test, cfg, params["gjr_garch_t"])
    facts["gjr_garch_t"] = risk.stylised_facts(gjr)

    fan_day = test[len(test) // 2]
    fan = pooled(lambda m, k: scenarios(m, values[:fan_day], cfg.horizon, k, generator=gen), models, cfg.fan_paths, axis=0)[:, :, 0]
    plot_fan_chart(main.index[fan_day - 60 : fan_day + cfg.horizon], values[fan_day - 60 : fan_day + cfg.horizon], fan, out / "fan_chart.png")
    plot_var_backtest(main.index[test], obs, {n: forecasts[n].quantile(0.01) for n in ("model", "gjr_garch_t")}, out / "var_backtest.png")
    scenario_risk = {"day": str(main.index[fan_day].date()), **path_risk(fan)}

    joint = _joint_scores(cfg, {name: loaded[name] for name in cfg.joint}, out, progress, log, gen) if cfg.joint else None
    headline = _headline(table, facts, joint)
    (out / "backtest.md").write_text(backtest_markdown(table))
    metrics = {
        "world": "market",
        "series": cfg.series,
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "test_period": [str(main.index[test[0]].date()), str(main.index[test[-1]].date())],
        "validation_period": [str(main.index[validation[0]].date()), str(main.index[validation[-1]].date())],
        "early_stopping": [best for _, best in trained],
        "headline": headline,
        "backtest": table,
        "stylised_facts": facts,
        "scenario_risk": scenario_risk,
        "peer_parameters": params,
        "joint": joint,
        "total_seconds": time.perf_counter() - t0,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _gjr_paths(returns: Any, test: np.ndarray, cfg: MarketDemoConfig, params: dict[str, float]) -> np.ndarray:
    """Free-running GJR-GARCH-t paths over the test period with the fitted parameters (the peer's stylised facts)."""
    from arch import arch_model

    am = arch_model(returns.iloc[: test[0]], mean="Constant", **GARCH_PEERS["gjr_garch_t"])
    p = np.array(list(params.values()))  # mean, volatility and distribution parameters, in arch's order
    sims = [am.simulate(p, len(test), burn=500, initial_value=None)["data"].to_numpy() for _ in range(cfg.free_paths)]
    return np.stack(sims)


def _joint_scores(
    cfg: MarketDemoConfig, series: dict[str, Any], out: Path, progress: bool, log: Callable[[str], None], gen: torch.Generator
) -> dict[str, Any]:
    """Joint one-day-ahead scenarios of `series` (`cfg.joint`'s, loaded) by one model, energy score beside independent GARCH-normal."""
    import pandas as pd
    import scoringrules as sr

    frame = pd.concat(series, axis=1, join="inner")
    log(f"joint model of {', '.join(cfg.joint)} ({len(frame)} common days)")
    store = training_store(out / "joint.zarr", [frame], cfg.validation_start)
    validation = np.flatnonzero((frame.index >= cfg.validation_start) & (frame.index < cfg.train_end))
    model, best = train_market_model(store, frame.to_numpy(), validation, out / "joint", cfg, progress, log, cfg.seed)
    test = np.flatnonzero((frame.index >= cfg.train_end) & (frame.index < cfg.test_end))
    obs = frame.to_numpy()[test]  # [T, V]
    joint = one_day_ahead(model, frame.to_numpy(), test, cfg.members, generator=gen)  # [T, M, V]
    rng = np.random.default_rng(cfg.seed)
    independent = np.stack(
        [garch_forecast(frame[name], test, pd.Timestamp(cfg.train_end), GARCH_PEERS["garch_normal"])[0].sample(cfg.members, rng) for name in cfg.joint],
        axis=-1,
    )  # [T, M, V]
    corr_real = float(np.corrcoef(obs.T)[0, 1]) if obs.shape[1] > 1 else 1.0
    corr_model = float(np.mean([np.corrcoef(s.T)[0, 1] for s in joint])) if obs.shape[1] > 1 else 1.0
    return {
        "series": list(cfg.joint),
        "days": len(test),
        "early_stopping": best,
        "energy_score": {
            "model": float(np.mean(sr.es_ensemble(obs, joint))),
            "independent_garch_normal": float(np.mean(sr.es_ensemble(obs, independent))),
        },
        "correlation": {"real": corr_real, "model_mean": corr_model},
    }


def _headline(table: dict[str, dict[str, Any]], facts: dict[str, dict[str, float]], joint: dict[str, Any] | None) -> dict[str, Any]:
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
            ("hits_5", "hits 5%", "{}"), ("kupiec_p_5", "Kupiec p 5%", "{:.3f}"), ("christoffersen_p_5", "Christoffersen p 5%", "{:.3f}"),
            ("pinball_1", "pinball 1%", "{:.4f}"), ("pinball_5", "pinball 5%", "{:.4f}")]  # fmt: skip
    lines = ["| forecaster | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(fmt.format(row[key]) for key, _, fmt in cols) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["MarketDemoConfig", "one_day_ahead", "path_risk", "run_market_demo", "scenarios", "training_store"]
