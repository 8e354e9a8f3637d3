import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from diffworld.agents.envs import WorldVectorEnv
from diffworld.agents.ppo import PPOConfig, play_episodes, train_ppo
from diffworld.worlds import make_world, run_episode


class Signpost(VectorEnv):
    """Each step shows which of 3 actions pays 1 (one-hot); episodes of 5 steps (next-step autoreset)."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs=8):
        self.num_envs = num_envs
        self.single_observation_space = gym.spaces.Box(0, 1, (1, 3), np.float32)
        self.single_action_space = gym.spaces.Discrete(3)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def _show(self):
        self.target = self.np_random.integers(3, size=self.num_envs)
        return np.eye(3, dtype=np.float32)[self.target][:, None]

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._np_random, _ = gym.utils.seeding.np_random(seed)
        self.t = np.zeros(self.num_envs, int)
        self.restart = np.zeros(self.num_envs, bool)
        return self._show(), {}

    def step(self, actions):
        reward = np.where(self.restart, 0.0, (actions == self.target).astype(float))
        self.t = np.where(self.restart, 0, self.t + 1)
        ended = (self.t >= 5) & ~self.restart
        self.restart = ended
        return self._show(), reward, ended, np.zeros(self.num_envs, bool), {}


def test_ppo_learns_to_read_the_signpost():
    envs = Signpost()
    net, history = train_ppo(envs, PPOConfig(steps=8 * 64 * 12, horizon=64, minibatch=128, lr=3e-3), log=lambda s: None)
    assert history[0]["mean_return"] < 2.5  # random: 5/3 per episode
    returns = play_episodes(Signpost(), lambda obs: net.act(obs, greedy=True), 40)
    assert len(returns) == 40 and returns.mean() > 4.5


def test_world_env_replays_the_true_game_on_the_given_seeds():
    """Scores from the vector env equal the simulator's own episodes on the same seeds and actions."""
    seeds = [1_000_000 + i for i in range(5)]
    envs = WorldVectorEnv(lambda: make_world("pong"), num_envs=2, frames=2, max_steps=1000, seeds=iter(seeds * 2))
    returns = play_episodes(envs, lambda obs: np.full(len(obs), 1), 5)
    expected = [run_episode(make_world("pong"), s, lambda w, f, r: 1).rewards.sum() for s in seeds]
    assert returns.tolist() == expected and min(expected) < 0
    obs, _ = WorldVectorEnv(lambda: make_world("pong"), num_envs=1, frames=2, seeds=iter(seeds)).reset()
    assert obs.shape == (1, 2, 1, 32, 32) and np.array_equal(obs[0, 0], obs[0, 1])  # the first frame, repeated
