"""Training windows: T consecutive frames of one episode, never straddling two."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffworld.data.episodes import Episode


@dataclass
class Batch:
    """A batch of windows."""

    frames: torch.Tensor  # [B, T, *frame] float32, world units
    actions: torch.Tensor | None  # [B, T] long or [B, T, d] float: the action leading into each frame


class WindowSampler:
    """Uniform over every window of `length` frames that lies inside one episode."""

    def __init__(self, episodes: list[Episode], length: int, action_kind: str = "discrete") -> None:
        usable = [e for e in episodes if len(e) >= length]
        if not usable:
            longest = max((len(e) for e in episodes), default=0)
            raise ValueError(f"no episode has the {length} frames a window needs (longest: {longest})")
        self.length = length
        self.frames = torch.from_numpy(np.concatenate([e.frames for e in usable]))  # [sum T, *frame]
        self.action_kind = action_kind
        self.actions = None if action_kind == "none" else torch.from_numpy(np.concatenate([e.actions for e in usable]))
        offsets = np.cumsum([0] + [len(e) for e in usable])[:-1]
        # Every valid window start, as an index into the concatenated frames.
        self.starts = torch.from_numpy(np.concatenate([o + np.arange(len(e) - length + 1) for o, e in zip(offsets, usable)]))

    def __len__(self) -> int:
        """Number of distinct windows."""
        return int(self.starts.numel())

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """`batch_size` windows drawn uniformly with replacement."""
        pick = torch.randint(len(self), (batch_size,), generator=generator)
        idx = self.starts[pick][:, None] + torch.arange(self.length)  # [B, T]
        frames = self.frames[idx].float()
        actions = None if self.actions is None else self.actions[idx]
        return Batch(frames=frames, actions=actions)
