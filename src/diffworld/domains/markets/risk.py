"""Risk numbers from return forecasts, and the backtests a risk desk runs on them.

A one-day-ahead forecast of a return is either an ensemble of scenarios (`EnsembleForecast`:
the world model, historical simulation) or a parametric distribution (`ParametricForecast`:
normal or Student-t, the GARCH family and climatology). Both give, per day, the value at risk
and expected shortfall at level α (VaR_α is the α-quantile of the return, a negative number for
small α; ES_α the mean return below it), the fair CRPS and the pinball (quantile) loss.

Backtests follow the standard definitions: a *hit* is a day whose return falls below that
day's VaR_α. Kupiec's proportion-of-failures test (1995) compares the hit rate with α;
Christoffersen's test (1998) asks whether hits cluster (a hit making the next one likelier);
the Basel traffic light classifies the number of hits by its binomial cumulative probability
under a correct model (green below 95%, red from 99.99%, yellow between).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scoringrules as sr
from scipy import stats

#: The VaR levels every report shows.
LEVELS = (0.01, 0.05)


@dataclass(frozen=True)
class EnsembleForecast:
    """Scenarios [T, M] of each day's return."""

    samples: np.ndarray

    def quantile(self, alpha: float) -> np.ndarray:
        return np.quantile(self.samples, alpha, axis=1)

    def expected_shortfall(self, alpha: float) -> np.ndarray:
        q = self.quantile(alpha)[:, None]
        tail = np.where(self.samples <= q, self.samples, np.nan)
        return np.nanmean(tail, axis=1)

    def crps(self, obs: np.ndarray) -> np.ndarray:
        return sr.crps_ensemble(obs, self.samples, estimator="fair")

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        idx = rng.integers(0, self.samples.shape[1], size=(len(self.samples), n))
        return np.take_along_axis(self.samples, idx, axis=1)


@dataclass(frozen=True)
class ParametricForecast:
    """Each day's return as loc + scale·ε, ε standard normal (nu = None) or unit-variance Student-t."""

    loc: np.ndarray
    scale: np.ndarray
    nu: float | None = None

    def _t_scale(self) -> float:  # a t with ν degrees of freedom has variance ν/(ν − 2)
        return 1.0 if self.nu is None else float(np.sqrt((self.nu - 2) / self.nu))

    def quantile(self, alpha: float) -> np.ndarray:
        z = stats.norm.ppf(alpha) if self.nu is None else stats.t.ppf(alpha, self.nu) * self._t_scale()
        return self.loc + self.scale * z

    def expected_shortfall(self, alpha: float) -> np.ndarray:
        if self.nu is None:
            tail = -stats.norm.pdf(stats.norm.ppf(alpha)) / alpha
        else:
            q = stats.t.ppf(alpha, self.nu)  # E[T | T <= q] for a standard t
            tail = -stats.t.pdf(q, self.nu) * (self.nu + q**2) / ((self.nu - 1) * alpha) * self._t_scale()
        return self.loc + self.scale * tail

    def crps(self, obs: np.ndarray) -> np.ndarray:
        if self.nu is None:
            return sr.crps_normal(obs, self.loc, self.scale)
        return sr.crps_t(obs, self.nu, self.loc, self.scale * self._t_scale())

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        shape = (len(self.loc), n)
        eps = rng.standard_normal(shape) if self.nu is None else rng.standard_t(self.nu, shape) * self._t_scale()
        return self.loc[:, None] + self.scale[:, None] * eps


Forecast = EnsembleForecast | ParametricForecast


def pinball(quantile: np.ndarray, obs: np.ndarray, alpha: float) -> float:
    """Mean quantile (pinball) loss of `quantile` [T] as the α-quantile of `obs` [T]."""
    u = obs - quantile
    return float(np.mean(np.maximum(alpha * u, (alpha - 1) * u)))


def kupiec(hits: np.ndarray, alpha: float) -> tuple[float, float]:
    """Kupiec's unconditional-coverage likelihood ratio and its χ²(1) p-value."""
    n, x = len(hits), int(np.sum(hits))
    pi = x / n
    ll_null = (n - x) * np.log1p(-alpha) + x * np.log(alpha)
    ll_alt = _xlogy(n - x, 1 - pi) + _xlogy(x, pi)
    lr = max(-2.0 * (ll_null - ll_alt), 0.0)
    return float(lr), float(stats.chi2.sf(lr, 1))


def christoffersen(hits: np.ndarray) -> tuple[float, float]:
    """Christoffersen's independence likelihood ratio (first-order Markov hits) and its χ²(1) p-value."""
    h = np.asarray(hits, bool)
    prev, nxt = h[:-1], h[1:]
    n00, n01 = int(np.sum(~prev & ~nxt)), int(np.sum(~prev & nxt))
    n10, n11 = int(np.sum(prev & ~nxt)), int(np.sum(prev & nxt))
    pi0 = n01 / max(n00 + n01, 1)
    pi1 = n11 / max(n10 + n11, 1)
    pi = (n01 + n11) / max(n00 + n01 + n10 + n11, 1)
    ll_null = _xlogy(n00 + n10, 1 - pi) + _xlogy(n01 + n11, pi)
    ll_alt = _xlogy(n00, 1 - pi0) + _xlogy(n01, pi0) + _xlogy(n10, 1 - pi1) + _xlogy(n11, pi1)
    lr = max(-2.0 * (ll_null - ll_alt), 0.0)
    return float(lr), float(stats.chi2.sf(lr, 1))


def traffic_light(hits: int, days: int, alpha: float) -> str:
    """Basel zone of `hits` exceptions in `days` days at level α: green, yellow or red."""
    p = stats.binom.cdf(hits, days, alpha)
    return "green" if p < 0.95 else "yellow" if p < 0.9999 else "red"


def backtest(forecast: Forecast, obs: np.ndarray, levels: tuple[float, ...] = LEVELS) -> dict[str, float | int | str]:
    """Scores and VaR backtests of one forecaster's one-day-ahead forecasts of `obs` [T]."""
    obs = np.asarray(obs, np.float64)
    out: dict[str, float | int | str] = {"days": len(obs), "crps": float(np.mean(forecast.crps(obs)))}
    for alpha in levels:
        tag = f"{round(alpha * 100)}"
        var = forecast.quantile(alpha)
        hits = obs < var
        lr_uc, p_uc = kupiec(hits, alpha)
        lr_ind, p_ind = christoffersen(hits)
        es = forecast.expected_shortfall(alpha)
        out |= {
            f"hits_{tag}": int(hits.sum()),
            f"hit_rate_{tag}": float(hits.mean()),
            f"kupiec_p_{tag}": p_uc,
            f"christoffersen_p_{tag}": p_ind,
            f"traffic_light_{tag}": traffic_light(int(hits.sum()), len(obs), alpha),
            f"pinball_{tag}": pinball(var, obs, alpha),
            f"mean_var_{tag}": float(np.mean(var)),
            f"mean_es_{tag}": float(np.mean(es)),
            # On hit days, how far the return went beyond the VaR against the ES's promise.
            f"es_shortfall_{tag}": float(np.mean(obs[hits] - es[hits])) if hits.any() else float("nan"),
        }
    return out


def stylised_facts(paths: np.ndarray, lags: int = 10) -> dict[str, float]:
    """Fat tails, volatility clustering and leverage of return paths [P, T] (averaged over paths).

    kurtosis: Pearson's (3 for a normal); abs_acf: mean autocorrelation of |r| over lags 1..lags;
    leverage: mean correlation of r_t with r²_{t+k} over k = 1..lags (negative: falls raise volatility).
    """
    x = np.atleast_2d(np.asarray(paths, np.float64))
    kurt = [float(stats.kurtosis(p, fisher=False)) for p in x]
    acf, lev = [], []
    for p in x:
        a = np.abs(p)
        acf.append(np.mean([np.corrcoef(a[:-k], a[k:])[0, 1] for k in range(1, lags + 1)]))
        lev.append(np.mean([np.corrcoef(p[:-k], p[k:] ** 2)[0, 1] for k in range(1, lags + 1)]))
    return {"kurtosis": float(np.mean(kurt)), "abs_acf": float(np.mean(acf)), "leverage": float(np.mean(lev))}


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else float(x * np.log(y))
