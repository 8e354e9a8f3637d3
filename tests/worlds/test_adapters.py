"""Adapters to outside simulators: MinAtar, Gymnasium and ALE worlds, and prefixed registry names."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from diffworld.worlds import (
    BranchableWorld,
    default_policy,
    make_world,
    random_policy,
    run_episode,
    training_defaults,
)

MINATAR_GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")


def _breakout_tracker(frame: np.ndarray) -> int:
    """Move the paddle (channel 0) toward the ball's column (channel 1): 0 none, 1 left, 2 right."""
    paddle, ball = np.flatnonzero(frame[0].any(0)), np.flatnonzero(frame[1].any(0))
    if len(ball) == 0 or ball[0] == paddle[0]:
        return 0
    return 1 if ball[0] < paddle[0] else 2


def _play(world: BranchableWorld, actions: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step `world` through `actions`; return its frames, rewards and dones."""
    out = [world.step(a) for a in actions]
    return np.stack([o[0] for o in out]), np.array([o[1] for o in out]), np.array([o[2] for o in out])


# --- MinAtar ----------------------------------------------------------------------------------


@pytest.mark.parametrize("game", MINATAR_GAMES)
def test_minatar_frames_are_binary_object_maps_matching_the_spec(game: str) -> None:
    pytest.importorskip("minatar")
    from minatar import Environment

    world = make_world(f"minatar:{game}")
    spec = world.spec
    channels = Environment(game).env.channels
    assert spec.name == f"minatar:{game}" and spec.layout == "grid" and spec.value_kind == "binary"
    assert spec.frame_shape == (len(channels), 10, 10)
    assert spec.variables == tuple(sorted(channels, key=channels.get))
    assert spec.action.kind == "discrete" and spec.action.n == len(Environment(game).minimal_action_set())
    assert len(spec.action.names) == spec.action.n and spec.action.names[0] == "none"
    assert isinstance(world, BranchableWorld)
    ep = run_episode(world, 0, random_policy, max_steps=40)
    spec.check_frames(ep.frames)
    assert ep.frames.dtype == np.uint8 and set(np.unique(ep.frames)) <= {0, 1}
    assert ep.frames[0].any() and len({f.tobytes() for f in ep.frames}) > 1  # objects, and they move


def test_minatar_episodes_are_seeded_and_capped_at_max_steps() -> None:
    pytest.importorskip("minatar")
    a, b = (run_episode(make_world("minatar:asterix"), 3, random_policy) for _ in range(2))
    np.testing.assert_array_equal(a.frames, b.frames)
    c = run_episode(make_world("minatar:asterix"), 4, random_policy)
    assert len(a.frames) != len(c.frames) or not np.array_equal(a.frames, c.frames)
    world = make_world("minatar:freeway", max_steps=25)  # freeway never ends early
    ep = run_episode(world, 0, random_policy, max_steps=100)
    assert len(ep.frames) == 26 and ep.dones[-1] and not ep.dones[:-1].any()


def test_minatar_breakout_replay_is_exact_and_reseed_changes_sticky_actions() -> None:
    pytest.importorskip("minatar")
    world = make_world("minatar:breakout")  # sticky actions on (0.1): the generator matters every step
    frame = world.reset(0)
    for _ in range(5):
        frame, _, _ = world.step(_breakout_tracker(frame))
    state = world.get_state()
    actions, frames = [], []
    for _ in range(50):
        actions.append(_breakout_tracker(frame))
        frame, _, done = world.step(actions[-1])
        frames.append(frame)
        assert not done  # the tracker keeps the ball in play: the replay covers 50 live steps
    world.set_state(state)
    replay = _play(world, actions)
    np.testing.assert_array_equal(replay[0], np.stack(frames))
    world.set_state(state)  # a state restores more than once
    np.testing.assert_array_equal(_play(world, actions)[0], replay[0])
    futures = []
    for seed in range(3):
        world.set_state(state)
        world.reseed(seed)
        futures.append(_play(world, actions)[0])
    assert any(not np.array_equal(f, replay[0]) for f in futures)


def test_minatar_reseed_gives_different_but_reproducible_futures() -> None:
    pytest.importorskip("minatar")
    world = make_world("minatar:asterix", sticky_action_prob=0.0)  # only the spawns are random
    world.reset(0)
    _play(world, [0] * 10)
    state = world.get_state()
    actions = [1, 3] * 20  # left, right: dodge in place while enemies and gold spawn
    futures = []
    for seed in (0, 1, 2, 3, 0):
        world.set_state(state)
        world.reseed(seed)
        futures.append(_play(world, actions)[0].tobytes())
    assert futures[0] == futures[4]  # the same seed gives the same future
    assert len(set(futures[:4])) >= 2


# --- Gymnasium --------------------------------------------------------------------------------


def test_gym_cartpole_frames_and_discrete_spec() -> None:
    pytest.importorskip("gymnasium")
    world = make_world("gym:CartPole-v1", size=32)
    spec = world.spec
    assert spec.name == "gym:CartPole-v1" and spec.frame_shape == (3, 32, 32)
    assert spec.value_kind == "bounded" and spec.value_range == (0.0, 255.0)
    assert spec.action.kind == "discrete" and spec.action.n == 2
    assert not isinstance(world, BranchableWorld)
    a, b = (run_episode(world, 5, random_policy, max_steps=20) for _ in range(2))
    spec.check_frames(a.frames)
    assert a.frames.dtype == np.uint8 and a.frames.min() < a.frames.max()  # a cart on a white background
    np.testing.assert_array_equal(a.frames, b.frames)  # reset(seed) seeds the env
    gray = make_world("gym:CartPole-v1", size=16, grayscale=True)
    assert gray.spec.frame_shape == (1, 16, 16) and gray.reset(0).shape == (1, 16, 16)
    with pytest.raises(ValueError, match=r"integers in \[0, 2\)"):
        world.step(2)


def test_gym_box_actions_give_a_continuous_spec_and_are_clipped() -> None:
    pytest.importorskip("gymnasium")
    world = make_world("gym:Pendulum-v1", size=24)
    assert world.spec.action.kind == "continuous" and world.spec.action.n == 1
    world.reset(0)
    frame, _, _ = world.step(np.array([5.0], dtype=np.float32))
    assert frame.shape == (3, 24, 24)
    assert world.env.unwrapped.last_u == pytest.approx(2.0)  # clipped to Pendulum's torque bound


def test_gym_other_action_spaces_are_refused() -> None:
    spaces = pytest.importorskip("gymnasium.spaces")
    from diffworld.worlds.gym_env import action_spec

    env = SimpleNamespace(action_space=spaces.MultiDiscrete([2, 3]), spec=SimpleNamespace(id="Grid-v0"), unwrapped=None)
    with pytest.raises(ValueError, match="Grid-v0: expected a Discrete or Box action space, got MultiDiscrete"):
        action_spec(env)


# --- ALE --------------------------------------------------------------------------------------


def test_ale_pong_frames_spec_and_exact_branching() -> None:
    pytest.importorskip("ale_py")
    world = make_world("ale:pong")  # case and underscores are forgiven
    spec = world.spec
    assert spec.name == "ale:Pong" and spec.frame_shape == (1, 64, 64) and spec.value_kind == "bounded"
    assert spec.action.kind == "discrete" and spec.action.n == 6 and spec.action.names[0] == "NOOP"
    assert isinstance(world, BranchableWorld)
    world.reset(0)
    rng = np.random.default_rng(0)
    _play(world, list(rng.integers(6, size=60)))
    state = world.get_state()
    actions = list(rng.integers(6, size=60))
    first = _play(world, actions)
    spec.check_frames(first[0])
    assert first[0].dtype == np.uint8 and first[0].min() < first[0].max()
    world.set_state(state)
    np.testing.assert_array_equal(_play(world, actions)[0], first[0])
    futures = []
    for seed in (1, 2, 1):
        world.set_state(state)
        world.reseed(seed)  # sticky actions (0.25) now draw fresh noise
        futures.append(_play(world, actions)[0])
    np.testing.assert_array_equal(futures[0], futures[2])
    assert not np.array_equal(futures[0], futures[1])
    world.set_state(state)  # the generator saved with the state wins over any reseed
    np.testing.assert_array_equal(_play(world, actions)[0], first[0])
    rgb = make_world("ale:Pong", size=32, grayscale=False, frameskip=2, sticky=0.0)
    assert rgb.spec.frame_shape == (3, 32, 32) and rgb.reset(0).shape == (3, 32, 32)


# --- registry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("package", "name", "options", "message"),
    [
        ("minatar", "minatar:nope", {}, "asterix, breakout, freeway, seaquest, space_invaders"),
        ("minatar", "minatar:breakout", {"size": 3}, "bad options for world 'minatar:breakout'"),
        ("gymnasium", "gym:NoSuchEnv-v0", {}, "'NoSuchEnv-v0'"),
        ("ale_py", "ale:Pongg", {}, "did you mean Pong"),
        (None, "pong", {"size": 3}, "built-in world 'pong' takes no options, got size"),
        (None, "nope", {}, "unknown world 'nope'"),
        (None, "atari:Pong", {}, "unknown world source 'atari'"),
        (None, "minatar:", {}, "names no minatar world"),
    ],
)
def test_bad_names_and_options_raise_one_line_errors(
    package: str | None, name: str, options: dict, message: str
) -> None:
    if package:
        pytest.importorskip(package)
    with pytest.raises(ValueError, match=message) as info:
        make_world(name, **options)
    assert "\n" not in str(info.value)


def test_prefixed_names_have_random_policy_and_no_defaults_without_importing_the_packages() -> None:
    from diffworld.worlds import minatar

    for name in ("minatar:breakout", "gym:CartPole-v1", "ale:Pong"):
        assert training_defaults(name) == {}
    assert default_policy("gym:CartPole-v1") is random_policy and default_policy("ale:Pong") is random_policy
    assert default_policy("minatar:breakout") is minatar.default_policy  # ball tracking for breakout
    code = (
        "import sys, diffworld.worlds as w\n"
        "w.training_defaults('ale:Pong'); w.default_policy('minatar:breakout')\n"
        "print(sorted(m for m in ('gymnasium', 'minatar', 'ale_py', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_breakout_default_policy_keeps_the_ball_in_play_and_uses_every_action() -> None:
    pytest.importorskip("minatar")
    from diffworld.worlds import collect_episodes, default_policy, make_world

    tracked = collect_episodes(lambda: make_world("minatar:breakout"), range(20), default_policy("minatar:breakout"))
    random = collect_episodes(lambda: make_world("minatar:breakout"), range(20), random_policy)
    mean = lambda eps: np.mean([len(e) for e in eps])  # noqa: E731
    assert mean(tracked) > 2.5 * mean(random), (mean(tracked), mean(random))
    counts = np.bincount(np.concatenate([e.actions[1:] for e in tracked]), minlength=3)
    assert (counts / counts.sum() > 0.2).all(), counts  # every action stays common: actions stay informative
