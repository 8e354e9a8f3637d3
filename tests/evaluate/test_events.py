"""Chance events: births on grids known by construction."""

import numpy as np
import pytest

from diffworld.evaluate.events import (
    birth_report,
    births,
    occupied,
)
from diffworld.evaluate.forecasts import make_cases, persistence_forecast
from diffworld.worlds import default_policy, make_world
from diffworld.worlds.base import run_episode
from diffworld.worlds.pong import SERVE_X, serve_frames


def scripted() -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int]]]:
    """A toy ensemble whose births are known: last context frames [1, 2, 8, 10], forecast [1, 2, 6, 2, 8, 10].

    Channel 0 ("thing"): objects born at known frames and places, each then moving one cell right a
    frame (never born again); one is a 2×2 block. Channel 1 ("bar"): a 3-cell bar that moves two
    rows a frame (it grows a row two cells from where it was: not a birth) and sits beside the
    channel-0 births (another channel's cells do not hide a birth). Returns the births as
    (member, horizon, row, column) of each object's top-left cell.
    """
    born = [(0, 1, 2, 3, 1), (0, 4, 5, 1, 2), (1, 2, 0, 1, 1), (1, 4, 7, 6, 1)]  # member, horizon, row, col, size
    fct = np.zeros((1, 2, 6, 2, 8, 10), dtype=np.float32)
    for j, h, y, x, size in born:
        for t in range(h, 7):  # from its birth to the last horizon, one cell right a frame
            c = x + t - h
            fct[0, j, t - 1, 0, y : y + size, c : c + size] = 1
    for t in range(1, 7):  # the bar: rows 2t−2 .. 2t in column 0, down two rows a frame
        fct[0, :, t - 1, 1, 2 * t - 2 : 2 * t + 1, 0] = 1
    last = np.zeros((1, 2, 8, 10), dtype=np.float32)
    last[0, 1, 0:1, 0] = 1  # the bar's end before horizon 1
    return last, fct, [(j, h, y, x) for j, h, y, x, _ in born]


def test_scripted_births_give_the_known_rate_and_places():
    last, fct, born = scripted()
    r = birth_report(last, fct, "binary", ["thing", "bar"])
    assert r["births"] == 4
    assert r["rate_by_channel"]["thing"] == [
        0.5,
        0.5,
        0.0,
        1.0,
        0.0,
        0.0,
    ]  # births per frame: 1, 1, 0, 2 over two members
    assert r["rate_by_channel"]["bar"] == [0.0] * 6
    assert r["rate"] == r["rate_by_channel"]["thing"]
    rows, cols = np.zeros(8), np.zeros(10)
    for _, _, y, x in born:
        rows[y] += 0.25
        cols[x] += 0.25
    assert np.allclose(r["rows"]["thing"], rows) and np.allclose(r["cols"]["thing"], cols)
    assert r["rows"]["bar"] is None and r["cols"]["bar"] is None
    count, places = births(
        occupied(
            np.concatenate([np.broadcast_to(last[:, None, None], (1, 2, 1, 2, 8, 10)), fct[:, :, :-1]], 2), "binary"
        ),
        occupied(fct, "binary"),
    )
    assert count.shape == (1, 2, 6, 2)
    assert sorted(map(tuple, places[:, [1, 2, 4, 5]].tolist())) == sorted((j, h - 1, y, x) for j, h, y, x in born)


def test_the_neighbourhood_is_one_cell_of_the_same_channel():
    before = np.zeros((2, 6, 6), dtype=bool)
    after = np.zeros((2, 6, 6), dtype=bool)
    before[0, 2, 2] = True
    after[0, 3, 3] = True  # moved one cell diagonally: not born
    after[0, 2, 5] = True  # three columns away from anything of its channel: born
    after[1, 2, 3] = True  # next to channel 0's cell, but channel 1 was empty: born
    count, places = births(before, after)
    assert count.tolist() == [1, 1] and places.tolist() == [[0, 2, 5], [1, 2, 3]]
    before[0, 2, 2], before[0, 1, 1] = False, True  # two cells from (3, 3) now: born
    assert births(before, after)[0].tolist() == [2, 1]


def test_categorical_cells_are_on_in_their_one_channel():
    frames = np.zeros((3, 2, 2))
    frames[0] = 1  # every cell in state 0 (background) ...
    frames[:, 1, 1] = [0.1, 0.2, 0.7]  # ... but one, in state 2
    on = occupied(frames, "categorical")
    assert on.sum() == 4 and on[2, 1, 1] and not on[0, 1, 1]
    with pytest.raises(ValueError, match="binary or categorical grids, got value kind 'real'"):
        occupied(frames, "real")


def test_a_dream_that_never_spawns_scores_no_births():
    world = make_world("pong")
    cases = make_cases(
        lambda: make_world("pong"), [1_000_000, 1_000_001], default_policy("pong"), 6, 3, 8, np.random.default_rng(0)
    )
    still = birth_report(cases.context[:, -1], persistence_forecast(cases), "binary", ["pixels"])
    assert still["rate"] == [0.0] * 8 and still["births"] == 0
    # The true game between serves: ball and paddles only move, so its births are exactly its serves.
    ep = run_episode(world, 1_000_000, default_policy("pong"), 1000)
    r = birth_report(ep.frames[0][None], ep.frames[None, None, 1:], "binary", ["pixels"])
    serves = serve_frames(ep.rewards)
    assert len(serves) >= 3 and r["births"] == len(serves)
    assert np.flatnonzero(r["rate"]).tolist() == (serves - 1).tolist()  # horizon h is frame h
    rows = np.bincount(world.decode(ep.frames[serves])[0][:, 1].astype(int), minlength=32) / len(serves)
    assert np.allclose(r["rows"]["pixels"], rows) and r["cols"]["pixels"][SERVE_X] == 1.0
