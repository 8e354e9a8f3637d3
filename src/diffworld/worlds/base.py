"""The World protocol, data-collection policies and the episode collector."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from diffworld.spec import NO_ACTION, Episode, WorldSpec


@runtime_checkable
class World(Protocol):
    """A simulator diffworld can learn from.

    Frames are numpy arrays of shape `spec.frame_shape`. Worlds that can be branched (so the
    true simulator gives an oracle ensemble) implement `get_state`, `set_state` and `reseed`.
    """

    spec: WorldSpec

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new episode and return its first frame."""
        ...

    def step(self, action: Any) -> tuple[np.ndarray, float, bool]:
        """Apply `action`; return the next frame, the reward received and whether the episode ended."""
        ...


@runtime_checkable
class BranchableWorld(World, Protocol):
    """A world whose full state (its random generator included) can be saved and restored."""

    def get_state(self) -> Any:
        """A copy of the complete simulator state."""
        ...

    def set_state(self, state: Any) -> None:
        """Restore a state returned by `get_state` (the random generator too: replay is exact)."""
        ...

    def reseed(self, seed: int) -> None:
        """Replace the random generator, so a restored state continues with fresh noise."""
        ...


@runtime_checkable
class DecodableWorld(Protocol):
    """A world that can read its state off a frame, so evaluation scores objects, not pixels."""

    #: Names of the decoded state variables.
    state_names: tuple[str, ...]
    #: [K, 2] lowest and highest possible value of each state variable.
    state_bounds: np.ndarray

    def decode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frames [..., *frame_shape] -> (state [..., K] with NaN for a missing object, valid [...] bool)."""
        ...


def generator_state(rng: np.random.Generator) -> dict[str, Any]:
    """A copy of a numpy generator's full state, for a branchable world's `get_state`."""
    return copy.deepcopy(rng.bit_generator.state)


def check_no_action(world: str, action: Any) -> None:
    """Raise ValueError unless `action` is None or NO_ACTION: what a world without actions accepts."""
    if action is not None and not (np.ndim(action) == 0 and int(action) == NO_ACTION):
        raise ValueError(f"{world} takes no actions (None or {NO_ACTION}), got {action!r}")


def restore_generator(state: dict[str, Any]) -> np.random.Generator:
    """A generator that continues exactly where the one `generator_state` copied stood."""
    state = copy.deepcopy(state)
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


#: A policy maps (world, current frame, rng) to an action.
Policy = Callable[[World, np.ndarray, np.random.Generator], Any]


def random_policy(world: World, frame: np.ndarray, rng: np.random.Generator) -> Any:
    """Uniformly random actions, drawn fresh every step."""
    space = world.spec.action
    if space.kind == "discrete":
        return int(rng.integers(space.n))
    if space.kind == "continuous":
        return rng.uniform(-1.0, 1.0, size=space.n).astype(np.float32)
    return None


def epsilon_greedy(expert: Policy, epsilon: float) -> Policy:
    """With probability `epsilon` a random action, otherwise the expert's."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")

    def policy(world: World, frame: np.ndarray, rng: np.random.Generator) -> Any:
        if rng.random() < epsilon:
            return random_policy(world, frame, rng)
        return expert(world, frame, rng)

    return policy


def run_episode(
    world: World,
    seed: int,
    policy: Policy = random_policy,
    max_steps: int = 1000,
    keep_states: bool = False,
) -> Episode:
    """Play one episode of `world` from `reset(seed)` under `policy`."""
    rng = np.random.default_rng([seed, 7919])  # the policy's noise, independent of the world's
    space = world.spec.action
    frame = world.reset(seed)
    frames, actions, rewards, dones = [frame], [_no_action(space)], [0.0], [False]
    states = [world.get_state()] if keep_states else None  # type: ignore[attr-defined]
    for _ in range(max_steps):
        action = policy(world, frame, rng)
        frame, reward, done = world.step(action)
        frames.append(frame)
        actions.append(_no_action(space) if action is None else action)
        rewards.append(float(reward))
        dones.append(bool(done))
        if keep_states:
            states.append(world.get_state())  # type: ignore[attr-defined,union-attr]
        if done:
            break
    if space.kind == "continuous":
        act = np.asarray(actions, dtype=np.float32)
    else:
        act = np.asarray(actions, dtype=np.int64)
    return Episode(
        frames=np.stack(frames),
        actions=act,
        rewards=np.asarray(rewards, dtype=np.float32),
        dones=np.asarray(dones, dtype=bool),
        seed=seed,
        states=states,
    )


def collect_episodes(
    make: Callable[[], World],
    seeds: list[int] | range,
    policy: Policy = random_policy,
    max_steps: int = 1000,
    keep_states: bool = False,
) -> list[Episode]:
    """One episode per seed, each from a fresh world made by `make`."""
    world = make()
    return [run_episode(world, int(s), policy, max_steps, keep_states) for s in seeds]


def _no_action(space: Any) -> Any:
    if space.kind == "continuous":
        return np.full(space.n, np.nan, dtype=np.float32)
    return NO_ACTION
