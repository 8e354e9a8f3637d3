"""Episodes: the unit of data every world produces and every store and loader serves.

All arrays of an episode are aligned with its frames: index t describes frame t and what led
into it. `actions[t]` is the action taken *before* frame t (so `actions[0]` is `NO_ACTION`),
`rewards[t]` the reward received on arriving at frame t, `dones[t]` whether the episode ended
there. This is exactly what the model conditions on: frame t sees the action that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffworld.spec import WorldSpec


@dataclass
class Episode:
    """One trajectory of a world."""

    frames: np.ndarray  # [T, *frame_shape]
    actions: np.ndarray  # [T] int64 (discrete), [T, d] float32 (continuous) or [T] int64 of NO_ACTION
    rewards: np.ndarray  # [T] float32
    dones: np.ndarray  # [T] bool
    seed: int | None = None
    #: Simulator states per frame (optional), so an evaluation can branch the true world.
    states: list[Any] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def validate(self, spec: WorldSpec, where: str = "episode") -> None:
        """Raise ValueError naming the first thing that does not fit `spec`."""
        spec.check_frames(self.frames, f"{where}.frames")
        t = len(self)
        for name in ("rewards", "dones"):
            a = getattr(self, name)
            if a.shape != (t,):
                raise ValueError(f"{where}.{name}: expected shape [{t}], got {list(a.shape)}")
        if spec.action.kind == "none":
            if self.actions.shape[0] != t:
                raise ValueError(f"{where}.actions: expected {t} entries, got {self.actions.shape[0]}")
        else:
            if self.actions.shape[0] != t:
                raise ValueError(f"{where}.actions: expected {t} entries, got {self.actions.shape[0]}")
            spec.action.validate(self.actions, f"{where}.actions")


def frame_stats(episodes: list[Episode]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of all frames (channel = axis 1 of grid frames, last axis otherwise)."""
    frames = np.concatenate([e.frames for e in episodes]).astype(np.float64)
    axes = tuple(i for i in range(frames.ndim) if i != 1) if frames.ndim == 4 else tuple(range(frames.ndim - 1))
    mean = frames.mean(axis=axes)
    std = frames.std(axis=axes)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)
