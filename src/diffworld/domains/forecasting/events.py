"""The `fields` world's chance events in forecasts: source births, their emission by age, wind turns,
and the field's mean and variance (from `Fields.read_events`).

Forecasts are arrays [S, M, H, ...] (S starts, M members, H horizons) as in `diffworld.evaluate.metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def fields_report(events: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """The `fields` world's events by lead from `Fields.read_events`, JSON-ready, by kind of event.

    `source_births`: births a step by lead, their emission by age (mean over the births followed
    that long; None without any) and how many were followed; `wind`: the share of members whose
    wind differs from the start's by lead, turns a step, and the share of turns that go straight
    back to the wind of the step before the last (a turn that did not stick; None without turns);
    `field`: the first channel's spatial mean and variance by lead, averaged over members.
    """
    regime, start = events["regime"], events["start_regime"]
    s, m, _ = regime.shape
    path = np.concatenate([np.broadcast_to(start[:, None, None], (s, m, 1)), regime], axis=2)  # [S, M, H + 1]
    turned = path[:, :, 1:] != path[:, :, :-1]
    i, j, k = np.nonzero(turned[:, :, :-1])  # a turn from path[k] to path[k + 1]
    keep = k >= 1
    back = path[i[keep], j[keep], k[keep] + 1] == path[i[keep], j[keep], k[keep] - 1]  # straight back: a turn undone
    strength, field = events["strength"], events["field"]
    return {
        "source_births": {
            "rate": events["births"].mean(axis=(0, 1)).tolist(),
            "strength_by_age": strength.mean(0).tolist() if len(strength) else None,
            "followed": len(strength),
        },
        "wind": {
            "turned_by_lead": (regime != start[:, None, None]).mean(axis=(0, 1)).tolist(),
            "turns_a_step": float(turned.mean()),
            "back_after_turn": float(back.mean()) if len(back) else None,
        },
        "field": {
            "mean": field.mean(axis=(0, 1, 3, 4)).tolist(),
            "variance": field.var(axis=(-1, -2)).mean(axis=(0, 1)).tolist(),
        },
    }
