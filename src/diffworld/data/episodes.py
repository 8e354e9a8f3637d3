"""Episodes: the unit of data every world produces and every store and loader serves.

All arrays of an episode are aligned with its frames: index t describes frame t and what led
into it. `actions[t]` is the action taken *before* frame t (so `actions[0]` is `NO_ACTION`),
`rewards[t]` the reward received on arriving at frame t, `dones[t]` whether the episode ended
there. This is exactly what the model conditions on: frame t sees the action that produced it.

`Episode` is defined in `diffworld.spec`, beneath both the worlds that produce episodes and the
stores that keep them; it is importable from here as well.
"""

from __future__ import annotations

import numpy as np

from diffworld.spec import Episode

__all__ = ["Episode", "frame_stats"]


def frame_stats(episodes: list[Episode]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of all frames (channel = axis 1 of grid frames, last axis otherwise)."""
    frames = np.concatenate([e.frames for e in episodes]).astype(np.float64)
    axes = tuple(i for i in range(frames.ndim) if i != 1) if frames.ndim == 4 else tuple(range(frames.ndim - 1))
    mean = frames.mean(axis=axes)
    std = frames.std(axis=axes)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)
