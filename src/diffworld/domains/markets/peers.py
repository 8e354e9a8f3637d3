"""The forecasters a risk desk would put beside a world model, on the same days.

Each peer is fitted on the training period only and then forecasts every test day one day
ahead from the returns before it (parameters fixed, filters updated with each real day):
arch's GARCH(1,1) with normal shocks and GJR-GARCH(1,1) with Student-t shocks, 250-day
historical simulation, and a normal climatology of the training period.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffworld.domains.markets.risk import EnsembleForecast, Forecast, ParametricForecast

#: Peer name -> arch_model settings.
GARCH_PEERS: dict[str, dict[str, Any]] = {
    "garch_normal": {"vol": "GARCH", "p": 1, "o": 0, "q": 1, "dist": "normal"},
    "gjr_garch_t": {"vol": "GARCH", "p": 1, "o": 1, "q": 1, "dist": "t"},
}
HISTORY_DAYS = 250


def garch_forecast(
    returns: Any, test_index: np.ndarray, train_end: Any, settings: dict[str, Any]
) -> tuple[ParametricForecast, dict[str, float]]:
    """One-day-ahead forecasts of `returns.iloc[test_index]` (a pandas Series) from a model fitted before `train_end`.

    Returns the forecast and the fitted parameters.
    """
    from arch import arch_model

    test_index = np.asarray(test_index)
    if test_index.min() < 1 or returns.index[test_index.min()] < train_end:
        raise ValueError(
            f"test days must follow the training period (ending {train_end}), found {returns.index[test_index.min()]}"
        )
    data = returns.iloc[: test_index.max() + 1]
    fit = arch_model(data, mean="Constant", **settings).fit(last_obs=train_end, disp="off")
    first = returns.index[test_index.min() - 1]  # the forecast made on day d is for day d + 1
    fc = fit.forecast(start=first, horizon=1, reindex=False)
    made_on = {d: i for i, d in enumerate(fc.mean.index)}
    rows = np.array([made_on[returns.index[i - 1]] for i in test_index])
    loc = fc.mean.iloc[:, 0].to_numpy()[rows]
    scale = np.sqrt(fc.variance.iloc[:, 0].to_numpy()[rows])
    nu = float(fit.params["nu"]) if settings["dist"] == "t" else None
    return ParametricForecast(loc, scale, nu), {k: float(v) for k, v in fit.params.items()}


def historical_simulation(returns: np.ndarray, test_index: np.ndarray, days: int = HISTORY_DAYS) -> EnsembleForecast:
    """Each test day's forecast: the `days` real returns before it, as scenarios."""
    r = np.asarray(returns, np.float64)
    if np.min(test_index) < days:
        raise ValueError(
            f"historical simulation needs {days} days before the first test day, found {np.min(test_index)}"
        )
    return EnsembleForecast(np.stack([r[i - days : i] for i in test_index]))


def climatology(train_returns: np.ndarray, days: int) -> ParametricForecast:
    """The normal distribution of the training period's returns, every day."""
    r = np.asarray(train_returns, np.float64)
    return ParametricForecast(np.full(days, r.mean()), np.full(days, r.std(ddof=1)))


def peer_forecasts(
    returns: Any, test_index: np.ndarray, train_end: Any
) -> tuple[dict[str, Forecast], dict[str, dict[str, float]]]:
    """Every peer's one-day-ahead forecasts of the test days, and the GARCH peers' fitted parameters."""
    forecasts: dict[str, Forecast] = {}
    params: dict[str, dict[str, float]] = {}
    for name, settings in GARCH_PEERS.items():
        forecasts[name], params[name] = garch_forecast(returns, test_index, train_end, settings)
    values = returns.to_numpy()
    forecasts["historical_250d"] = historical_simulation(values, test_index)
    forecasts["climatology"] = climatology(values[returns.index < train_end], len(test_index))
    return forecasts, params
