"""Pong: frames, determinism, branching, physics, decoder, policies and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from diffworld.worlds import (
    BranchableWorld,
    DecodableWorld,
    default_policy,
    list_worlds,
    make_world,
    random_policy,
    run_episode,
)
from diffworld.worlds.pong import (
    POINTS_TO_WIN,
    SERVE_X,
    SERVE_Y_LOW,
    Pong,
    controlled_next,
    read_serve,
    serve_frames,
    tracker_policy,
)


def _state(world: Pong, **overrides: int) -> dict:
    """The world's current state with some fields replaced."""
    return {**world.get_state(), **overrides}


def _internal(state: dict) -> np.ndarray:
    return np.array([state["bx"], state["by"], state["py"], state["oy"]], dtype=float)


@pytest.fixture(scope="module")
def episodes() -> list:
    """A few seeded episodes under both data policies, with simulator states."""
    world = Pong()
    eps = [run_episode(world, s, random_policy, keep_states=True) for s in range(4)]
    eps += [run_episode(world, s, default_policy("pong"), keep_states=True) for s in range(4)]
    return eps


# --- frames -----------------------------------------------------------------------------------


def test_frames_are_binary_with_walls_paddles_and_a_4_pixel_ball(episodes: list) -> None:
    for ep in episodes:
        f = ep.frames
        assert f.shape[1:] == (1, 32, 32) and f.dtype == np.uint8
        assert set(np.unique(f)) <= {0, 1}
        assert (f[:, 0, 0, :] == 1).all() and (f[:, 0, 31, :] == 1).all()
        assert (f[:, 0, 1:31, 0] == 0).all() and (f[:, 0, 1:31, 31] == 0).all()
        assert (f[:, 0, 1:31, 1].sum(1) == 6).all() and (f[:, 0, 1:31, 30].sum(1) == 6).all()
        assert (f[:, 0, 1:31, 2:30].sum((1, 2)) == 4).all()
        Pong.spec.check_frames(f)


def test_decoder_accepts_every_true_frame_and_matches_the_state(episodes: list) -> None:
    frames = np.concatenate([e.frames for e in episodes])
    truth = np.stack([_internal(s) for e in episodes for s in e.states])
    assert len(frames) > 2000
    state, valid = Pong().decode(frames)
    assert valid.all()
    np.testing.assert_array_equal(state, truth)
    lo, hi = Pong.state_bounds.T
    assert ((state >= lo) & (state <= hi)).all()


def test_world_satisfies_the_protocols() -> None:
    world = Pong()
    assert isinstance(world, BranchableWorld) and isinstance(world, DecodableWorld)
    assert world.spec.name == "pong" and world.spec.action.n == 3
    assert world.state_names[world.controlled_index] == "paddle_y"


# --- determinism and branching ----------------------------------------------------------------


def test_same_seed_same_episode_different_seed_differs() -> None:
    a = run_episode(Pong(), 3, default_policy("pong"))
    b = run_episode(Pong(), 3, default_policy("pong"))
    c = run_episode(Pong(), 4, default_policy("pong"))
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    n = min(len(a), len(c))
    assert len(a) != len(c) or not np.array_equal(a.frames[:n], c.frames[:n])


def test_set_state_replays_exactly() -> None:
    world = Pong()
    world.reset(11)
    rng = np.random.default_rng(0)
    for _ in range(37):
        world.step(int(rng.integers(3)))
    saved = world.get_state()
    actions = rng.integers(3, size=20)
    first = [world.step(int(a)) for a in actions]
    world.set_state(saved)
    second = [world.step(int(a)) for a in actions]
    assert any(r != 0 for _, r, _ in first)  # a serve happened, so the generator state mattered
    for (f1, r1, d1), (f2, r2, d2) in zip(first, second):
        np.testing.assert_array_equal(f1, f2)
        assert (r1, d1) == (r2, d2)


def test_get_state_returns_a_copy() -> None:
    world = Pong()
    world.reset(5)
    saved = world.get_state()
    snapshot = {k: (dict(v) if isinstance(v, dict) else v) for k, v in saved.items()}
    for _ in range(200):  # long enough to serve at least once (advances the generator)
        world.step(0)
    assert saved == snapshot
    world.set_state(saved)
    world.step(1)
    assert saved == snapshot


def test_reseed_branches_only_at_the_next_serve() -> None:
    world = Pong()
    ep = run_episode(world, 2, random_policy, keep_states=True)
    points = np.flatnonzero(ep.rewards != 0)
    assert len(points) >= 2
    k = 5
    serve = int(points[points > k][0])  # first frame after k that shows a fresh serve
    world.set_state(ep.states[k])
    world.reseed(12345)
    branch = [world.step(int(a))[0] for a in ep.actions[k + 1 :]]
    n = min(len(branch), len(ep) - k - 1)
    branch_frames = np.stack(branch[:n])
    orig = ep.frames[k + 1 : k + 1 + n]
    # Deterministic until the serve: identical frames.
    np.testing.assert_array_equal(branch_frames[: serve - k - 1], orig[: serve - k - 1])
    # The fresh generator makes the future differ from some serve on.
    assert not np.array_equal(branch_frames, orig)


# --- physics ------------------------------------------------------------------------------------


def test_ball_bounces_off_the_top_wall() -> None:
    world = Pong()
    world.reset(0)
    world.set_state(_state(world, bx=15, by=1, vx=1, vy=-1))
    frame, reward, done = world.step(0)
    s = world.get_state()
    assert (s["bx"], s["by"], s["vx"], s["vy"]) == (16, 2, 1, 1)
    assert frame[0, 2:4, 16:18].all() and reward == 0.0 and not done


def test_ball_bounces_off_the_bottom_wall() -> None:
    world = Pong()
    world.reset(0)
    world.set_state(_state(world, bx=10, by=29, vx=-1, vy=1))
    world.step(0)
    s = world.get_state()
    assert (s["bx"], s["by"], s["vy"]) == (9, 28, -1)


def test_paddle_is_clipped_at_the_walls() -> None:
    world = Pong()
    world.reset(0)
    world.set_state(_state(world, py=2))
    world.step(1)
    assert world.py == 1
    world.step(1)
    assert world.py == 1
    world.set_state(_state(world, py=24))
    world.step(2)
    assert world.py == 25
    world.step(2)
    assert world.py == 25
    frame = world.render()
    assert frame[0, 25:31, 1].all() and frame[0, 31, :].all()


def test_player_paddle_returns_the_ball_and_sets_its_vertical_speed() -> None:
    world = Pong()
    world.reset(0)
    # Ball centre well above the paddle centre: it leaves going up.
    world.set_state(_state(world, bx=2, by=10, vx=-1, vy=0, py=11))
    _, reward, _ = world.step(0)
    s = world.get_state()
    assert reward == 0.0 and (s["bx"], s["by"], s["vx"], s["vy"]) == (3, 10, 1, -1)
    # Centred hit keeps a zero vertical speed.
    world.set_state(_state(world, bx=2, by=13, vx=-1, vy=0, py=11))
    world.step(0)
    assert (world.bx, world.vx, world.vy) == (3, 1, 0)


def test_opponent_paddle_returns_the_ball() -> None:
    world = Pong()
    world.reset(0)
    world.set_state(_state(world, bx=28, by=20, vx=1, vy=1, oy=18))
    world.step(0)
    assert world.oy == 18  # diff = by - oy - 2 = 0: it stays
    assert (world.bx, world.by, world.vx, world.vy) == (27, 21, -1, 1)


def test_opponent_moves_only_toward_an_incoming_ball() -> None:
    world = Pong()
    world.reset(0)
    world.set_state(_state(world, bx=10, by=20, vx=1, vy=0, oy=5))
    world.step(0)
    assert world.oy == 6
    world.set_state(_state(world, bx=10, by=20, vx=-1, vy=0, oy=5))
    world.step(0)
    assert world.oy == 5


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_point_gives_reward_and_a_serve(side: str) -> None:
    world = Pong()
    world.reset(0)
    if side == "left":  # paddle far away from the ball
        world.set_state(_state(world, bx=2, by=20, vx=-1, vy=0, py=1))
        expected = -1.0
    else:
        world.set_state(_state(world, bx=28, by=25, vx=1, vy=1, oy=1))
        expected = 1.0
    frame, reward, done = world.step(0)
    assert reward == expected and not done
    assert world.bx == SERVE_X and 8 <= world.by <= 22
    assert world.vx in (-1, 1) and world.vy in (-1, 0, 1)
    assert (world.score_player, world.score_opponent) == ((1, 0) if expected > 0 else (0, 1))
    assert frame[0, world.by : world.by + 2, SERVE_X : SERVE_X + 2].all()


def test_episode_ends_when_a_side_reaches_three_points() -> None:
    world = Pong()
    world.reset(0)
    world.set_state(_state(world, bx=2, by=20, vx=-1, vy=0, py=1, score_opponent=POINTS_TO_WIN - 1))
    _, reward, done = world.step(0)
    assert reward == -1.0 and done
    ep = run_episode(Pong(), 1, random_policy)
    assert ep.dones[-1] and not ep.dones[:-1].any()
    assert (ep.rewards < 0).sum() == POINTS_TO_WIN or (ep.rewards > 0).sum() == POINTS_TO_WIN


def test_episode_ends_after_max_steps() -> None:
    world = Pong(max_steps=5)
    world.reset(0)
    dones = [world.step(0)[2] for _ in range(5)]
    assert dones == [False] * 4 + [True]  # the ball cannot reach a side from a serve in 5 steps


def test_invalid_action_is_rejected() -> None:
    world = Pong()
    with pytest.raises(ValueError):
        world.step(3)


# --- decoder ------------------------------------------------------------------------------------


@pytest.fixture
def frame() -> np.ndarray:
    world = Pong()
    world.reset(0)
    world.set_state(_state(world, bx=10, by=12, py=4, oy=20))
    return world.render()


def test_decode_single_frame(frame: np.ndarray) -> None:
    state, valid = Pong().decode(frame)
    assert state.shape == (4,) and valid.shape == () and bool(valid)
    np.testing.assert_array_equal(state, [10, 12, 4, 20])


def test_decode_missing_ball(frame: np.ndarray) -> None:
    frame[0, 12:14, 10:12] = 0
    state, valid = Pong().decode(frame)
    assert np.isnan(state[:2]).all() and not valid
    np.testing.assert_array_equal(state[2:], [4, 20])


def test_decode_extra_blob_is_invalid_and_keeps_the_largest(frame: np.ndarray) -> None:
    frame[0, 25, 20] = 1
    state, valid = Pong().decode(frame)
    assert not valid
    np.testing.assert_array_equal(state[:2], [10, 12])


def test_decode_misshapen_ball_is_invalid(frame: np.ndarray) -> None:
    frame[0, 12, 10] = 0
    frame[0, 14, 11] = 1  # still 4 pixels, one blob, but not a 2x2 square
    assert not Pong().decode(frame)[1]


def test_decode_short_or_broken_paddle_is_invalid(frame: np.ndarray) -> None:
    short = frame.copy()
    short[0, 9, 1] = 0  # player paddle rows 4..8: length 5
    state, valid = Pong().decode(short)
    assert not valid and state[2] == 3.5  # mean row 6 - 2.5
    broken = frame.copy()
    broken[0, 25, 30] = 0  # opponent rows 20..24 plus a separate pixel at row 6: 6 pixels, 2 runs
    broken[0, 6, 30] = 1
    assert not Pong().decode(broken)[1]
    missing = frame.copy()
    missing[0, :, 1] = 0
    missing[0, [0, 31], 1] = 1
    state, valid = Pong().decode(missing)
    assert np.isnan(state[2]) and not valid


def test_decode_requires_walls_and_empty_sides(frame: np.ndarray) -> None:
    no_wall = frame.copy()
    no_wall[0, 31, 7] = 0
    assert not Pong().decode(no_wall)[1]
    side = frame.copy()
    side[0, 15, 31] = 1
    assert not Pong().decode(side)[1]


def test_decode_noisy_float_frames_exactly(episodes: list) -> None:
    frames = np.concatenate([e.frames for e in episodes[:3]])
    truth, _ = Pong().decode(frames)
    rng = np.random.default_rng(0)
    noisy = frames.astype(np.float32) + rng.uniform(-0.29, 0.29, frames.shape).astype(np.float32)
    state, valid = Pong().decode(noisy)
    assert valid.all()
    np.testing.assert_array_equal(state, truth)


def test_decode_batch_shape(episodes: list) -> None:
    frames = episodes[0].frames[:6].reshape(2, 3, 1, 32, 32)
    state, valid = Pong().decode(frames)
    assert state.shape == (2, 3, 4) and valid.shape == (2, 3) and valid.all()
    np.testing.assert_array_equal(state.reshape(6, 4), Pong().decode(episodes[0].frames[:6])[0])


def test_decode_many_broken_frames_matches_per_frame_decoding(episodes: list) -> None:
    """The batched labelling path must give each frame its own largest blob."""
    rng = np.random.default_rng(1)
    frames = episodes[0].frames[:40].astype(np.float32)
    frames[:, 0, 1:31, 2:30] += rng.random((40, 30, 28)) < 0.02  # random specks
    batch, _ = Pong().decode(frames)
    single = np.stack([Pong().decode(f)[0] for f in frames])
    np.testing.assert_array_equal(batch, single)


def test_decode_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError):
        Pong().decode(np.zeros((2, 32, 32)))


# --- action fidelity and policies ---------------------------------------------------------------


def test_controlled_next_with_clipping() -> None:
    state = np.array([[10, 10, 13, 5], [10, 10, 1, 5], [10, 10, 24, 5], [np.nan, np.nan, np.nan, 5]])
    out = Pong().controlled_next(state, np.array([0, 1, 2, 1]))
    np.testing.assert_array_equal(out[:3], [13, 1, 25])
    assert np.isnan(out[3])
    np.testing.assert_array_equal(controlled_next(state[:2], np.array([1, 0])), [11, 1])
    with pytest.raises(ValueError):
        controlled_next(state[:1], np.array([3]))


def test_controlled_next_matches_the_simulator(episodes: list) -> None:
    ep = episodes[0]
    state, _ = Pong().decode(ep.frames)
    predicted = controlled_next(state[:-1], ep.actions[1:])
    np.testing.assert_array_equal(predicted, state[1:, 2])


def test_tracker_policy_moves_toward_the_ball() -> None:
    world = Pong()
    world.reset(0)
    rng = np.random.default_rng(0)
    world.set_state(_state(world, by=2, py=20))
    assert tracker_policy(world, world.render(), rng) == 1  # up
    world.set_state(_state(world, by=27, py=3))
    assert tracker_policy(world, world.render(), rng) == 2  # down
    world.set_state(_state(world, by=15, py=13))
    assert tracker_policy(world, world.render(), rng) == 0  # centred


# --- registry ----------------------------------------------------------------------------------


def test_registry() -> None:
    assert "pong" in list_worlds()
    world = make_world("pong")
    assert isinstance(world, Pong)
    assert default_policy("pong") is not random_policy
    with pytest.raises(ValueError, match="pong"):
        make_world("nope")
    with pytest.raises(ValueError, match="pong"):
        default_policy("nope")


def test_serve_frames_are_the_frames_after_a_point_and_read_serve_reads_their_row(episodes: list) -> None:
    for ep in episodes:
        t = serve_frames(ep.rewards)
        assert len(t) >= 1 and (ep.rewards[t] != 0).all()
        valid, no_ball, row = read_serve(ep.frames[t])
        state = [s for i, s in enumerate(ep.states) if i in set(t.tolist())]
        assert valid.all() and not no_ball.any()
        assert row.tolist() == [s["by"] - SERVE_Y_LOW for s in state] and all(s["bx"] == SERVE_X for s in state)
        others = np.setdiff1d(np.arange(len(ep)), t)
        assert (read_serve(ep.frames[others])[2] == -1).mean() > 0.9  # elsewhere the ball is rarely at the serve column
