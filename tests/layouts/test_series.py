"""Series layout: one token per variable, a learned variable embedding, and a model trained on imported data."""

import numpy as np
import pytest
import torch

from diffworld.data.imports import import_arrays
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.layouts import SeriesLayout, make_layout
from diffworld.model.dit import DiT, DiTConfig
from diffworld.model.world_model import ModelConfig, WorldModel
from diffworld.recipes import train_store
from diffworld.rollout import rollout
from diffworld.spec import WorldSpec
from diffworld.train import TrainConfig


def test_tokens_are_variables_and_make_layout_builds_it():
    layout = make_layout(WorldSpec("s", "series", (5, 2)), patch=8)
    assert isinstance(layout, SeriesLayout) and layout.num_tokens == 5 and layout.token_dim == 2
    x = torch.randn(3, 5, 2)
    assert torch.equal(layout.from_tokens(layout.to_tokens(x)), x)
    assert torch.equal(layout.positions(64), torch.eye(5))
    assert layout.attention_bias() is None and layout.attention_bias_module(2, 2) is None


def test_variable_embeddings_tell_variables_apart_and_are_learned():
    net = DiT(DiTConfig(width=32, depth=1, heads=2), SeriesLayout((4, 1)))
    emb = net.pos_embed(net.pos)  # [V, D]: one learned vector per variable
    assert emb.shape == (4, 32) and torch.cdist(emb, emb)[~torch.eye(4, dtype=bool)].min() > 0
    assert net.pos_embed.weight.requires_grad


def test_no_refiner_and_bad_frames():
    with pytest.raises(ValueError, match="no refiner"):
        DiT(DiTConfig(width=32, depth=1, heads=2, refine=2), SeriesLayout((4, 1)))
    with pytest.raises(ValueError, match="V >= 1"):
        SeriesLayout((0, 1))


def test_a_model_trains_on_imported_series_and_rolls_out(tmp_path):
    t = np.arange(400, dtype=np.float32) * 0.1
    data = np.stack([np.sin(t), np.cos(t), 0.5 * np.sin(2 * t)], axis=1)  # [T, 3]
    import_arrays(tmp_path / "s.zarr", [data[:200], data[200:]], name="waves", variables=("a", "b", "c"))
    cfg = ModelConfig.preset("tiny", frames=4)
    result = train_store(
        tmp_path / "s.zarr",
        tmp_path / "run",
        cfg,
        TrainConfig(steps=3, batch_size=4, warmup=1),
        progress=False,
        log=lambda s: None,
    )
    model = result.model
    assert model.spec.layout == "series" and model.spec.variables == ("a", "b", "c")
    dream = rollout(
        model, torch.as_tensor(data[None, :3, :, None]), horizon=5, n_samples=2, sampler=SamplerConfig(steps=2)
    )
    assert dream.shape == (1, 2, 5, 3, 1) and torch.isfinite(dream).all()
    # the saved model comes back with its variable embedding
    loaded = WorldModel.from_pretrained(tmp_path / "run" / "checkpoint")
    assert torch.equal(loaded.denoiser.net.pos_embed.weight, model.denoiser.net.pos_embed.weight)
