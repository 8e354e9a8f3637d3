"""A trained world model as a Gymnasium environment: agents act in its dreams.

`DreamVectorEnv` runs `num_envs` dreams as one batch of a `Dreamer` (one network call per
denoising step for all of them). Each episode starts from real frames — a window of a recorded
episode (`starting_windows`, `opening_frames`) — and goes on with the model; rewards and episode
ends come from the `Heads` (`diffworld.agents.heads`) read off every dreamed transition, with the
tally of rewards the heads have predicted so far. An episode also stops (truncated) after
`max_steps` dreamed steps. Ended dreams restart on the next `step` (Gymnasium's next-step
autoreset) while the others go on.

`DreamEnv` is the single-environment face of the same thing (a `gymnasium.Env`, which
`gymnasium.utils.env_checker.check_env` accepts). `WorldVectorEnv` gives the true simulator
the same observations and autoreset, so one agent trains in either and is scored in the real one.

Observations are the newest `frames` frames of a dream, [frames, *frame_shape] float32 in the
world's value range (for pong, 0/1 pixels).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from diffworld.agents.heads import Heads, reward_tally
from diffworld.data.episodes import Episode
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.dreamer import Dreamer
from diffworld.model.world_model import WorldModel
from diffworld.spec import WorldSpec
from diffworld.splits import HELD_OUT_SEED_BASE
from diffworld.worlds.base import World


def opening_frames(episodes: list[Episode], length: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `length` frames [N, length, *frame] and actions [N, length] of every episode long
    enough to go on after them: real starting points for dreams."""
    frames, actions, _ = starting_windows(episodes, length, stride=None)
    return frames, actions


def starting_windows(
    episodes: list[Episode], length: int, stride: int | None = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real starting points for dreams: windows of `length` frames [N, length, *frame], their
    actions [N, length] and the episode's tally at their last frame [N, 3] (positive and negative
    rewards so far, frame index), every `stride` frames of every episode (None: the openings
    only), each with at least one frame of its episode after it."""
    frames, actions, tally = [], [], []
    for e in episodes:
        ends = range(length - 1, len(e) - 1, stride or len(e))  # stride None: the first window only
        episode_tally = reward_tally(e.rewards)
        for t in ends:
            frames.append(e.frames[t - length + 1 : t + 1])
            actions.append(e.actions[t - length + 1 : t + 1])
            tally.append(episode_tally[t])
    if not frames:
        raise ValueError(
            f"need episodes of more than {length} frames to start dreams from, found none "
            f"(longest: {max((len(e) for e in episodes), default=0)})"
        )
    return np.stack(frames), np.stack(actions), np.asarray(tally, dtype=np.float32)


def _spaces(spec: WorldSpec, frames: int) -> tuple[gym.spaces.Box, gym.Space]:
    """Observation space (the newest `frames` frames) and action space of one env of world `spec`."""
    lo, hi = spec.value_range or (-np.inf, np.inf)
    obs = gym.spaces.Box(float(lo), float(hi), (frames, *spec.frame_shape), np.float32)
    act = spec.action
    if act.kind == "discrete":
        return obs, gym.spaces.Discrete(act.n)
    if act.kind == "continuous":
        return obs, gym.spaces.Box(-np.inf, np.inf, (act.n,), np.float32)
    raise ValueError(f"a dream environment needs a world with actions; {spec.name!r} takes none")


def _reseed(env: VectorEnv, seed: int | list[int] | None) -> None:
    """A vector env's `reset(seed=...)`: a new generator from the (first) seed; None keeps the old one."""
    if isinstance(seed, list):
        seed = seed[0]
    if seed is not None:
        env._np_random, env._np_random_seed = gym.utils.seeding.np_random(seed)


class DreamVectorEnv(VectorEnv):
    """`num_envs` dreams of `model`, stepped as one batch (next-step autoreset).

    Args:
        model: a trained WorldModel.
        heads: reward and episode-end heads trained on the same world.
        starts: (frames [N, L, *frame], actions [N, L]) real contexts to start dreams from, with
            L ≥ model.frames − 1, and optionally each one's tally [N, 3] at its last frame
            (default: an episode's opening; see `starting_windows`, `opening_frames`).
        num_envs: dreams in the batch.
        frames: newest frames in an observation.
        max_steps: dreamed steps after which an episode is truncated.
        sampler: the model's sampler settings, unless given.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": ["rgb_array"]}

    def __init__(
        self,
        model: WorldModel,
        heads: Heads,
        starts: tuple[np.ndarray, np.ndarray],
        num_envs: int = 1,
        frames: int = 1,
        max_steps: int = 1000,
        sampler: SamplerConfig | None = None,
        render_mode: str | None = None,
    ) -> None:
        if heads.spec.name != model.spec.name or tuple(heads.spec.frame_shape) != tuple(model.spec.frame_shape):
            raise ValueError(
                f"heads of world {heads.spec.name!r} {list(heads.spec.frame_shape)} "
                f"do not fit model of {model.spec.name!r} {list(model.spec.frame_shape)}"
            )
        keep = model.frames - 1
        if len(starts) not in (2, 3):
            raise ValueError(
                f"starts: expected (frames, actions) or (frames, actions, tally), got {len(starts)} arrays"
            )
        start_frames, start_actions = np.asarray(starts[0]), np.asarray(starts[1])
        if (
            start_frames.ndim != len(model.spec.frame_shape) + 2
            or start_frames.shape[1] < keep
            or tuple(start_frames.shape[2:]) != tuple(model.spec.frame_shape)
        ):
            raise ValueError(
                f"starts: expected frames [N, L >= {keep}, {', '.join(map(str, model.spec.frame_shape))}], "
                f"got {list(start_frames.shape)}"
            )
        if not 1 <= frames <= keep + 1:
            raise ValueError(f"frames: expected 1..{keep + 1} frames per observation, got {frames}")
        if num_envs < 1 or max_steps < 1:
            raise ValueError(f"need num_envs >= 1 and max_steps >= 1, got {num_envs} and {max_steps}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.model, self.heads = model, heads.to(model.device).eval()
        self.start_frames = torch.as_tensor(start_frames[:, -keep:], dtype=torch.float32)
        self.start_actions = torch.as_tensor(start_actions[:, -keep:])
        if len(starts) == 3:
            self.start_tally = torch.as_tensor(np.asarray(starts[2]), dtype=torch.float32)
        else:  # an episode's opening: nothing received yet, at the context's last frame
            self.start_tally = torch.tensor([0.0, 0.0, start_frames.shape[1] - 1]).repeat(len(start_frames), 1)
        if self.start_tally.shape != (len(start_frames), 3):
            raise ValueError(
                f"starts: expected a tally of shape [{len(start_frames)}, 3], got {list(self.start_tally.shape)}"
            )
        self.num_envs, self.obs_frames, self.max_steps, self.render_mode = num_envs, frames, max_steps, render_mode
        self.single_observation_space, self.single_action_space = _spaces(model.spec, frames)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.generator = torch.Generator(device=model.device)
        self.dreamer = Dreamer(model, num_envs, sampler, self.generator)
        self.tally = torch.zeros(num_envs, 3)  # positive, negative rewards so far, frame index in the episode
        self.steps = np.zeros(num_envs, dtype=np.int64)
        self.needs_reset = np.zeros(num_envs, dtype=bool)

    def _starts(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pick = self.np_random.integers(len(self.start_frames), size=n)
        return self.start_frames[pick], self.start_actions[pick], self.start_tally[pick]

    def _observe(self) -> np.ndarray:
        return self.dreamer.history[:, -self.obs_frames :].cpu().numpy().astype(np.float32)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Restart every dream from a randomly drawn real context."""
        _reseed(self, seed)
        self.generator.manual_seed(int(self.np_random.integers(2**62)))
        frames, actions, tally = self._starts(self.num_envs)
        self.dreamer.reset(frames, actions)
        self.tally = tally.clone()
        self.steps[:] = 0
        self.needs_reset[:] = False
        return self._observe(), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Dream one step of every env; envs that ended on the previous step restart instead."""
        actions = np.asarray(actions)
        if actions.shape[:1] != (self.num_envs,) or not all(self.single_action_space.contains(a) for a in actions):
            raise ValueError(
                f"actions: expected {self.num_envs} actions from {self.single_action_space}, got {actions.tolist()!r}"
            )
        restart = np.flatnonzero(self.needs_reset)
        prev = self.dreamer.last.clone()
        a = torch.as_tensor(actions, device=self.model.device)
        if self.model.spec.action.kind == "discrete":
            a = a.long().clone()
            a[torch.as_tensor(restart, dtype=torch.long)] = -1
        frame = self.dreamer.step(a)  # restarting rows are dreamed too and then replaced: one batch, no branch
        self.tally[:, 2] += 1
        reward, ends = self.heads.predict(prev, frame, a, self.tally.to(frame.device))
        reward, ends = reward.cpu(), ends.cpu()
        self.tally[:, 0] += (reward > 0).float()
        self.tally[:, 1] += (reward < 0).float()
        self.steps += 1
        terminated = ends.numpy().copy()
        truncated = (self.steps >= self.max_steps) & ~terminated
        rewards = reward.numpy().astype(np.float64)
        if len(restart):  # next-step autoreset: these envs start afresh and report nothing else
            f, act, tally = self._starts(len(restart))
            self.dreamer.reset(f, act, rows=restart.tolist())
            self.tally[torch.as_tensor(restart)] = tally
            self.steps[restart] = 0
            rewards[restart], terminated[restart], truncated[restart] = 0.0, False, False
        self.needs_reset = terminated | truncated
        return self._observe(), rewards, terminated, truncated, {}

    def render(self) -> np.ndarray | None:
        """The newest frame of every dream as uint8 RGB [num_envs, H, W, 3] (grid worlds)."""
        if self.render_mode != "rgb_array":
            return None
        from diffworld.evaluate.pictures import to_image

        lo_hi = self.model.spec.value_range or (0.0, 1.0)
        return np.stack([to_image(f, 4, lo_hi) for f in self.dreamer.last.cpu().numpy()])


class DreamEnv(gym.Env):
    """One dream of `model` as a `gymnasium.Env` (arguments as `DreamVectorEnv`, without `num_envs`)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, model: WorldModel, heads: Heads, starts: tuple[np.ndarray, np.ndarray], **kwargs: Any) -> None:
        self.vec = DreamVectorEnv(model, heads, starts, num_envs=1, **kwargs)
        self.observation_space, self.action_space = self.vec.single_observation_space, self.vec.single_action_space
        self.render_mode = self.vec.render_mode
        self.ended = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.vec._np_random = self.np_random  # one generator drives starts and dreams
        obs, info = self.vec.reset()
        self.ended = False
        return obs[0], info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.ended:
            raise RuntimeError("the episode has ended: call reset() before step()")
        obs, reward, terminated, truncated, info = self.vec.step(np.asarray([action]))
        self.ended = bool(terminated[0] or truncated[0])
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def render(self) -> np.ndarray | None:
        out = self.vec.render()
        return None if out is None else out[0]


class WorldVectorEnv(VectorEnv):
    """`num_envs` true simulators with the observations of `DreamVectorEnv` (the newest `frames`
    frames, the first frame repeated before there are enough), next-step autoreset: the real game
    an agent is trained on for comparison, or evaluated in.

    Args:
        make: builds a fresh world.
        num_envs: worlds stepped together.
        frames: newest frames in an observation.
        max_steps: steps after which an episode is truncated.
        seeds: episode seeds, used in order (an iterator; e.g. held-out seeds for evaluation);
            default: drawn from the env's generator below `HELD_OUT_SEED_BASE`.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        make: Callable[[], World],
        num_envs: int = 1,
        frames: int = 1,
        max_steps: int = 1000,
        seeds: Iterator[int] | None = None,
    ) -> None:
        if num_envs < 1 or frames < 1 or max_steps < 1:
            raise ValueError(f"need num_envs, frames and max_steps >= 1, got {num_envs}, {frames}, {max_steps}")
        self.worlds = [make() for _ in range(num_envs)]
        spec = self.worlds[0].spec
        self.spec, self.num_envs, self.obs_frames, self.max_steps, self.seeds = spec, num_envs, frames, max_steps, seeds
        if spec.action.kind != "discrete":
            raise ValueError(f"WorldVectorEnv plays discrete-action worlds; {spec.name!r} is {spec.action.kind}")
        self.single_observation_space, self.single_action_space = _spaces(spec, frames)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.obs = np.zeros((num_envs, frames, *spec.frame_shape), np.float32)
        self.steps = np.zeros(num_envs, dtype=np.int64)
        self.needs_reset = np.zeros(num_envs, dtype=bool)
        self.episode_seeds = np.full(num_envs, -1, dtype=np.int64)

    def _next_seed(self) -> int:
        if self.seeds is not None:
            try:
                return int(next(self.seeds))
            except StopIteration:
                raise ValueError("WorldVectorEnv ran out of episode seeds") from None
        return int(self.np_random.integers(HELD_OUT_SEED_BASE))

    def _start(self, i: int) -> None:
        seed = self._next_seed()
        first = self.worlds[i].reset(seed)
        self.obs[i] = np.asarray(first, np.float32)[None]
        self.steps[i], self.needs_reset[i], self.episode_seeds[i] = 0, False, seed

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        _reseed(self, seed)
        for i in range(self.num_envs):
            self._start(i)
        return self.obs.copy(), {"seed": self.episode_seeds.copy()}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions: expected {self.num_envs} actions, got shape {list(actions.shape)}")
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        for i, world in enumerate(self.worlds):
            if self.needs_reset[i]:
                self._start(i)
                continue
            frame, reward, done = world.step(int(actions[i]))
            self.obs[i] = np.concatenate([self.obs[i, 1:], np.asarray(frame, np.float32)[None]])
            self.steps[i] += 1
            rewards[i], terminated[i] = reward, done
            truncated[i] = not done and self.steps[i] >= self.max_steps
        self.needs_reset = terminated | truncated
        return self.obs.copy(), rewards, terminated, truncated, {"seed": self.episode_seeds.copy()}
