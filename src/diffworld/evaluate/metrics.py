"""Probabilistic scores of ensemble forecasts, per horizon.

Forecasts are arrays [S, M, H, ...] (S starts, M members, H horizons, then the variables);
observations are [S, H, ...]. Every score is averaged over starts and variables and returned
per horizon.
"""

from __future__ import annotations

import numpy as np
import scoringrules as sr


def crps(fct: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Per-horizon CRPS [H]: the fair ensemble estimator for M > 1, absolute error for M = 1."""
    fct, obs = np.asarray(fct, np.float64), np.asarray(obs, np.float64)
    if fct.shape[1] == 1:
        score = np.abs(fct[:, 0] - obs)
    else:
        score = sr.crps_ensemble(obs, np.moveaxis(fct, 1, -1), estimator="fair")  # [S, H, ...]
    return score.reshape(score.shape[0], score.shape[1], -1).mean(axis=(0, 2))


def ensemble_mean_rmse(fct: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Per-horizon RMSE [H] of the ensemble mean."""
    err = np.asarray(fct, np.float64).mean(axis=1) - obs  # [S, H, ...]
    return np.sqrt((err.reshape(err.shape[0], err.shape[1], -1) ** 2).mean(axis=(0, 2)))


def ensemble_spread(fct: np.ndarray) -> np.ndarray:
    """Per-horizon spread [H]: the root of the members' variance (unbiased, M ≥ 2) averaged over starts and
    variables."""
    var = np.asarray(fct, np.float64).var(axis=1, ddof=1)  # [S, H, ...]
    return np.sqrt(var.reshape(var.shape[0], var.shape[1], -1).mean(axis=(0, 2)))


def spread_skill(fct: np.ndarray, obs: np.ndarray) -> np.ndarray | None:
    """Per-horizon sqrt((M+1)/M)·spread/RMSE [H] (1 = calibrated); None for a single member."""
    m = fct.shape[1]
    if m < 2:
        return None
    rmse = ensemble_mean_rmse(fct, obs)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((m + 1) / m) * ensemble_spread(fct) / rmse


def fill_missing(state: np.ndarray, truth: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Replace NaN (a missing object) by the possible value farthest from the truth.

    state [S, M, H, K], truth [S, H, K], bounds [K, 2]: a missing object costs the largest
    position error there could be, never less.
    """
    lo, hi = bounds[:, 0], bounds[:, 1]
    worst = np.where(truth - lo > hi - truth, lo, hi)  # [S, H, K]
    return np.where(np.isnan(state), worst[:, None], state)


def decoded_state(world, frames: np.ndarray, truth_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(state [S, M, H, K], valid) that a decodable world reads off forecast frames [S, M, H, *frame],
    a missing object at its worst possible value given `truth_state` [S, H, K] (see `fill_missing`)."""
    state, valid = world.decode(frames)
    return fill_missing(state, truth_state, world.state_bounds), valid


def skill_vs_reference(score: np.ndarray, baseline: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(baseline − score) / (baseline − reference): 0 = no better than the baseline, 1 = the reference."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (baseline - score) / (baseline - reference)


def cell_f1(fct: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Per-horizon, per-channel F1 of occupied cells [H, C], for binary grid frames.

    fct [S, M, H, C, *grid], obs [S, H, C, *grid]; a cell is occupied above 0.5. True and false
    positives and misses are pooled over the starts, F1 = 2TP / (2TP + FP + FN) per member, then
    averaged over members. NaN where the truth has no occupied cell in that channel at that
    horizon (no object to find). Unlike per-cell scores, F1 gives an empty forecast zero.
    """
    pred = np.asarray(fct) > 0.5
    true = np.asarray(obs)[:, None] > 0.5
    cells = tuple(range(4, pred.ndim))
    tp = (pred & true).sum(axis=(0, *cells), dtype=np.int64)  # [M, H, C]
    fp = (pred & ~true).sum(axis=(0, *cells), dtype=np.int64)
    fn = (~pred & true).sum(axis=(0, *cells), dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = 2 * tp / (2 * tp + fp + fn)
    f1 = f1.mean(axis=0)  # [H, C]
    present = true[:, 0].sum(axis=(0, *[c - 1 for c in cells])) > 0  # [H, C]
    return np.where(present, f1, np.nan)


def score_forecast(fct: np.ndarray, obs: np.ndarray) -> dict[str, list[float] | None]:
    """CRPS, ensemble-mean RMSE and spread/skill per horizon, as JSON-ready lists."""
    ss = spread_skill(fct, obs)
    return {
        "crps": crps(fct, obs).tolist(),
        "rmse": ensemble_mean_rmse(fct, obs).tolist(),
        "spread_skill": None if ss is None else ss.tolist(),
    }
