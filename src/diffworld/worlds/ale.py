"""Atari 2600 games through the Arcade Learning Environment (gymnasium `ALE/<Game>-v5`), branchable.

The emulator is deterministic; its only noise is ALE's own generator (sticky actions, Machado et
al. 2018). `cloneState(include_rng=True)` saves the emulator and that generator, so replay is
exact. ALE reseeds its generator only when it loads a ROM, so `reseed` saves the emulator without
the generator, reloads the ROM under the new seed and restores the emulator (about 0.1 s).

ale-py and Gymnasium are imported only when an `AleWorld` is built.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import numpy as np

from diffworld.worlds.gym_env import GymWorld


class AleWorld(GymWorld):
    """One Atari game (minimal action set); frames are the screen resized to (1 or 3, size, size)."""

    def __init__(
        self,
        game: str,
        size: int = 64,
        grayscale: bool = True,
        frameskip: int = 4,
        sticky: float = 0.25,
    ) -> None:
        if frameskip < 1:
            raise ValueError(f"frameskip must be >= 1, got {frameskip}")
        if not 0.0 <= sticky <= 1.0:
            raise ValueError(f"sticky (the repeat-action probability) must be in [0, 1], got {sticky}")
        self.game = resolve_game(game)
        super().__init__(
            f"ALE/{self.game}-v5",
            size,
            grayscale,
            obs_type="grayscale" if grayscale else "rgb",
            frameskip=int(frameskip),
            repeat_action_probability=float(sticky),
        )
        self.spec = dataclasses.replace(self.spec, name=f"ale:{self.game}")

    def _image(self, obs: Any) -> np.ndarray:
        return obs  # ALE's own screen, already grayscale or RGB: no second render

    # --- branching --------------------------------------------------------------------------

    def get_state(self) -> Any:
        """A copy of the complete emulator state, ALE's generator included."""
        return self.env.unwrapped.ale.cloneState(include_rng=True)

    def set_state(self, state: Any) -> None:
        """Restore a state from `get_state` exactly (replay reproduces the same future)."""
        self.env.unwrapped.ale.restoreState(state)

    def reseed(self, seed: int) -> None:
        """Replace ALE's generator, so a restored state continues with fresh sticky-action noise."""
        env = self.env.unwrapped
        emulator = env.ale.cloneState(include_rng=False)
        env.seed_game(seed)  # sets ALE's random_seed, which takes effect at the next ROM load
        env.load_game()
        env.ale.restoreState(emulator)


def resolve_game(game: str) -> str:
    """The ALE name of `game` ("Pong"), matched ignoring case and underscores ("pong", "space_invaders")."""
    try:
        import ale_py
        import gymnasium as gym
    except ImportError:
        raise ImportError("ale-py is not installed; pip install 'diffworld[atari]'") from None
    gym.register_envs(ale_py)
    games = sorted(k[len("ALE/") : -len("-v5")] for k in gym.registry if k.startswith("ALE/") and k.endswith("-v5"))
    by_key = {g.lower(): g for g in games}
    key = game.lower().replace("_", "")
    if key in by_key:
        return by_key[key]
    close = difflib.get_close_matches(key, list(by_key), n=3)
    if close:
        hint = f"did you mean {', '.join(by_key[c] for c in close)}?"
    else:
        hint = f"one of {len(games)} games such as Pong, Breakout, SpaceInvaders"
    raise ValueError(f"unknown Atari game {game!r} (no ALE/{game}-v5); {hint}")
