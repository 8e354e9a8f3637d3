import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from diffworld.agents.envs import DreamEnv, DreamVectorEnv, opening_frames
from diffworld.agents.heads import HeadsConfig, train_heads
from diffworld.worlds import collect_episodes, default_policy, make_world
from diffworld.worlds.pong import SPEC
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def parts():
    episodes = collect_episodes(lambda: make_world("pong"), range(6), default_policy("pong"), 1000)
    model = tiny_model(SPEC, frames=4)
    heads = train_heads(SPEC, episodes, HeadsConfig(width=4, hidden=16, steps=5, batch_size=16), log=lambda s: None)
    return model, heads, opening_frames(episodes, model.frames - 1)


def test_dream_env_passes_gymnasiums_checker(parts):
    model, heads, starts = parts
    env = DreamEnv(model, heads, starts, frames=2, max_steps=20)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert obs.shape == (2, 1, 32, 32) and env.observation_space.contains(obs)
    assert set(np.unique(obs)) <= {0.0, 1.0}  # pong's pixels, projected


def test_vector_env_restarts_ended_dreams_on_the_next_step(parts):
    """Heads forced to end every episode: each step ends, the next one restarts (reward 0, a
    real start frame), alternating; truncation cuts episodes that never end."""
    model, heads, starts = parts
    env = DreamVectorEnv(model, heads, starts, num_envs=3, max_steps=2)
    obs, _ = env.reset(seed=0)
    start_frames = {tuple(f.flatten()) for f in starts[0][:, -1]}
    assert all(tuple(o[-1].flatten()) in start_frames for o in obs)
    flags = []
    for _ in range(6):
        obs, reward, terminated, truncated, _ = env.step(np.array([0, 1, 2]))
        flags.append((terminated | truncated).tolist())
    # truncated after 2 dreamed steps; the restart step (a reset) counts none
    assert flags == [[False] * 3, [True] * 3, [False] * 3, [False] * 3, [True] * 3, [False] * 3]

    with torch.no_grad():
        heads.end_shift.fill_(100.0)
    try:
        env.reset(seed=0)
        out = [env.step(np.array([0, 1, 2])) for _ in range(4)]
    finally:
        with torch.no_grad():
            heads.end_shift.zero_()
    assert [o[2].tolist() for o in out] == [[True] * 3, [False] * 3, [True] * 3, [False] * 3]
    assert all((o[1] == 0).all() for o in out[1::2])  # the restart step reports nothing
    assert all(tuple(f[-1].flatten()) in start_frames for f in out[1][0])


def test_dreams_are_seeded(parts):
    model, heads, starts = parts
    runs = []
    for seed in (5, 5, 6):
        env = DreamVectorEnv(model, heads, starts, num_envs=2)
        env.reset(seed=seed)
        runs.append(np.stack([env.step(np.array([1, 2]))[0] for _ in range(3)]))
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])


def test_bad_input_is_named(parts):
    model, heads, starts = parts
    with pytest.raises(ValueError, match=r"starts: expected frames \[N, L >= 3, 1, 32, 32\]"):
        DreamVectorEnv(model, heads, (starts[0][:, :2], starts[1][:, :2]))
    env = DreamVectorEnv(model, heads, starts, num_envs=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="expected 2 actions from Discrete"):
        env.step(np.array([0, 7]))
    single = DreamEnv(model, heads, starts)
    with pytest.raises(RuntimeError, match="call reset"):
        single.step(0)
    with pytest.raises(ValueError, match="more than 50 frames"):
        opening_frames(collect_episodes(lambda: make_world("pong"), [0], default_policy("pong"), 10), 50)


def test_starting_windows_carry_the_episode_tally(parts):
    from diffworld.agents.envs import starting_windows
    from diffworld.data.episodes import Episode

    rewards = np.array([0, 0, -1, 0, 1, 0, -1, 0], dtype=np.float32)
    ep = Episode(
        np.arange(8, dtype=np.float32)[:, None, None, None] * np.ones((8, 1, 32, 32), np.float32),
        np.arange(8) % 3,
        rewards,
        np.arange(8) == 7,
    )
    frames, actions, tally = starting_windows([ep], 3, stride=2)
    assert frames[:, -1, 0, 0, 0].tolist() == [2, 4, 6]  # windows end at frames 2, 4, 6; frame 7 is the episode's last
    assert tally.tolist() == [[0, 1, 2], [1, 1, 4], [1, 2, 6]]
    assert actions[1].tolist() == [2, 0, 1]
    model, heads, _ = parts
    env = DreamVectorEnv(model, heads, (frames, actions, tally), num_envs=2)
    env.reset(seed=0)
    assert {tuple(t) for t in env.tally.tolist()} <= {tuple(t) for t in tally.tolist()}
