"""Training windows: T consecutive frames of one episode, never straddling two."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffworld.data.episodes import Episode
from diffworld.distributed import part_rows


@dataclass
class Batch:
    """A batch of windows."""

    frames: torch.Tensor  # [B, T, *frame] float32, world units
    actions: torch.Tensor | None  # [B, T] long or [B, T, d] float: the action leading into each frame
    starts: torch.Tensor | None = None  # [B] long: each window's first frame, an index into the flat frames


def flatten(episodes: list[Episode]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episodes -> (frames [N, *frame], actions [N, ...], episode ends [E]): the flat layout of a store."""
    frames = np.concatenate([e.frames for e in episodes])
    actions = np.concatenate([e.actions for e in episodes])
    return frames, actions, np.cumsum([len(e) for e in episodes]).astype(np.int64)


class WindowSampler:
    """Uniform over every window of `length` frames that lies inside one episode.

    The frames of all episodes sit in one flat array; `ends` marks where each episode stops, and
    a window start is valid only if the window ends inside the same episode.
    """

    def __init__(self, episodes: list[Episode], length: int, action_kind: str = "discrete") -> None:
        if not episodes:
            raise ValueError("a window sampler needs at least one episode, got none")
        frames, actions, ends = flatten(episodes)
        self._init(frames, None if action_kind == "none" else actions, ends, length)

    @classmethod
    def from_arrays(
        cls, frames: np.ndarray, actions: np.ndarray | None, ends: np.ndarray, length: int
    ) -> WindowSampler:
        """Flat frames [N, *frame] and actions [N, ...] (None: no actions) of episodes ending at `ends` [E]."""
        sampler = cls.__new__(cls)
        sampler._init(frames, actions, np.asarray(ends, dtype=np.int64), length)
        return sampler

    def _init(self, frames: np.ndarray, actions: np.ndarray | None, ends: np.ndarray, length: int) -> None:
        starts_of_episode = np.concatenate([[0], ends[:-1]])
        lengths = ends - starts_of_episode
        if lengths.max(initial=0) < length:
            raise ValueError(
                f"no episode has the {length} frames a window needs (longest: {int(lengths.max(initial=0))})"
            )
        self.length = length
        self.frames = torch.from_numpy(np.ascontiguousarray(frames))  # [sum T, *frame]
        self.actions = None if actions is None else torch.from_numpy(np.ascontiguousarray(actions))
        # Every valid window start, as an index into the flat frames.
        self.starts = torch.from_numpy(
            np.concatenate([s + np.arange(n - length + 1) for s, n in zip(starts_of_episode, lengths) if n >= length])
        )

    def __len__(self) -> int:
        """Number of distinct windows."""
        return int(self.starts.numel())

    def ending_at(self, frames: torch.Tensor) -> torch.Tensor:
        """The starts of the windows whose last frame is one of the flat frame indices `frames` (those that exist)."""
        starts = frames.long() - (self.length - 1)
        return starts[torch.isin(starts, self.starts)]

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator,
        part: tuple[int, int] = (0, 1),
        starts: torch.Tensor | None = None,
    ) -> Batch:
        """`batch_size` windows drawn uniformly with replacement (among `starts`, a subset of the
        valid window starts, if given).

        `part = (i, n)` returns only the i-th of n equal slices of the batch, with the generator
        advanced exactly as for the whole batch: n processes sharing a seed together draw the
        batch one process would.
        """
        pool = self.starts if starts is None else starts
        pick = torch.randint(len(pool), (batch_size,), generator=generator)[part_rows(batch_size, part)]
        starts = pool[pick]
        idx = starts[:, None] + torch.arange(self.length)  # [B, T]
        frames = self.frames[idx].float()
        actions = None if self.actions is None else self.actions[idx]
        return Batch(frames=frames, actions=actions, starts=starts)
