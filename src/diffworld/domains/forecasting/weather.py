"""Scoring ensemble forecasts of real-valued worlds the way weather centres do.

Forecasts are [S, M, H, *frame] (S start dates, M members, leads 1..H), the truth [S, H, *frame].
Per lead: fair CRPS, ensemble-mean RMSE and spread/skill (`diffworld.evaluate.metrics`); pooled
over leads: the rank histogram; for fields on a periodic domain: the power spectrum, where a
blurred forecast shows first (its high wavenumbers fall short of the truth's).

Baselines beside the model, in the same run:
- persistence: the last observed frame, held (one member);
- climatology: frames drawn at random from training trajectories;
- per-point AR(1): x_{t+1} − μ = φ·(x_t − μ) + ε, ε ~ N(0, s²), fitted per point (variable,
  cell) on training trajectories and run forward as an ensemble — at long leads it becomes a
  Gaussian climatology, at short ones it is the best linear local forecast;
- oracle: the true simulator branched from the same state with fresh noise (`oracle_forecast`);
  for a deterministic world, a *twin* ensemble from starts perturbed by a small amount.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from diffworld.evaluate.forecasts import Cases, oracle_forecast
from diffworld.evaluate.metrics import crps, ensemble_mean_rmse, skill_vs_reference, spread_skill
from diffworld.worlds.base import World


@dataclass(frozen=True)
class AR1:
    """A per-point AR(1) fitted on training trajectories; every array has the frame's shape."""

    mean: np.ndarray
    phi: np.ndarray
    noise_std: np.ndarray

    @classmethod
    def fit(cls, trajectories: list[np.ndarray]) -> AR1:
        """Least squares on every pair (x_t, x_{t+1}) inside each trajectory [T, *frame] (pairs never span two)."""
        trajectories = [np.asarray(t, np.float64) for t in trajectories if len(t) >= 2]
        if not trajectories:
            raise ValueError("fitting an AR(1) needs at least one trajectory of two or more frames")
        mean = np.concatenate(trajectories).mean(axis=0)
        prev = np.concatenate([t[:-1] for t in trajectories]) - mean
        nxt = np.concatenate([t[1:] for t in trajectories]) - mean
        var = (prev**2).mean(axis=0)
        phi = np.where(var > 0, (prev * nxt).mean(axis=0) / np.maximum(var, 1e-300), 0.0)
        phi = np.clip(phi, -0.999, 0.999)  # a stationary process, whatever the sample says
        resid = nxt - phi * prev
        return cls(mean, phi, np.sqrt((resid**2).mean(axis=0)))

    def forecast(self, last: np.ndarray, members: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        """[S, M, H, *frame]: `members` AR(1) paths from each start `last` [S, *frame]."""
        x = np.repeat(np.asarray(last, np.float64)[:, None] - self.mean, members, axis=1)  # [S, M, *frame]
        out = np.empty((x.shape[0], members, horizon) + x.shape[2:], dtype=np.float32)
        for h in range(horizon):
            x = self.phi * x + self.noise_std * rng.standard_normal(x.shape)
            out[:, :, h] = x + self.mean
        return out


def twin_forecast(
    make_world: Callable[[], World], cases: Cases, members: int, scale: float, seed: int = 0
) -> np.ndarray:
    """[S, M, H, *frame]: the true world from each case's state perturbed by N(0, scale²), with fresh noise.

    The oracle of a deterministic world (Lorenz-96 without noise), where branching alone would
    give M identical members. The world needs a `perturb(scale)` method.
    """
    return oracle_forecast(make_world, cases, members, seed, perturb=scale)


def rank_histogram(fct: np.ndarray, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[M + 1] share of observations at each rank among the M members, pooled over starts, leads, points.

    Flat (every share 1/(M+1)) for a calibrated ensemble; U-shaped when it is too narrow, a dome
    when too wide. Ties (members equal to the truth) are broken at random.
    """
    fct, obs = np.asarray(fct), np.asarray(obs)[:, None]
    below = (fct < obs).sum(axis=1)
    ties = (fct == obs).sum(axis=1)
    ranks = below + np.floor(rng.random(below.shape) * (ties + 1)).astype(int)
    m = fct.shape[1]
    return np.bincount(ranks.ravel(), minlength=m + 1) / ranks.size


def ring_spectrum(x: np.ndarray) -> np.ndarray:
    """[K//2] mean power |x̂_k|² at wavenumbers k = 1..K//2 of a periodic ring of K points (the
    last axis), averaged over every other axis. Each ring's mean is removed (k = 0 is omitted)."""
    x = np.asarray(x, np.float64)
    power = np.abs(np.fft.rfft(x - x.mean(axis=-1, keepdims=True), axis=-1)) ** 2 / x.shape[-1]
    return power.reshape(-1, power.shape[-1]).mean(axis=0)[1:]


def radial_spectrum(x: np.ndarray) -> np.ndarray:
    """[min(H, W)//2] isotropic power spectrum of periodic fields [..., H, W]: mean power per
    integer wavenumber |k| = 1..min(H, W)//2 (rounded), averaged over every leading axis. Each
    field's mean is removed (k = 0 is omitted)."""
    x = np.asarray(x, np.float64)
    hh, ww = x.shape[-2:]
    power = np.abs(np.fft.fft2(x - x.mean(axis=(-2, -1), keepdims=True))) ** 2 / (hh * ww)
    power = power.reshape(-1, hh, ww).mean(axis=0)
    ky, kx = np.meshgrid(np.fft.fftfreq(hh) * hh, np.fft.fftfreq(ww) * ww, indexing="ij")
    k = np.rint(np.hypot(ky, kx)).astype(int)
    kmax = min(hh, ww) // 2
    total = np.bincount(k.ravel(), power.ravel(), minlength=kmax + 1)[: kmax + 1]
    count = np.bincount(k.ravel(), minlength=kmax + 1)[: kmax + 1]
    return (total / np.maximum(count, 1))[1:]


def saturation_lead(rmse_by_lead: np.ndarray, climatology_rmse: float, share: float = 0.9) -> int:
    """The first lead (1-based) where an RMSE curve reaches `share` of its saturated value (H if never).

    `climatology_rmse` is the RMSE of a random draw from the climate against the truth (√2 × the
    climate's standard deviation); a forecast whose errors have saturated scores that.
    """
    reached = np.flatnonzero(np.asarray(rmse_by_lead) >= share * climatology_rmse)
    return int(reached[0]) + 1 if reached.size else len(rmse_by_lead)


def score_ensembles(forecasts: dict[str, np.ndarray], truth: np.ndarray, rng: np.random.Generator) -> dict[str, dict]:
    """Per forecaster: CRPS, RMSE and spread/skill per lead (lists), and the pooled rank histogram."""
    out = {}
    for name, fct in forecasts.items():
        ss = spread_skill(fct, truth)
        out[name] = {
            "crps": crps(fct, truth).tolist(),
            "rmse": ensemble_mean_rmse(fct, truth).tolist(),
            "spread_skill": None if ss is None else ss.tolist(),
            "rank_histogram": None if fct.shape[1] < 2 else rank_histogram(fct, truth, rng).tolist(),
        }
    return out


def skill_against(
    scores: dict[str, dict], name: str, baseline: str = "persistence", reference: str = "oracle"
) -> list[float]:
    """Per-lead CRPS skill of `name`: 0 = the baseline, 1 = the reference."""
    get = lambda n: np.asarray(scores[n]["crps"])
    return skill_vs_reference(get(name), get(baseline), get(reference)).tolist()


__all__ = [
    "AR1",
    "radial_spectrum",
    "rank_histogram",
    "ring_spectrum",
    "saturation_lead",
    "score_ensembles",
    "skill_against",
    "twin_forecast",
]
