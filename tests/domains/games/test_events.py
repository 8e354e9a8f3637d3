"""Games' chance events: pong's serve drawn by a model and by the true game, and the events section of
`diffworld eval`."""

import json

import numpy as np
import pytest

from diffworld.domains.games.evaluation import EvalConfig, first_move_draws, free_dreams, serve_draws
from diffworld.domains.games.events import serve_report
from diffworld.evaluate.events import uniform_draws
from diffworld.worlds import default_policy, make_world
from diffworld.worlds.pong import (
    FIRST_MOVES,
    SERVE_ROWS,
    SERVE_X,
    SERVE_Y_LOW,
    Pong,
    one_ball,
    read_first_move,
    read_serve,
)
from tests.conftest import tiny_model


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
    assert set(events) == {"births", "serve", "first_move", "free_dreams"}
    assert set(events["births"]) == {"model", "persistence", "oracle"}
    assert len(events["births"]["model"]["rate"]) == 3 and events["births"]["persistence"]["rate"] == [0.0] * 3
    serve = events["serve"]
    assert serve["moments"] * serve["members"] >= 480 and serve["seeds"][0] >= 1_000_000
    assert serve["oracle"]["served"] == 1.0 and serve["oracle"]["p"] > 0.01
    assert "births a frame, mean over h = 1..3" in result.output and "serve, 512 draws from 32 moments" in result.output
    move, free = events["first_move"], events["free_dreams"]
    assert move["oracle"]["valid"] == 1.0 and move["oracle"]["draws"] == move["oracle"]["frames"] >= 480
    assert (free["dreams"], free["frames"], len(free["first_invalid"])) == (8, 1000, 8)
    assert "served ball's first move" in result.output and "free dreams, 8 x 1000 frames" in result.output


def test_a_minatar_evaluation_reports_births_by_channel():
    pytest.importorskip("minatar")
    from diffworld.domains.games.evaluation import evaluate

    world = make_world("minatar:space_invaders")
    model = tiny_model(world.spec, frames=4, patch=2)
    cfg = EvalConfig(cases=3, episodes=3, members=2, horizon=4, fidelity_rollouts=2, climatology_episodes=2)
    events = evaluate(model, "minatar:space_invaders", cfg, train_seeds=[0, 1])["events"]
    assert set(events) == {"births"}  # no serve outside pong
    oracle = events["births"]["oracle"]
    assert set(oracle["rate_by_channel"]) == set(world.spec.variables) and len(oracle["rate"]) == 4
    assert np.allclose(oracle["rate"], np.sum(list(oracle["rate_by_channel"].values()), axis=0))
    assert all(len(r) == 10 for r in oracle["rows"].values() if r is not None)


def _ball_at(x: int, y: int) -> np.ndarray:
    game = Pong()
    game.bx, game.by = x, y
    return game.render()


def test_read_first_move_names_each_direction_and_nothing_else():
    served = 12
    moves = [(dx, dy) for dx in (-1, 1) for dy in (-1, 0, 1)]
    frames = np.stack([_ball_at(SERVE_X + dx, served + dy) for dx, dy in moves])
    valid, no_ball, move = read_first_move(frames, np.full(len(moves), served))
    assert valid.all() and not no_ball.any() and move.tolist() == list(range(FIRST_MOVES))
    # Not a first move: the ball still at the serve column, two rows off, no served row, no ball.
    empty = Pong().render()
    empty[0, 1:-1, 2:-2] = 0
    others = [_ball_at(SERVE_X, served), _ball_at(SERVE_X + 1, served + 2), _ball_at(SERVE_X - 1, served), empty]
    others = np.stack(others)
    valid, no_ball, move = read_first_move(others, np.array([served, served, np.nan, served]))
    assert move.tolist() == [-1, -1, -1, -1] and no_ball.tolist() == [False, False, False, True]


def test_first_moves_of_the_true_game_are_uniform_and_a_stuck_direction_is_flagged():
    model = tiny_model(Pong.spec, frames=4, patch=8)
    cfg = EvalConfig(episodes=4, serve_moments=32, serve_members=16)
    r = first_move_draws(model, lambda: make_world("pong"), cfg, model.sampler, [0, 1], default_policy("pong"), 1000)
    oracle = r["oracle"]
    assert oracle["valid"] == 1.0 and oracle["draws"] == oracle["frames"] == r["moments"] * 16 >= 480
    assert oracle["p"] > 0.01 and min(oracle["counts"]) > 0, oracle
    assert r["model"]["draws"] == 0  # an untrained model moves no ball
    stuck = serve_report(*read_first_move(np.stack([_ball_at(SERVE_X + 1, 12)] * 480), np.full(480, 12)), FIRST_MOVES)
    assert stuck["valid"] == 1.0 and stuck["counts"][4] == 480 and stuck["p"] < 0.01


def test_one_ball_counts_a_ball_not_a_smear():
    two = _ball_at(10, 10)
    two[0, 20:22, 20:22] = 1
    broken = _ball_at(10, 10)
    broken[0, 10, 10] = 0
    assert one_ball(np.stack([_ball_at(10, 10), two, broken])).tolist() == [True, False, False]


def test_free_dreams_of_a_model_that_keeps_the_last_frame_lose_no_ball():
    """A dream that repeats its last frame keeps one valid ball throughout; an untrained model does not."""
    from diffworld.domains.games import evaluation

    model = tiny_model(Pong.spec, frames=4, patch=8)
    cfg = EvalConfig(free_dreams=3, free_frames=20)
    make, policy = (lambda: make_world("pong")), default_policy("pong")
    untrained = free_dreams(model, make, cfg, model.sampler, [0, 1], policy)
    assert untrained["one_ball"] < 0.5 and untrained["first_invalid"] == [0, 0, 0]

    def still(model, context, actions, members, *args, **kwargs):
        return np.repeat(np.asarray(context)[:, None, -1:], actions.shape[1], axis=2)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluation, "model_forecast", still)
        kept = free_dreams(model, make, cfg, model.sampler, [0, 1], policy)
    assert kept["one_ball"] == kept["valid"] == 1.0 and kept["no_ball"] == 0.0 and kept["first_invalid"] == [20] * 3
    with pytest.raises(ValueError, match="overlap the training seeds"):
        free_dreams(model, make, cfg, model.sampler, [1_000_001], policy)
