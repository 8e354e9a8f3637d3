"""Pong: a 32x32 binary two-paddle game, integer and pixel-exact, branchable and decodable.

The game is deterministic between serves; each serve (at reset and after every point) draws the
ball's row and velocity from the world's own generator, which is what an oracle ensemble varies.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
from scipy import ndimage

from diffworld.spec import ActionSpace, WorldSpec
from diffworld.worlds.base import World, epsilon_greedy, generator_state, restore_generator

SIZE = 32
PADDLE_H = 6
PADDLE_SPEED = 2
POINTS_TO_WIN = 3
MAX_STEPS = 1000
PADDLE_MIN, PADDLE_MAX = 1, SIZE - 1 - PADDLE_H  # top row of a paddle: 1..25
BALL_X_MIN, BALL_X_MAX = 2, SIZE - 4  # top-left column of the 2x2 ball: 2..28
BALL_Y_MIN, BALL_Y_MAX = 1, SIZE - 3  # top-left row of the 2x2 ball: 1..29
PADDLE_START = 13
SERVE_X = 15
SERVE_Y_LOW, SERVE_Y_HIGH = 8, 22  # inclusive
#: Rows a serve draws from, uniformly: the outcomes of pong's chance event.
SERVE_ROWS = SERVE_Y_HIGH - SERVE_Y_LOW + 1
#: Directions a served ball's first move shows, uniformly: a column left or right, by a row up, none
#: or down (drawn at the serve, seen one frame later: pong's second chance event).
FIRST_MOVES = 6
PLAYER_COL, OPPONENT_COL = 1, SIZE - 2
#: Paddle displacement per action: none, up, down.
ACTION_DELTA = np.array([0, -PADDLE_SPEED, PADDLE_SPEED])
_DECODE_CHUNK = 8192  # frames per decoding block (bounds the memory of thresholding and labelling)

SPEC = WorldSpec(
    name="pong",
    layout="grid",
    frame_shape=(1, SIZE, SIZE),
    value_kind="binary",
    action=ActionSpace("discrete", 3, ("none", "up", "down")),
    variables=("pixels",),
    value_range=(0.0, 1.0),
)


class Pong:
    """Player paddle (column 1) against a ball-tracking opponent (column 30); first to 3 points."""

    spec: WorldSpec = SPEC
    state_names: tuple[str, ...] = ("ball_x", "ball_y", "paddle_y", "opponent_y")
    state_bounds: np.ndarray = np.array([[2, 28], [1, 29], [1, 25], [1, 25]], dtype=float)
    #: Index of the action-controlled variable (paddle_y) in the decoded state.
    controlled_index: int = 2

    def __init__(self, *, max_steps: int = MAX_STEPS) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = int(max_steps)
        self.reset()  # always hold a valid state, even before the first explicit reset

    # --- simulation -------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new episode (fresh generator from `seed`) and return its first frame."""
        self.rng = np.random.default_rng(seed)
        self.py = self.oy = PADDLE_START
        self.score_player = self.score_opponent = 0
        self.t = 0
        self._serve()
        return self.render()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool]:
        """Apply a discrete action (0 none, 1 up, 2 down); return (frame, reward, done)."""
        a = operator.index(action)
        if not 0 <= a < 3:
            raise ValueError(f"pong actions are 0 (none), 1 (up) or 2 (down), got {a}")
        self.py = _clip_paddle(self.py + int(ACTION_DELTA[a]))
        if self.vx > 0:  # the opponent only chases a ball that comes toward it
            diff = self.by - self.oy - 2  # ball centre (by+0.5) minus paddle centre (oy+2.5)
            if abs(diff) > 0.5:
                self.oy = _clip_paddle(self.oy + (1 if diff > 0 else -1))
        reward = self._move_ball()
        self.t += 1
        done = max(self.score_player, self.score_opponent) >= POINTS_TO_WIN or self.t >= self.max_steps
        return self.render(), reward, done

    def _move_ball(self) -> float:
        vx, vy = self.vx, self.vy
        ny = self.by + vy
        if ny < BALL_Y_MIN or ny > BALL_Y_MAX:  # wall bounce: reflect, then move from the old row
            vy = -vy
            ny = self.by + vy
        nx = self.bx + vx
        if nx < BALL_X_MIN or nx > BALL_X_MAX:
            left = nx < BALL_X_MIN
            top = self.py if left else self.oy
            if ny <= top + PADDLE_H - 1 and ny + 1 >= top:  # ball rows overlap the paddle rows
                vx = -vx
                nx = self.bx + vx
                offset = (ny + 1) - (top + 3)  # = (ny+0.5) - (top+2.5): ball centre - paddle centre
                if offset < -1:
                    vy = -1
                elif offset > 1:
                    vy = 1
            else:
                if left:
                    self.score_opponent += 1
                else:
                    self.score_player += 1
                self._serve()
                return -1.0 if left else 1.0
        self.bx, self.by, self.vx, self.vy = nx, ny, vx, vy
        return 0.0

    def _serve(self) -> None:
        # Draw order is part of the contract of get_state/set_state replay: row, then vx, then vy.
        self.bx = SERVE_X
        self.by = int(self.rng.integers(SERVE_Y_LOW, SERVE_Y_HIGH + 1))
        self.vx = int(self.rng.integers(2)) * 2 - 1
        self.vy = int(self.rng.integers(-1, 2))

    def render(self) -> np.ndarray:
        """The current frame, uint8 of shape (1, 32, 32)."""
        f = np.zeros((1, SIZE, SIZE), dtype=np.uint8)
        f[0, 0, :] = f[0, SIZE - 1, :] = 1
        f[0, self.py : self.py + PADDLE_H, PLAYER_COL] = 1
        f[0, self.oy : self.oy + PADDLE_H, OPPONENT_COL] = 1
        f[0, self.by : self.by + 2, self.bx : self.bx + 2] = 1
        return f

    # --- branching --------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """A copy of the complete state, the generator's included."""
        return {
            "bx": self.bx, "by": self.by, "vx": self.vx, "vy": self.vy,
            "py": self.py, "oy": self.oy,
            "score_player": self.score_player, "score_opponent": self.score_opponent,
            "t": self.t,
            "rng": generator_state(self.rng),
        }  # fmt: skip

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state from `get_state` exactly (replay reproduces the same future)."""
        for key in ("bx", "by", "vx", "vy", "py", "oy", "score_player", "score_opponent", "t"):
            setattr(self, key, int(state[key]))
        self.rng = restore_generator(state["rng"])

    def reseed(self, seed: int) -> None:
        """Replace the generator, so a restored state continues with fresh serves."""
        self.rng = np.random.default_rng(seed)

    # --- decoding ---------------------------------------------------------------------------

    def decode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frames [..., 1, 32, 32] -> (state [..., 4] float64 with NaN if missing, valid [...] bool)."""
        return decode(frames)

    def controlled_next(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        """Expected paddle_y after `action` from decoded `state` [..., 4] (NaN stays NaN)."""
        return controlled_next(state, action)


def decode(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """frames [..., 1, 32, 32] -> (state [..., 4] float64 with NaN if missing, valid [...] bool)."""
    a = np.asarray(frames)
    if a.ndim < 3 or a.shape[-3:] != (1, SIZE, SIZE):
        raise ValueError(f"pong frames must have shape [..., 1, {SIZE}, {SIZE}], got {list(a.shape)}")
    batch = a.shape[:-3]
    flat = a.reshape(-1, SIZE, SIZE)
    state = np.full((flat.shape[0], 4), np.nan)
    valid = np.zeros(flat.shape[0], dtype=bool)
    for s in range(0, flat.shape[0], _DECODE_CHUNK):
        block = slice(s, s + _DECODE_CHUNK)
        state[block], valid[block] = _decode_block(flat[block] > 0.5)
    return state.reshape(*batch, 4), valid.reshape(batch)


def _decode_block(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary frames [n, 32, 32] -> (state [n, 4], valid [n])."""
    inner = slice(1, SIZE - 1)  # rows 1..30
    walls = b[:, 0, :].all(1) & b[:, SIZE - 1, :].all(1)
    sides_empty = ~(b[:, inner, 0].any(1) | b[:, inner, SIZE - 1].any(1))
    py, p_ok = _decode_paddle(b[:, inner, PLAYER_COL])
    oy, o_ok = _decode_paddle(b[:, inner, OPPONENT_COL])
    bx, by, b_ok = _decode_ball(b[:, inner, BALL_X_MIN : BALL_X_MAX + 2])
    return np.stack([bx, by, py, oy], axis=1), walls & sides_empty & p_ok & o_ok & b_ok


def _decode_paddle(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column pixels of rows 1..30 [n, 30] -> (top row estimate or NaN, valid)."""
    count = col.sum(1)
    row_sum = col.astype(np.float64) @ np.arange(1, SIZE - 1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pos = row_sum / count - (PADDLE_H - 1) / 2  # mean row - 2.5 = top row of a true paddle
    runs = col[:, 0].astype(np.int64) + (col[:, 1:] & ~col[:, :-1]).sum(1)  # contiguous on-runs
    return pos, (count == PADDLE_H) & (runs == 1)


def _decode_ball(region: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Play-field pixels (rows 1..30, columns 2..29) [n, 30, 28] -> (x, y, valid)."""
    h, w = region.shape[1:]
    count = region.sum((1, 2))
    rows, cols = region.any(2), region.any(1)
    r0, r1 = rows.argmax(1), h - 1 - rows[:, ::-1].argmax(1)
    c0, c1 = cols.argmax(1), w - 1 - cols[:, ::-1].argmax(1)
    # Fast path: 4 pixels in a 2x2 bounding box is exactly one 2x2 square (the only valid ball).
    square = (count == 4) & (r1 - r0 == 1) & (c1 - c0 == 1)
    x = np.where(square, c0 + BALL_X_MIN, np.nan)
    y = np.where(square, r0 + 1, np.nan)
    rest = np.flatnonzero(~square & (count > 0))
    if rest.size:  # anything else: position of the largest 8-connected blob (never valid)
        x[rest], y[rest] = _largest_blob(region[rest])
        x[rest] += BALL_X_MIN
        y[rest] += 1
    return x, y, square


def _largest_blob(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-empty binary images [m, h, w] -> top-left-equivalent (mean - 0.5) of each one's largest blob."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connectivity inside a frame, never across frames: one call labels all
    labels, k = ndimage.label(region, structure)
    idx = np.flatnonzero(labels)
    lab = labels.ravel()[idx]
    f, r, c = np.unravel_index(idx, region.shape)
    size = np.bincount(lab, minlength=k + 1)[1:]
    mean_r = np.bincount(lab, weights=r, minlength=k + 1)[1:] / size
    mean_c = np.bincount(lab, weights=c, minlength=k + 1)[1:] / size
    frame_of = np.zeros(k, dtype=np.int64)
    frame_of[lab - 1] = f
    # Per frame, the largest blob; ties go to the lowest label (first in row-major scan order).
    order = np.lexsort((np.arange(k), -size, frame_of))
    first = np.r_[True, frame_of[order][1:] != frame_of[order][:-1]]
    best = order[first]  # one per frame, in frame order (every frame has at least one blob)
    return mean_c[best] - 0.5, mean_r[best] - 0.5


def serve_frames(rewards: np.ndarray) -> np.ndarray:
    """Indices t of an episode's frames that show a new serve: a point ended at step t (reward ±1)."""
    return np.flatnonzero(np.asarray(rewards) != 0)


def read_serve(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What frames [..., 1, 32, 32] that should show a serve hold: (valid [...], no ball [...], row [...]).

    `row` is the served ball's row as an outcome 0..SERVE_ROWS − 1 (row SERVE_Y_LOW + outcome)
    where the frame is valid with the ball at the serve column in a row the game serves from,
    and −1 elsewhere (no ball, an invalid frame, a ball elsewhere).
    """
    state, valid = decode(frames)
    x, y = state[..., 0], state[..., 1]
    with np.errstate(invalid="ignore"):  # NaN: no ball
        served = valid & (x == SERVE_X) & (y >= SERVE_Y_LOW) & (y <= SERVE_Y_HIGH)
    row = np.where(served, np.nan_to_num(y) - SERVE_Y_LOW, -1).astype(np.int64)
    return valid, np.isnan(x), row


def one_ball(frames: np.ndarray) -> np.ndarray:
    """bool [...]: whether frames [..., 1, 32, 32] show exactly one ball (a 2x2 square in the play
    field, whatever the walls and paddles show)."""
    a = np.asarray(frames)
    if a.ndim < 3 or a.shape[-3:] != (1, SIZE, SIZE):
        raise ValueError(f"pong frames must have shape [..., 1, {SIZE}, {SIZE}], got {list(a.shape)}")
    region = a.reshape(-1, SIZE, SIZE)[:, 1 : SIZE - 1, BALL_X_MIN : BALL_X_MAX + 2] > 0.5
    return _decode_ball(region)[2].reshape(a.shape[:-3])


def read_first_move(frames: np.ndarray, served: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What frames [..., 1, 32, 32] one step after a serve hold, given the row the ball was served
    in [...] (a serve frame's ball row; NaN where unknown): (valid [...], no ball [...], move [...]).

    `move` is the first move's direction as an outcome 0..FIRST_MOVES − 1, 3·(right) + (row step + 1),
    where the frame is valid with the ball a column beside the serve column and at most a row from
    the served row, and −1 elsewhere (no ball, an invalid frame, a ball elsewhere, no served row).
    """
    state, valid = decode(frames)
    x, y = state[..., 0], state[..., 1]
    with np.errstate(invalid="ignore"):  # NaN: no ball, or no served row
        dx, dy = x - SERVE_X, y - np.asarray(served, dtype=np.float64)
        moved = valid & (np.abs(dx) == 1) & (np.abs(dy) <= 1)
    move = np.where(moved, 3 * (np.nan_to_num(dx) > 0) + np.nan_to_num(dy) + 1, -1).astype(np.int64)
    return valid, np.isnan(x), move


def controlled_next(state: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Expected paddle_y after `action` from decoded `state` [..., 4] (NaN stays NaN)."""
    a = np.asarray(action)
    if not np.issubdtype(a.dtype, np.integer) or ((a < 0) | (a >= 3)).any():
        raise ValueError("pong actions must be integers 0 (none), 1 (up) or 2 (down)")
    paddle = np.asarray(state, dtype=np.float64)[..., Pong.controlled_index]
    return np.clip(paddle + ACTION_DELTA[a], PADDLE_MIN, PADDLE_MAX)  # clip keeps NaN


def tracker_policy(world: World, frame: np.ndarray, rng: np.random.Generator) -> int:
    """Move the player's paddle centre toward the ball centre; "none" when within 1 row."""
    if not isinstance(world, Pong):
        raise TypeError(f"tracker_policy plays Pong, got {type(world).__name__}")
    diff = world.by - world.py - 2  # ball centre (by+0.5) minus paddle centre (py+2.5)
    if abs(diff) <= 1:
        return 0
    return 1 if diff < 0 else 2


def _clip_paddle(top: int) -> int:
    return min(max(top, PADDLE_MIN), PADDLE_MAX)


#: The default data policy: half random actions, half tracking the ball.
default_policy = epsilon_greedy(tracker_policy, 0.5)

#: Loss settings recommended for training on pong (see `diffworld.diffusion.loss.LossConfig`).
#: Serves and the opponent starting to move are rare (2.7% of frames) and their occurrence is
#: decided by the past and the action — only the serve's row and direction are random — so
#: weighting those frames up is exact here: without it a model never learns to serve.
#: The target noise levels are centred near the sampler's σ_max (5): one Euler step queries the
#: denoiser there and nowhere else, and the generic ln σ ~ N(−0.4, 1.2²) spends 82% of the
#: targets below σ = 2. Centring them at ln σ ~ N(1.0, 0.8²) cut the time to skill ≥ 0.7 at every
#: horizon from over 30 minutes to 16–25 (median 19 over three seeds; benchmarks/time_to_skill.py,
#: docs/research-log.md); 4 and 8 Euler steps still sample as well or better.
#: A chance code's posterior mean weighs 5 beside its decoder: fine-tuned with it, the shipped model's
#: ordinary frames stayed exact more often (0.987 against 0.983) and serves were drawn more often and
#: more uniformly (0.973, rows p 0.09, against 0.959, p 0.02; validation seeds, docs/research-log.md).
TRAINING_DEFAULTS = {"event_weight": 10.0, "p_mean": 1.0, "p_std": 0.8, "chance_mean_weight": 5.0}

#: Sampler settings for pong models: the reference model's, chosen on the validation seeds
#: (1,500,000+) from steps {1, 2, 3} x context noise {0.02, 0.05} (MODEL.md). Early in training
#: they matter more than at the end: on a 22-minute `small` model, min skill vs oracle over
#: h = 1..16 was 0.59 with these and 0.34 with the generic 3 steps at σ_ctx 0.05 (docs/research-log.md).
SAMPLER_DEFAULTS = {"steps": 1, "sigma_ctx": 0.02}
