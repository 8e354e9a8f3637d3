"""Chance events: births on grids known by construction, uniform draws, and the events section of `diffworld eval`."""

import json

import numpy as np
import pytest

from diffworld.evaluate.events import (
    birth_report,
    births,
    by_event,
    fields_report,
    occupied,
    serve_report,
    uniform_draws,
)
from diffworld.evaluate.forecasts import make_cases, persistence_forecast
from diffworld.evaluate.run import EvalConfig, serve_draws
from diffworld.worlds import default_policy, make_world
from diffworld.worlds.base import run_episode
from diffworld.worlds.pong import SERVE_ROWS, SERVE_X, SERVE_Y_LOW, Pong, read_serve, serve_frames
from tests.conftest import tiny_model


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


def test_the_chi_square_flags_a_sampler_stuck_on_one_row_and_not_the_true_game():
    stuck = uniform_draws(np.full(512, 7), SERVE_ROWS)
    assert stuck["draws"] == 512 and stuck["counts"][7] == 512 and stuck["p"] < 0.01
    model = tiny_model(Pong.spec, frames=4, patch=8)
    cfg = EvalConfig(episodes=4, serve_moments=32, serve_members=16)
    r = serve_draws(model, lambda: make_world("pong"), cfg, model.sampler, [0, 1], default_policy("pong"), 1000)
    oracle = r["oracle"]
    assert (r["moments"], r["members"], oracle["frames"], oracle["draws"]) == (32, 16, 512, 512)
    assert r["seeds"][0] == 1_000_000 and oracle["valid"] == oracle["served"] == 1.0 and oracle["no_ball"] == 0.0
    assert oracle["p"] > 0.01 and min(oracle["counts"]) > 0, oracle
    assert r["model"]["served"] == 0.0 and r["model"]["p"] is None  # an untrained model serves no ball
    # The same moments with the served ball moved to one row: valid serves, flagged as not uniform.
    rows = np.full(512, 4)
    frames = np.stack([_serve_frame(SERVE_Y_LOW + row) for row in rows])
    valid, no_ball, outcome = read_serve(frames)
    assert outcome.tolist() == rows.tolist()
    fixed = serve_report(valid, no_ball, outcome, SERVE_ROWS)
    assert fixed["served"] == 1.0 and fixed["p"] < 0.01


def _serve_frame(row: int) -> np.ndarray:
    game = Pong()
    game.bx, game.by = SERVE_X, row
    return game.render()


def test_serve_report_counts_frames_without_a_ball():
    game = Pong()
    empty = game.render()
    empty[0, game.by : game.by + 2, game.bx : game.bx + 2] = 0
    valid, no_ball, outcome = read_serve(np.stack([empty, _serve_frame(9), _serve_frame(3)]))
    assert valid.tolist() == [False, True, True] and no_ball.tolist() == [True, False, False]
    assert outcome.tolist() == [-1, 1, -1]  # row 3 is valid but no row a serve draws
    r = serve_report(valid, no_ball, outcome, SERVE_ROWS)
    assert (
        r["valid"] == pytest.approx(2 / 3)
        and r["served"] == pytest.approx(1 / 3)
        and r["no_ball"] == pytest.approx(1 / 3)
    )
    assert r["draws"] == 1 and r["frames"] == 3


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


def test_eval_writes_and_prints_the_events_of_a_pong_model(tmp_path):
    from typer.testing import CliRunner

    from diffworld.cli import app
    from diffworld.model.world_model import ModelConfig
    from diffworld.recipes import train_world
    from diffworld.train import TrainConfig

    train_world(
        "pong",
        tmp_path / "run",
        ModelConfig.preset("tiny", frames=4),
        TrainConfig(steps=2, batch_size=2, warmup=1),
        episodes=2,
        progress=False,
        log=lambda s: None,
    )
    out = tmp_path / "eval"
    args = [
        "eval",
        str(tmp_path / "run" / "checkpoint"),
        "--out",
        str(out),
        "--cases",
        "2",
        "--members",
        "2",
        "--horizon",
        "3",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    events = json.loads((out / "metrics.json").read_text())["events"]
    assert set(events) == {"births", "serve"}
    assert set(events["births"]) == {"model", "persistence", "oracle"}
    assert len(events["births"]["model"]["rate"]) == 3 and events["births"]["persistence"]["rate"] == [0.0] * 3
    serve = events["serve"]
    assert serve["moments"] * serve["members"] >= 480 and serve["seeds"][0] >= 1_000_000
    assert serve["oracle"]["served"] == 1.0 and serve["oracle"]["p"] > 0.01
    assert "births a frame, mean over h = 1..3" in result.output and "serve, 512 draws from 32 moments" in result.output


def test_a_minatar_evaluation_reports_births_by_channel():
    pytest.importorskip("minatar")
    from diffworld.evaluate.run import evaluate

    world = make_world("minatar:space_invaders")
    model = tiny_model(world.spec, frames=4, patch=2)
    cfg = EvalConfig(cases=3, episodes=3, members=2, horizon=4, fidelity_rollouts=2, climatology_episodes=2)
    events = evaluate(model, "minatar:space_invaders", cfg, train_seeds=[0, 1])["events"]
    assert set(events) == {"births"}  # no serve outside pong
    oracle = events["births"]["oracle"]
    assert set(oracle["rate_by_channel"]) == set(world.spec.variables) and len(oracle["rate"]) == 4
    assert np.allclose(oracle["rate"], np.sum(list(oracle["rate_by_channel"].values()), axis=0))
    assert all(len(r) == 10 for r in oracle["rows"].values() if r is not None)
