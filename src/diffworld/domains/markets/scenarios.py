"""Market scenarios from a world model: N return paths h days ahead from any day, and one-day-ahead forecasts.

`scenarios` draws N paths h days ahead from any day of a return history; `one_day_ahead`
forecasts each test day from the days before it (the backtest's forecasts). Both run the
model on volatility-scaled returns (`diffworld.worlds.market`) and multiply the dreamed z back
by each path's own volatility, which follows the dreamed returns day by day.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld.checks import check_fits, check_int
from diffworld.data.store import EpisodeStore
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.domains.markets import risk
from diffworld.model.world_model import WorldModel
from diffworld.rollout import rollout
from diffworld.worlds.market import VolatilityState, load_returns, market_spec, read_csv, scale_returns


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
    """Scenarios [len(days), members, V] of the returns on `days` (indices into `returns` [T, V]), each from the days
    before it."""
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
    dz = rollout(
        model,
        ctx,
        n_samples=n,
        context_actions=ctx_a,
        horizon=horizon,
        sampler=sampler,
        generator=generator,
        policy=policy,
    )
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


def checkpoint_scenarios(
    checkpoint: str | Path, series: str, date: str | None, horizon: int, n: int, seed: int = 0
) -> tuple[np.ndarray, Any]:
    """`n` return paths [n, horizon] of a one-asset market checkpoint for the days after `date` of
    `series` (its last day if None), and the history they continue (a dated series)."""
    model = WorldModel.from_pretrained(checkpoint)
    if model.spec.name != "market" or model.spec.frame_shape[0] != 1:
        raise ValueError(
            f"{checkpoint}: expected a one-asset market model, "
            f"found world {model.spec.name!r} with frames {list(model.spec.frame_shape)}"
        )
    history = history_until(load_series(series), date, series)
    paths = scenarios(model, history.to_numpy(), horizon, n, generator=torch.Generator().manual_seed(seed))[:, :, 0]
    return paths, history


__all__ = [
    "checkpoint_scenarios",
    "history_until",
    "is_csv_path",
    "load_series",
    "one_day_ahead",
    "path_risk",
    "pooled",
    "scenarios",
    "training_store",
]
