"""Training on stores of every action kind: discrete (pong, elsewhere), continuous and none."""

import math

import numpy as np
import torch

from diffworld.data.store import EpisodeStore
from diffworld.model.world_model import ModelConfig
from diffworld.rollout import rollout
from diffworld.spec import ActionSpace, WorldSpec
from diffworld.train import TrainConfig, build_model, train


def moving_dot(n_episodes, length, rng, action_kind):
    """A dot on an 8×8 grid moved by the action (continuous: dx, dy in [-1, 1]) or drifting (none)."""
    frames, actions = [], []
    for _ in range(n_episodes):
        pos = rng.integers(0, 8, size=2)
        f, a = [], []
        for t in range(length):
            step = rng.uniform(-1, 1, size=2).astype(np.float32) if action_kind == "continuous" else np.ones(2)
            if t:
                pos = np.clip(pos + np.round(step).astype(int), 0, 7)
            img = np.zeros((1, 8, 8), np.float32)
            img[0, pos[0], pos[1]] = 1
            f.append(img)
            a.append(step)
        frames.append(np.stack(f))
        actions.append(np.stack(a)[1:] if action_kind == "continuous" else None)  # "taken at t" convention
    return frames, actions


def test_continuous_and_no_action_stores_train(tmp_path):
    rng = np.random.default_rng(0)
    for kind, space in (("continuous", ActionSpace("continuous", 2)), ("none", ActionSpace())):
        spec = WorldSpec(
            name=f"dot-{kind}",
            layout="grid",
            frame_shape=(1, 8, 8),
            value_kind="binary",
            action=space,
            value_range=(0, 1),
        )
        frames, actions = moving_dot(4, 12, rng, kind)
        store = EpisodeStore.from_arrays(
            tmp_path / f"{kind}.zarr", spec, frames, actions if kind == "continuous" else None
        )
        if kind == "continuous":
            assert np.isnan(store.episode(0).actions[0]).all()  # T−1 actions: "no action" prepended
        model = build_model(spec, store, ModelConfig.preset("tiny", patch=4), seed=0)
        result = train(
            model, store, TrainConfig(steps=3, batch_size=4, warmup=1, log_every=1), tmp_path / kind, progress=False
        )
        assert math.isfinite(result.final_loss)
        ctx = torch.as_tensor(np.stack(frames)[:1, :3])
        acts = torch.zeros(1, 2, 2) if kind == "continuous" else None
        dream = rollout(result.model, ctx, acts, horizon=2, generator=torch.Generator().manual_seed(0))
        assert dream.shape == (1, 1, 2, 1, 8, 8)
