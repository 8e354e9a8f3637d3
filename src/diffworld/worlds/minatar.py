"""MinAtar: five 10x10 miniature Atari games (Young & Tian, 2019) as branchable binary worlds.

A frame is the game's object map, one binary channel per object kind: MinAtar's `state()`
(10, 10, C) bool becomes (C, 10, 10) uint8. Every random draw of a game (spawns, serves, car
speeds) and of its sticky actions comes from one `np.random.RandomState` shared by the game and
its wrapper, so deep-copying the game copies the future and replacing that generator reseeds it.

MinAtar is GPL-licensed and optional: it is imported only when a `MinAtarWorld` is built.
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import numpy as np

from diffworld.spec import ActionSpace, WorldSpec

#: The games MinAtar ships (its module names).
GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
MAX_STEPS = 1000
SIZE = 10
#: MinAtar's action letters -> the names diffworld shows.
ACTION_NAMES = {"n": "none", "l": "left", "u": "up", "r": "right", "d": "down", "f": "fire"}


class MinAtarWorld:
    """One MinAtar game; discrete actions index the game's minimal action set."""

    def __init__(
        self,
        game: str,
        sticky_action_prob: float = 0.1,
        difficulty_ramping: bool = True,
        *,
        max_steps: int = MAX_STEPS,
    ) -> None:
        if game not in GAMES:
            raise ValueError(f"unknown MinAtar game {game!r}; expected one of: {', '.join(GAMES)}")
        if not 0.0 <= sticky_action_prob <= 1.0:
            raise ValueError(f"sticky_action_prob must be in [0, 1], got {sticky_action_prob}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        try:
            from minatar import Environment
        except ImportError:
            raise ImportError("MinAtar is not installed; pip install 'diffworld[minatar]'") from None
        self.game = game
        self.max_steps = int(max_steps)
        self.env = Environment(game, sticky_action_prob=sticky_action_prob, difficulty_ramping=difficulty_ramping)
        inner = self.env.env
        #: diffworld action i plays MinAtar action minimal_actions[i].
        self.minimal_actions = tuple(int(a) for a in self.env.minimal_action_set())
        letters = getattr(inner, "action_map", None)
        names = tuple(ACTION_NAMES.get(letters[a], letters[a]) for a in self.minimal_actions) if letters else ()
        self.spec = WorldSpec(
            name=f"minatar:{game}",
            layout="grid",
            frame_shape=(len(inner.channels), SIZE, SIZE),
            value_kind="binary",
            action=ActionSpace("discrete", len(self.minimal_actions), names),
            variables=tuple(sorted(inner.channels, key=inner.channels.__getitem__)),
            value_range=(0.0, 1.0),
        )
        self.reset()  # always hold a valid state, even before the first explicit reset

    # --- simulation -------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new episode (fresh generator from `seed`) and return its first frame."""
        self.reseed(seed)  # before the game's reset: breakout and freeway draw from it there
        self.env.reset()
        self.env.last_action = 0  # MinAtar keeps the sticky action across episodes; we do not
        self.t = 0
        return self.render()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool]:
        """Apply a discrete action (an index into the minimal action set); return (frame, reward, done)."""
        a = operator.index(action)
        n = len(self.minimal_actions)
        if not 0 <= a < n:
            raise ValueError(f"{self.spec.name} actions are integers in [0, {n}), got {a}")
        reward, terminal = self.env.act(self.minimal_actions[a])
        self.t += 1
        return self.render(), float(reward), bool(terminal) or self.t >= self.max_steps

    def render(self) -> np.ndarray:
        """The current frame, uint8 of shape (C, 10, 10)."""
        return np.ascontiguousarray(self.env.state().transpose(2, 0, 1), dtype=np.uint8)

    # --- branching --------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """A copy of the complete state: the game, its generator, the sticky action and the step count."""
        # One deepcopy keeps the game and its wrapper sharing a single generator in the copy.
        return {"env": copy.deepcopy(self.env), "t": self.t}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state from `get_state` exactly (replay reproduces the same future)."""
        self.env = copy.deepcopy(state["env"])  # copy again: a state can be restored many times
        self.t = int(state["t"])

    def reseed(self, seed: int | None) -> None:
        """Replace the generator of the game and its sticky actions, so a restored state continues with fresh noise."""
        rng = np.random.RandomState(seed)  # what MinAtar's own `Environment.seed(seed)` builds
        self.env.random = self.env.env.random = rng


# --- data-collection policy ---------------------------------------------------------------------

#: Share of random actions in the default policy while the ball falls (it is all random while the
#: ball rises): every action is seen in every situation, so a model must learn what actions do,
#: and games last ~40 steps on average instead of ~10 under uniformly random play.
EPSILON = 0.1


def _track_ball(world: MinAtarWorld, frame: np.ndarray) -> int | None:
    """Breakout: move the paddle under where the ball will be one row above it (0 none, 1 left,
    2 right); None while the ball rises, when any move is safe.

    The ball's direction is read off its trail (where it was a step ago); its path follows the
    diagonal, reflected at the side walls.
    """
    ch = world.spec.variables
    paddle = np.flatnonzero(frame[ch.index("paddle")].any(0))
    ball = np.argwhere(frame[ch.index("ball")])
    trail = np.argwhere(frame[ch.index("trail")])
    if len(ball) == 0 or len(paddle) == 0:
        return 0
    (row, col), target = ball[0], ball[0][1]
    if len(trail):
        d_row, d_col = row - trail[0][0], col - trail[0][1]
        if d_row < 0:
            return None
        if d_row > 0 and d_col != 0:  # falling: follow the diagonal down to the row above the paddle
            # A ball hitting a side wall stays in the edge column for one step, so the path
            # unfolds with period 2·SIZE and column z maps to z or 2·SIZE − 1 − z.
            z = (col + d_col * (SIZE - 2 - row)) % (2 * SIZE)
            target = z if z < SIZE else 2 * SIZE - 1 - z
    if target == paddle[0]:
        return 0
    return 1 if target < paddle[0] else 2


def default_policy(world: Any, frame: np.ndarray, rng: np.random.Generator) -> int:
    """Breakout: random while the ball rises, ε-greedy ball tracking while it falls (uniformly
    random play loses the ball in ~10 steps, so its data is little but serves); the other games:
    uniformly random actions."""
    n = world.spec.action.n
    if getattr(world, "game", None) != "breakout" or rng.random() < EPSILON:
        return int(rng.integers(n))
    action = _track_ball(world, frame)
    return int(rng.integers(n)) if action is None else action
