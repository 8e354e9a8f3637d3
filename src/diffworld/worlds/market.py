"""Markets: daily returns as frames a world model can learn, real or simulated.

Returns are 100·log-returns, r_t = 100·ln(P_t / P_{t−1}). The model never sees a raw return:
each day's return is divided by a volatility that is known before the day starts, an
exponentially weighted (RiskMetrics, λ = 0.94) moving average of past squared returns,

    σ²_t = λ·σ²_{t−1} + (1 − λ)·r²_{t−1},     z_t = r_t / σ_t,

so the frame is z_t (one variable per asset, frames (V, 1)). What is known before day t rides
along as the frame's continuous "action" (its exogenous features, read by adaLN like any action):
per asset, ln(σ_t / σ^slow_t) (is volatility rising?) and ln σ^slow_t (its level), with σ^slow
the same average at λ = 0.99. Scaling by a known volatility keeps the model from memorising
the calendar of a few thousand days (the level of volatility is where the days differ most)
and leaves it the part GARCH models get wrong: the shape of the tails, the asymmetry, and how
volatility reacts to a shock beyond the moving average.

A multi-day scenario feeds each dreamed return back into both averages (`VolatilityState`), so
the features of day t+2 follow the dreamed day t+1 exactly as they would follow a real one.

Data: the daily index series shipped inside the `arch` package (`sp500`, `nasdaq`, the WTI oil
price `wti`), or any CSV of prices or returns (`read_csv`). `GarchSimulator` is a synthetic
market (GJR-GARCH with Student-t shocks and a calm / turbulent regime switch) that can be
branched from any day, so a forecast made on it has an oracle.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffworld.spec import ActionSpace, WorldSpec

#: The daily price series shipped inside `arch.data`: name -> (module, column).
ARCH_SERIES: dict[str, tuple[str, str]] = {
    "sp500": ("arch.data.sp500", "Adj Close"),
    "nasdaq": ("arch.data.nasdaq", "Adj Close"),
    "wti": ("arch.data.wti", "DCOILWTICO"),
}
#: The monthly Fama–French factors in `arch.data.frenchdata` (simple returns in percent): name -> column.
FRENCH_SERIES: dict[str, str] = {"ff_market": "Mkt-RF", "ff_smb": "SMB", "ff_hml": "HML"}
#: Decay of the fast (RiskMetrics) and slow volatility averages.
LAMBDA_FAST, LAMBDA_SLOW = 0.94, 0.99
#: Days used to start the averages (the first frame of an episode comes after them).
WARMUP = 60
#: Features per asset carried as the frame's action.
FEATURES = 2


# --------------------------------------------------------------------------------------------
#                                    Returns from data
# --------------------------------------------------------------------------------------------


def load_returns(name: str) -> Any:
    """100·log-returns of a series shipped in `arch.data` (ARCH_SERIES daily, FRENCH_SERIES monthly) as a pandas
    Series."""
    import importlib

    if name in FRENCH_SERIES:
        return french_returns(name)
    if name not in ARCH_SERIES:
        known = ", ".join([*ARCH_SERIES, *FRENCH_SERIES])
        raise ValueError(
            f"unknown market series {name!r}; expected one of: {known} "
            "(or the path of a CSV file, holding a / or ending in .csv)"
        )
    module, column = ARCH_SERIES[name]
    prices = importlib.import_module(module).load()[column]
    prices = prices[prices > 0].dropna()  # WTI has holidays as NaN; a price must be positive for a log
    returns = 100.0 * np.log(prices).diff().dropna()
    returns.name = name
    return returns


def french_returns(name: str) -> Any:
    """A monthly Fama–French factor from `arch.data.frenchdata` as 100·log-returns, dated at month end.

    The shipped file's dates are integers YYYYMM that pandas reads as nanoseconds after 1970
    (192607 -> 1970-01-01 00:00:00.000192607); they are rebuilt here from those integers.
    """
    import arch.data.frenchdata
    import pandas as pd

    table = arch.data.frenchdata.load()
    stamp = np.asarray(table.index.asi8 if isinstance(table.index, pd.DatetimeIndex) else table.index, dtype=np.int64)
    years, months = stamp // 100, stamp % 100
    if not ((months >= 1) & (months <= 12) & (years > 1900)).all():
        raise ValueError(f"arch.data.frenchdata: expected YYYYMM dates, found {stamp[:3].tolist()}")
    dates = pd.to_datetime({"year": years, "month": months, "day": 1}) + pd.offsets.MonthEnd(0)
    simple = table[FRENCH_SERIES[name]].to_numpy(np.float64)
    return pd.Series(100.0 * np.log1p(simple / 100.0), index=pd.DatetimeIndex(dates), name=name)


def read_csv(path: str | Path, column: str | None = None, kind: str = "prices", date_column: str | None = None) -> Any:
    """100·log-returns from a CSV of prices (or of returns already, `kind="returns"`) with a date column.

    The date column is the first one unless named; the value column is the only other numeric
    one unless named. Rows are sorted by date; duplicate dates, non-positive prices and
    unparsable values are refused with the offending row named.
    """
    import pandas as pd

    path = Path(path)
    if kind not in ("prices", "returns"):
        raise ValueError(f"kind must be 'prices' or 'returns', got {kind!r}")
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{path}: expected a CSV file with a date column and a value column, could not read it ({e})"
        ) from None
    if table.shape[1] < 2:
        raise ValueError(f"{path}: expected a date column and a value column, found columns {list(table.columns)}")
    date_column = date_column or str(table.columns[0])
    if date_column not in table:
        raise ValueError(f"{path}: no column {date_column!r}; found {list(table.columns)}")
    if column is None:
        numeric = [c for c in table.columns if c != date_column and pd.api.types.is_numeric_dtype(table[c])]
        if len(numeric) != 1:
            raise ValueError(
                f"{path}: expected exactly one numeric value column besides {date_column!r}, found {numeric}; name one"
            )
        column = str(numeric[0])
    if column not in table:
        raise ValueError(f"{path}: no column {column!r}; found {list(table.columns)}")
    dates = pd.to_datetime(table[date_column], errors="coerce")
    values = pd.to_numeric(table[column], errors="coerce")
    bad = dates.isna() | values.isna() | (~np.isfinite(values) if kind == "returns" else values <= 0)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        what = "a finite return" if kind == "returns" else "a positive price"
        raise ValueError(
            f"{path}: row {row + 2} (line of the file): expected a date and {what}, "
            f"found {table.iloc[row][[date_column, column]].tolist()}"
        )
    series = pd.Series(values.to_numpy(np.float64), index=pd.DatetimeIndex(dates), name=column).sort_index()
    if series.index.has_duplicates:
        raise ValueError(
            f"{path}: expected one row per date, found {series.index[series.index.duplicated()][0].date()} twice"
        )
    if kind == "prices":
        series = 100.0 * np.log(series).diff().dropna()
    if len(series) < WARMUP + 10:
        raise ValueError(f"{path}: expected at least {WARMUP + 10} returns, found {len(series)}")
    return series


# --------------------------------------------------------------------------------------------
#                              Volatility scaling and features
# --------------------------------------------------------------------------------------------


@dataclass
class VolatilityState:
    """The two moving averages of squared returns before a day, per asset (arrays [..., V])."""

    fast: np.ndarray  # σ²_t at λ = 0.94
    slow: np.ndarray  # σ²_t at λ = 0.99

    def features(self) -> np.ndarray:
        """The day's known features [..., V·FEATURES]: per asset ln(σ/σ_slow), ln σ_slow."""
        f = np.stack([0.5 * np.log(self.fast / self.slow), 0.5 * np.log(self.slow)], axis=-1)  # [..., V, 2]
        return f.reshape(*f.shape[:-2], -1).astype(np.float32)

    def scale(self) -> np.ndarray:
        """σ_t [..., V], the divisor of the day's return."""
        return np.sqrt(self.fast)

    def update(self, returns: np.ndarray) -> VolatilityState:
        """The state before the next day, after `returns` [..., V] happened."""
        r2 = np.square(returns)
        return VolatilityState(
            LAMBDA_FAST * self.fast + (1 - LAMBDA_FAST) * r2, LAMBDA_SLOW * self.slow + (1 - LAMBDA_SLOW) * r2
        )


def scale_returns(returns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[VolatilityState]]:
    """Frames, features and scales of a return path [T, V] (first WARMUP days start the averages).

    Returns z [T', V, 1], features [T', V·FEATURES], σ [T', V] and the state before each kept
    day (T' = T − WARMUP), so that r[WARMUP + t] = z[t]·σ[t].
    """
    r = np.asarray(returns, np.float64)
    if r.ndim != 2 or len(r) <= WARMUP:
        raise ValueError(f"expected returns [T, V] with T > {WARMUP}, got shape {list(r.shape)}")
    if not np.isfinite(r).all():
        raise ValueError(f"found NaN or inf in returns at day {int(np.flatnonzero(~np.isfinite(r).all(axis=1))[0])}")
    start = np.maximum(np.mean(np.square(r[:WARMUP]), axis=0), 1e-8)
    state = VolatilityState(start.copy(), start.copy())
    z, feats, scales, states = [], [], [], []
    for t in range(WARMUP, len(r)):
        states.append(state)
        feats.append(state.features())
        scales.append(state.scale())
        z.append(r[t] / state.scale())
        state = state.update(r[t])
    return (
        np.asarray(z, np.float32)[..., None],
        np.asarray(feats, np.float32),
        np.asarray(scales, np.float64),
        states,
    )


def market_spec(variables: tuple[str, ...]) -> WorldSpec:
    """The spec of scaled daily returns of `variables` (assets)."""
    v = len(variables)
    return WorldSpec(
        name="market",
        layout="series",
        frame_shape=(v, 1),
        value_kind="real",
        action=ActionSpace("continuous", v * FEATURES),
        step_duration=1.0,
        variables=tuple(variables),
    )


# --------------------------------------------------------------------------------------------
#                                   A synthetic market
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GarchParams:
    """GJR-GARCH(1,1) with Student-t shocks, per regime (calm, turbulent) and a Markov switch."""

    omega: tuple[float, float] = (0.02, 0.08)
    alpha: tuple[float, float] = (0.03, 0.06)
    gamma: tuple[float, float] = (0.10, 0.14)  # extra response to negative shocks (leverage)
    beta: tuple[float, float] = (0.88, 0.84)
    nu: float = 6.0  # Student-t degrees of freedom of the shocks
    mu: float = 0.04  # daily mean return
    stay: tuple[float, float] = (0.995, 0.98)  # probability of staying in each regime
    #: Correlation of the shocks across assets (multi-asset markets).
    rho: float = 0.7


class GarchSimulator:
    """A branchable synthetic market of `assets` correlated GJR-GARCH-t series with regimes.

    `simulate(days)` continues the current path; `get_state`/`set_state` branch it, so N copies
    from one state with different seeds are the true distribution of the future (the oracle).
    """

    def __init__(self, assets: int = 1, params: GarchParams = GarchParams(), seed: int = 0) -> None:
        if assets < 1:
            raise ValueError(f"assets must be >= 1, got {assets}")
        self.assets, self.p = assets, params
        self.rng = np.random.default_rng(seed)
        p = params
        calm = p.omega[0] / (1 - p.alpha[0] - 0.5 * p.gamma[0] - p.beta[0])
        self.var = np.full(assets, calm)  # conditional variance of the next day
        self.regime = 0
        corr = np.full((assets, assets), p.rho) + (1 - p.rho) * np.eye(assets)
        self.chol = np.linalg.cholesky(corr)

    def get_state(self) -> dict[str, Any]:
        return {"var": self.var.copy(), "regime": self.regime, "rng": copy.deepcopy(self.rng.bit_generator.state)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.var, self.regime = state["var"].copy(), int(state["regime"])
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def simulate(self, days: int) -> np.ndarray:
        """The next `days` returns [days, assets] (100·log-return units)."""
        p, out = self.p, np.empty((days, self.assets))
        nu = p.nu
        for t in range(days):
            if self.rng.random() > p.stay[self.regime]:
                self.regime = 1 - self.regime
            g = self.chol @ self.rng.standard_normal(self.assets)
            shock = g / np.sqrt(self.rng.chisquare(nu) / (nu - 2))  # unit-variance Student-t (shared mixing)
            eps = np.sqrt(self.var) * shock
            out[t] = p.mu + eps
            k = self.regime
            self.var = p.omega[k] + (p.alpha[k] + p.gamma[k] * (eps < 0)) * eps**2 + p.beta[k] * self.var
        return out
