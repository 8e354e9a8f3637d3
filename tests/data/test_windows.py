"""Training windows never straddle two episodes, and a sliced batch is the slice of the whole batch."""

import numpy as np
import pytest
import torch

from diffworld.data.episodes import Episode
from diffworld.data.windows import WindowSampler


def tagged_episodes(lengths):
    """Episodes whose frame values encode (episode, time): value = 1000·episode + t."""
    out = []
    for e, n in enumerate(lengths):
        frames = (1000 * e + np.arange(n, dtype=np.float32))[:, None, None, None] * np.ones((1, 1, 2, 2), np.float32)
        actions = np.full(n, -1, dtype=np.int64)
        out.append(Episode(frames, actions, np.zeros(n, np.float32), np.zeros(n, bool)))
    return out


def test_windows_stay_inside_one_episode():
    episodes = tagged_episodes([3, 9, 5, 4, 12])
    sampler = WindowSampler(episodes, 5, "none")
    # Starts: ep1 5, ep2 1, ep4 8 (ep0 and ep3 are shorter than a window).
    assert len(sampler) == 5 + 1 + 8
    batch = sampler.sample(2000, torch.Generator().manual_seed(0))
    v = batch.frames[:, :, 0, 0, 0]  # [B, T]
    episode, t = v // 1000, v % 1000
    assert (episode == episode[:, :1]).all(), "a window straddles two episodes"
    assert (t.diff(dim=1) == 1).all()
    assert set(episode[:, 0].int().tolist()) == {1, 2, 4}  # every usable episode is drawn
    assert batch.actions is None


def test_from_arrays_matches_episodes_and_parts_slice_the_batch():
    episodes = tagged_episodes([7, 6, 9])
    a = WindowSampler(episodes, 4, "discrete")
    flat = np.concatenate([e.frames for e in episodes])
    acts = np.concatenate([e.actions for e in episodes])
    b = WindowSampler.from_arrays(flat, acts, np.cumsum([7, 6, 9]), 4)
    whole = a.sample(8, torch.Generator().manual_seed(3))
    assert torch.equal(whole.frames, b.sample(8, torch.Generator().manual_seed(3)).frames)
    halves = [b.sample(8, torch.Generator().manual_seed(3), part=(i, 2)).frames for i in range(2)]
    assert torch.equal(torch.cat(halves), whole.frames)
    with pytest.raises(ValueError, match="equal parts"):
        b.sample(7, torch.Generator(), part=(0, 2))


def test_no_episode_long_enough():
    with pytest.raises(ValueError, match="longest: 3"):
        WindowSampler(tagged_episodes([3, 2]), 4, "none")
