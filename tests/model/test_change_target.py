"""Models that diffuse the change from the previous frame (`ModelConfig.target = "change"`)."""

import math

import numpy as np
import pytest
import torch

from diffworld.data.store import EpisodeStore
from diffworld.diffusion.loss import LossConfig, window_loss
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.dreamer import Dreamer
from diffworld.model.denoiser import Denoiser, edm_scalings
from diffworld.model.world_model import ModelConfig, WorldModel
from diffworld.rollout import rollout
from diffworld.train import build_model
from diffworld.worlds import collect_episodes, make_world, random_policy
from tests.conftest import perturb
from tests.model.test_dit import inputs, make_dit

PLAIN = LossConfig(motion_weight=0.0, surprise_weight=0.0)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def field_episodes():
    return collect_episodes(lambda: make_world("fields", size=16), range(4), random_policy)


def field_model(episodes, target, seed=0):
    return build_model(
        make_world("fields", size=16).spec, episodes, ModelConfig.preset("tiny", patch=4, target=target), seed=seed
    )


class ZeroNet(torch.nn.Module):
    """F ≡ 0: the denoiser is then c_skip·x (around the base) — the exact posterior mean for
    Gaussian targets of std σ_data (frames) or change_std (changes)."""

    def forward(self, x, c_noise, actions, times, mask=None, cache=None, write_cache=False, commit=0):
        return torch.zeros_like(x[:, commit:])


def test_the_change_is_edm_preconditioned_around_the_frame_before():
    net = make_dit()
    den = Denoiser(net, sigma_data=0.5, change_std=0.1)
    x, _, a, t = inputs()  # x [2, 5, *frame]
    sigma = torch.rand(2, 5) * 0.5 + 0.01
    base = torch.randn(2, 2, *x.shape[2:])
    e = (...,) + (None,) * 3
    c_skip, c_out, c_in, c_noise = edm_scalings(sigma, 0.5)
    f = net(c_in[e] * x, c_noise, a, t)
    r_skip, r_out, _, _ = edm_scalings(sigma[:, 3:], 0.1)
    got = den(x, sigma, a, t, base=base)
    assert torch.allclose(got[:, :3], c_skip[e][:, :3] * x[:, :3] + c_out[e][:, :3] * f[:, :3], atol=1e-6)
    assert torch.allclose(got[:, 3:], base + r_skip[e] * (x[:, 3:] - base) + r_out[e] * f[:, 3:], atol=1e-6)
    with pytest.raises(ValueError, match="change_std > 0"):
        Denoiser(net, 0.5)(x, sigma, a, t, base=base)
    with pytest.raises(ValueError, match="base: expected"):
        den(x, sigma, a, t, base=torch.randn(2, 6, *x.shape[2:]))


def test_config_names_the_target_and_checks_it(odd_spec, tmp_path):
    assert ModelConfig.preset("tiny", patch=4, target="change").target == "change"
    assert ModelConfig.preset("tiny").change_scale == 1.0
    with pytest.raises(ValueError, match="model target must be one of frame, change, got 'delta'"):
        ModelConfig.preset("tiny", target="delta")
    with pytest.raises(ValueError, match="needs change_std > 0"):
        ModelConfig(target="change").change_scale  # noqa: B018
    with pytest.raises(ValueError, match="change_std must be a finite number"):
        ModelConfig(change_std=float("nan"))
    config = ModelConfig(dit=ModelConfig.preset("tiny", patch=4).dit, target="change", change_std=0.2)
    model = WorldModel(odd_spec, config, np.zeros(3), np.ones(3))
    loaded = WorldModel.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.config.target == "change" and loaded.config.change_std == 0.2
    assert loaded.config.change_scale == pytest.approx(0.4)


def test_build_model_measures_the_change_in_model_units(field_episodes, tmp_path):
    model = field_model(field_episodes, "change")
    frames = [e.frames.astype(np.float64) for e in field_episodes]
    std = np.concatenate(frames).std(axis=(0, 2, 3))
    delta = np.concatenate([np.diff(f, axis=0) for f in frames]) * (0.5 / std)[None, :, None, None]
    assert model.config.change_std == pytest.approx(math.sqrt(np.mean(delta**2)), rel=1e-4)
    assert 0.05 < model.config.change_std < 0.2  # a field step changes ~18% of the field's std
    store = EpisodeStore.create(tmp_path / "s.zarr", make_world("fields", size=16).spec)
    for e in field_episodes:
        store.append(e)
    from_store = build_model(store.spec, store, ModelConfig.preset("tiny", patch=4, target="change"))
    assert from_store.config.change_std == pytest.approx(model.config.change_std, rel=1e-4)
    assert field_model(field_episodes, "frame").config.change_std == 0.0


@pytest.mark.parametrize("target", ["frame", "change"])
def test_the_loss_of_the_exact_gaussian_denoiser_is_one(field_episodes, target):
    """With F ≡ 0 each target is denoised as if it were Gaussian with the scale the model assumes;
    EDM's weighting then makes the expected loss 1 at every noise level — only if the levels, the
    error and the weight count in the target's own units, as they must for a change."""
    model = field_model(field_episodes, target)
    model.denoiser.net = ZeroNet()
    frames = torch.as_tensor(np.stack([e.frames[s : s + 6] for e in field_episodes for s in range(0, 180, 12)]))
    loss = window_loss(model.denoiser, model.normalize(frames), None, PLAIN, seeded())
    assert 0.85 < float(loss) < 1.15, float(loss)


def test_training_a_change_model_needs_teacher_windows_with_a_frame_before(field_episodes):
    model = field_model(field_episodes, "change")
    x = model.normalize(torch.as_tensor(field_episodes[0].frames[None, :6]))
    for bad in (LossConfig(context="forcing"), LossConfig(min_context=0)):
        with pytest.raises(ValueError, match="diffuses the change trains with context='teacher'"):
            window_loss(model.denoiser, x, None, bad, seeded())


@pytest.mark.parametrize("target", ["frame", "change"])
def test_a_dream_is_drawn_at_the_targets_scale(field_episodes, target):
    """F ≡ 0 makes the ODE sampler draw the model's Gaussian prior: frames of std σ_data in model
    units, or the previous frame plus a change of std change_std (the sampler's levels scaled).
    Heun, since Euler's first-order steps shrink a Gaussian's std (32 steps: by ~7%)."""
    model = field_model(field_episodes, target).eval()
    model.denoiser.net = ZeroNet()
    ctx = torch.as_tensor(field_episodes[0].frames[None, :4])
    sampler = SamplerConfig(steps=32, method="heun", sigma_max=20.0)
    dream = rollout(model, ctx, horizon=1, n_samples=64, sampler=sampler, generator=seeded(), use_cache=False)[0, :, 0]
    if target == "frame":
        drawn, scale = model.normalize(dream), model.config.sigma_data
    else:
        drawn, scale = model.normalize(dream) - model.normalize(ctx[:, -1]), model.config.change_std
    assert abs(float(drawn.mean())) < 0.03 * scale  # 5 standard errors of 32,768 draws
    assert float(drawn.std()) == pytest.approx(scale, rel=0.02)


def test_a_change_model_dreams_the_same_cached_uncached_and_stepped(field_episodes):
    model = perturb(field_model(field_episodes, "change", seed=1), seed=1).eval()
    ctx = torch.as_tensor(field_episodes[1].frames[None, 10:12])
    sampler = SamplerConfig(steps=3, churn=1.0)
    cached = rollout(model, ctx, horizon=7, n_samples=2, sampler=sampler, generator=seeded())
    # Within the window (2 context + 2 new frames of 4) the cache is exact; past it, the ring keeps
    # keys computed while older frames were in view, so only the stepped dream below compares.
    full = rollout(model, ctx, horizon=2, n_samples=2, sampler=sampler, generator=seeded(), use_cache=False)
    assert torch.allclose(cached[:, :, :2], full, atol=1e-5)
    two = torch.as_tensor(np.stack([field_episodes[1].frames[10:12], field_episodes[2].frames[30:32]]))
    expected = rollout(model, two, horizon=7, sampler=sampler, generator=seeded())[:, 0]  # past the window too
    dreamer = Dreamer(model, 2, sampler, seeded())
    dreamer.reset(two)
    stepped = torch.stack([dreamer.step() for _ in range(7)], dim=1)
    assert torch.allclose(stepped, expected, atol=1e-5)
    assert not torch.allclose(cached[0, 0], cached[0, 1])  # members differ
