"""Chance events in forecasts: what appears from nothing, and how a random draw spreads.

A sampler that returns the mean of the possible futures draws what is certain and averages away
what is chance (a serve's row, an enemy's spawn, a source lighting up). These measures read the
events back from frames, so an ensemble of dreams and the true world branched from the same
states can be compared side by side:

- births on binary and categorical grids (`birth_report`): objects that appear with nothing of
  their channel within one cell in the frame before;
- a draw with a known uniform law (`uniform_draws`): its histogram and a chi-square test.

A world's own events are read in its domain: pong's serve in `diffworld.domains.games.events`,
the `fields` world's source births and wind turns in `diffworld.domains.forecasting.events`.

Forecasts are arrays [S, M, H, ...] (S starts, M members, H horizons) as in `metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage, stats

#: A birth has no cell of its channel within this Chebyshev distance in the frame before.
REACH = 1


def occupied(frames: np.ndarray, value_kind: str, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """On cells [..., C, H, W] of grid frames: above the middle of `value_range` (binary) or the
    one channel a cell is in, its largest (categorical)."""
    a = np.asarray(frames)
    if value_kind == "binary":
        return a > (value_range[0] + value_range[1]) / 2
    if value_kind == "categorical":
        return np.argmax(a, axis=-3)[..., None, :, :] == np.arange(a.shape[-3])[:, None, None]
    raise ValueError(f"births are read from binary or categorical grids, got value kind {value_kind!r}")


def near(on: np.ndarray, reach: int = REACH) -> np.ndarray:
    """Cells [..., H, W] within Chebyshev distance `reach` of an on cell of the same frame and channel (no wrap)."""
    size = (1,) * (on.ndim - 2) + (2 * reach + 1, 2 * reach + 1)
    return ndimage.maximum_filter(on.astype(np.uint8), size=size, mode="constant", cval=0).astype(bool)


def births(before: np.ndarray, after: np.ndarray, reach: int = REACH) -> tuple[np.ndarray, np.ndarray]:
    """Objects of `after` born since `before` (on cells [..., H, W] each, same shape).

    An object is an 8-connected blob of on cells of one frame and channel; it is born when none
    of its cells has an on cell within `reach` in `before`. Blobs, not cells: a paddle moving two
    rows grows a row two cells from where it was, and is not born. Returns (count [...] of births
    per frame, places [B, ndim] of each birth: the frame's leading indices, then the top-left row
    and column of the blob's bounding box).
    """
    lead, labels, born = _born_blobs(before, after, reach)
    boxes = ndimage.find_objects(labels)
    corner = np.array([[b.start for b in boxes[i]] for i in born], dtype=np.int64).reshape(-1, 3)  # [B, 3] frame, y, x
    count = np.bincount(corner[:, 0], minlength=labels.shape[0]).reshape(lead)
    places = np.column_stack([*np.unravel_index(corner[:, 0], lead), corner[:, 1], corner[:, 2]]).astype(np.int64)
    return count, places.reshape(-1, len(lead) + 2)


def born_cells(before: np.ndarray, after: np.ndarray, reach: int = REACH) -> np.ndarray:
    """The cells of `after` [..., H, W] that belong to an object born since `before` (`births`)."""
    lead, labels, born = _born_blobs(before, after, reach)
    return np.isin(labels, born + 1).reshape(after.shape)


def _born_blobs(before: np.ndarray, after: np.ndarray, reach: int) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """(leading shape, blob labels [F, H, W] of `after`'s frames and channels, label − 1 of each born blob)."""
    if before.shape != after.shape:
        raise ValueError(f"expected two arrays of on cells of the same shape, got {before.shape} and {after.shape}")
    lead, (h, w) = after.shape[:-2], after.shape[-2:]
    on = after.reshape(-1, h, w)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connectivity inside a frame, never across frames: one call labels all
    labels, k = ndimage.label(on, structure)
    touched = np.zeros(k + 1, dtype=bool)
    touched[labels[near(before, reach).reshape(-1, h, w) & on]] = True
    return lead, labels, np.flatnonzero(~touched[1:])


def birth_report(
    last: np.ndarray,
    forecast: np.ndarray,
    value_kind: str,
    channels: Sequence[str],
    value_range: tuple[float, float] = (0.0, 1.0),
    reach: int = REACH,
) -> dict[str, Any]:
    """Births of a grid ensemble by horizon: last context frames [S, C, H, W], forecast [S, M, T, C, H, W].

    The frame before horizon 1 is the last context frame. JSON-ready: `rate` [T] births a frame
    (summed over channels), `rate_by_channel` {channel: [T]}, `rows` and `cols` {channel: share
    of the channel's births whose top-left cell is in each row / column, over all horizons; None
    without births}, `births` (the count in all).
    """
    s, m = forecast.shape[:2]
    if last.shape != (s, *forecast.shape[3:]):
        raise ValueError(f"expected last context frames of shape {[s, *forecast.shape[3:]]}, got {list(last.shape)}")
    on = occupied(forecast, value_kind, value_range)  # [S, M, T, C, H, W]
    first = np.broadcast_to(occupied(last, value_kind, value_range)[:, None, None], (s, m, 1, *on.shape[3:]))
    count, places = births(np.concatenate([first, on[:, :, :-1]], axis=2), on, reach)  # [S, M, T, C]; [B, 6]
    rate = count.mean(axis=(0, 1))  # [T, C]
    report: dict[str, Any] = {
        "rate": rate.sum(-1).tolist(),
        "rate_by_channel": {name: rate[:, c].tolist() for c, name in enumerate(channels)},
        "rows": {},
        "cols": {},
        "births": int(count.sum()),
    }
    for c, name in enumerate(channels):
        mine = places[places[:, 3] == c]
        for key, axis, n in (("rows", 4, on.shape[-2]), ("cols", 5, on.shape[-1])):
            hist = np.bincount(mine[:, axis], minlength=n)
            report[key][name] = (hist / hist.sum()).tolist() if len(mine) else None
    return report


def uniform_draws(outcomes: np.ndarray, n: int) -> dict[str, Any]:
    """Draws of outcomes 0..n − 1 (negative: nothing drawn, left out) against the uniform law.

    JSON-ready: `draws` (outcomes drawn), `counts` [n], and Pearson's chi-square `chi2` with its
    p-value `p` (n − 1 degrees of freedom; None without draws). A small p says the draws are not
    uniform; the test wants about five expected draws per outcome or more.
    """
    drawn = np.asarray(outcomes).ravel()
    drawn = drawn[drawn >= 0]
    if (drawn >= n).any():
        raise ValueError(f"expected outcomes below {n}, got {int(drawn.max())}")
    counts = np.bincount(drawn, minlength=n)
    test = stats.chisquare(counts) if len(drawn) else None
    return {
        "draws": len(drawn),
        "counts": counts.tolist(),
        "chi2": None if test is None else float(test.statistic),
        "p": None if test is None else float(test.pvalue),
    }


def by_event(reports: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{forecaster: {event: numbers}} turned into {event: {forecaster: numbers}}: each event's numbers side by side."""
    out: dict[str, dict[str, Any]] = {}
    for name, events in reports.items():
        for event, numbers in events.items():
            out.setdefault(event, {})[name] = numbers
    return out
