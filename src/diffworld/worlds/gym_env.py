"""Any Gymnasium environment as a world: its rendered RGB image, resized, is the frame.

Gymnasium is imported only when a `GymWorld` is built. Gymnasium environments cannot in general
save and restore their state, so a `GymWorld` is not branchable.
"""

from __future__ import annotations

import operator
import os
from typing import Any

import numpy as np

from diffworld.spec import ActionSpace, WorldSpec


class GymWorld:
    """A Gymnasium env made with render_mode="rgb_array"; frames are (3 or 1, size, size) uint8."""

    def __init__(self, env_id: str, size: int = 64, grayscale: bool = False, **make_kwargs: Any) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if "render_mode" in make_kwargs:
            mode = make_kwargs["render_mode"]
            raise ValueError(f"GymWorld renders frames itself (rgb_array); do not pass render_mode, got {mode!r}")
        self.size, self.grayscale = int(size), bool(grayscale)
        self.env = make_env(env_id, render_mode="rgb_array", **make_kwargs)
        try:
            action = action_spec(self.env)
        except ValueError:
            self.env.close()
            raise
        self.spec = WorldSpec(
            name=f"gym:{env_id}",
            layout="grid",
            frame_shape=(1 if grayscale else 3, self.size, self.size),
            value_kind="bounded",
            action=action,
            value_range=(0.0, 255.0),
        )
        self.reset()  # always hold a valid state, even before the first explicit reset

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new episode (the env seeded with `seed`) and return its first frame."""
        obs, _ = self.env.reset(seed=seed)
        return self._frame(obs)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool]:
        """Apply `action` (an int, or a float vector clipped to the Box); return (frame, reward, done)."""
        obs, reward, terminated, truncated, _ = self.env.step(self._env_action(action))
        return self._frame(obs), float(reward), bool(terminated or truncated)

    def close(self) -> None:
        """Release the environment (its renderer included)."""
        self.env.close()

    def _env_action(self, action: Any) -> Any:
        space = self.env.action_space
        if self.spec.action.kind == "discrete":
            a = operator.index(action)
            if not 0 <= a < space.n:
                raise ValueError(f"{self.spec.name} actions are integers in [0, {space.n}), got {a}")
            return space.start + a
        a = np.asarray(action, dtype=np.float32)
        if a.size != self.spec.action.n:
            raise ValueError(f"{self.spec.name} actions have {self.spec.action.n} values, got shape {a.shape}")
        return np.clip(a.reshape(space.shape), space.low, space.high).astype(space.dtype)

    def _image(self, obs: Any) -> np.ndarray:
        """The full-resolution image of the current moment, [H, W, 3] or [H, W] uint8."""
        return self.env.render()

    def _frame(self, obs: Any) -> np.ndarray:
        return resize_frame(self._image(obs), self.size, self.grayscale)


def make_env(env_id: str, **kwargs: Any) -> Any:
    """`gymnasium.make(env_id, **kwargs)` with one-line errors for a missing package or an unknown id."""
    # Frames are rendered off-screen (rgb_array): no display is needed, and without this SDL
    # (pygame, behind classic control) complains on stderr on machines without one.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        import gymnasium as gym
    except ImportError:
        raise ImportError("Gymnasium is not installed; pip install 'diffworld[gym]'") from None
    if env_id.startswith("ALE/"):  # Atari ids exist only once ale-py has registered them
        try:
            import ale_py
        except ImportError:
            raise ImportError(f"{env_id} needs ale-py; pip install 'diffworld[atari]'") from None
        gym.register_envs(ale_py)
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.UnregisteredEnv as e:
        raise ValueError(f"unknown Gymnasium environment {env_id!r}: {e}") from None


def action_spec(env: Any) -> ActionSpace:
    """Discrete(n) -> discrete n (named if the env names them); Box -> continuous, flattened."""
    from gymnasium import spaces

    space = env.action_space
    if isinstance(space, spaces.Discrete):
        meanings = getattr(env.unwrapped, "get_action_meanings", None)
        names = tuple(meanings()) if callable(meanings) else ()
        return ActionSpace("discrete", int(space.n), names if len(names) == space.n else ())
    if isinstance(space, spaces.Box):
        return ActionSpace("continuous", int(np.prod(space.shape)))
    raise ValueError(f"{getattr(env.spec, 'id', env)}: expected a Discrete or Box action space, got {space}")


def resize_frame(image: np.ndarray, size: int, grayscale: bool) -> np.ndarray:
    """An [H, W, 3] or [H, W] uint8 image -> (3 or 1, size, size) uint8.

    Pillow's bilinear filter widens with the shrink factor, so downscaling averages every source
    pixel (like area resampling) and small objects fade rather than vanish.
    """
    from PIL import Image

    img = Image.fromarray(np.asarray(image, dtype=np.uint8))
    img = img.convert("L" if grayscale else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    a = np.asarray(img)  # (size, size) or (size, size, 3)
    return a[None].copy() if grayscale else np.ascontiguousarray(a.transpose(2, 0, 1))
