"""The fields world's chance events, summed up by lead."""

import numpy as np
import pytest

from diffworld.domains.forecasting.events import fields_report
from diffworld.evaluate.events import by_event


def test_fields_report_sums_up_read_events_by_lead():
    # One start, one member, four steps: the wind 0 → 1 → 0 → 0 → 2, a turn undone straight away.
    events = {
        "regime": np.array([[[1, 0, 0, 2]]]),
        "start_regime": np.array([0]),
        "births": np.array([[[2, 0, 1, 0]]]),
        "strength": np.array([[0.6] * 9, [0.8] * 9]),
        "field": np.stack([np.full((3, 3), v) for v in (0.0, 1.0, 2.0, 3.0)])[None, None],
    }
    r = fields_report(events)
    assert r["source_births"] == {
        "rate": [2.0, 0.0, 1.0, 0.0],
        "strength_by_age": pytest.approx([0.7] * 9),
        "followed": 2,
    }
    assert r["wind"] == {"turned_by_lead": [1.0, 0.0, 0.0, 1.0], "turns_a_step": 0.75, "back_after_turn": 1.0}
    assert r["field"] == {"mean": [0.0, 1.0, 2.0, 3.0], "variance": [0.0] * 4}
    sides = by_event({"model": r, "oracle": r})
    assert set(sides) == {"source_births", "wind", "field"} and sides["wind"]["oracle"] == r["wind"]
