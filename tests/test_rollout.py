import pytest
import torch

from diffworld.diffusion.sampling import SamplerConfig
from diffworld.model.dit import KVCache
from tests.conftest import tiny_model


def run(model, ctx, acts, seed=0, **kw):
    return model.rollout(ctx, acts, generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("method,guidance", [("euler", 1.0), ("heun", 1.0), ("euler", 2.0)])
def test_cached_rollout_equals_full_recompute(odd_model, method, guidance):
    ctx = torch.rand(2, 2, 3, 12, 20)
    acts = torch.randint(0, 3, (2, 2))  # 2 context + 2 new frames fit the window of 5
    sampler = SamplerConfig(steps=3, method=method, guidance=guidance)
    cached = run(odd_model, ctx, acts, n_samples=3, sampler=sampler)
    full = run(odd_model, ctx, acts, n_samples=3, sampler=sampler, use_cache=False)
    assert cached.shape == (2, 3, 2, 3, 12, 20)
    assert torch.allclose(cached, full, atol=1e-5)


def test_rollout_is_seeded_and_members_differ(odd_model):
    ctx, acts = torch.rand(1, 3, 3, 12, 20), torch.randint(0, 3, (1, 4))
    a, b, c = run(odd_model, ctx, acts, 1, n_samples=4), run(odd_model, ctx, acts, 1, n_samples=4), run(odd_model, ctx, acts, 2, n_samples=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a[0, 0], a[0, 1])


def test_long_rollout_slides_and_costs_the_same_per_frame(odd_model, monkeypatch):
    """Beyond the trained window the cache keeps frames − 1 frames: attention length stays bounded."""
    seen = []
    original = KVCache.append

    def spy(self, layer, k, v):
        original(self, layer, k, v)
        seen.append(self.k[layer].shape[-2])

    monkeypatch.setattr(KVCache, "append", spy)
    out = run(odd_model, torch.rand(1, 4, 3, 12, 20), torch.randint(0, 3, (1, 20)), n_samples=2)
    assert out.shape == (1, 2, 20, 3, 12, 20) and torch.isfinite(out).all()
    assert max(seen) == odd_model.frames - 1


def test_context_longer_than_window_uses_the_newest_frames(odd_model):
    ctx, acts = torch.rand(1, 9, 3, 12, 20), torch.randint(0, 3, (1, 2))
    keep = odd_model.frames - 1
    assert torch.equal(run(odd_model, ctx, acts), run(odd_model, ctx[:, -keep:], acts))


def test_binary_worlds_are_projected():
    from diffworld.worlds import make_world

    model = tiny_model(make_world("pong").spec, patch=8)
    out = run(model, torch.zeros(1, 2, 1, 32, 32), torch.zeros(1, 3, dtype=torch.long))
    assert set(out.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize(
    "ctx,acts,match",
    [
        (torch.rand(1, 2, 3, 12, 21), torch.zeros(1, 2, dtype=torch.long), r"expected shape \[B, L, 3, 12, 20\]"),
        (torch.rand(2, 3, 12, 20), torch.zeros(1, 2, dtype=torch.long), "expected shape"),
        (torch.full((1, 2, 3, 12, 20), float("nan")), torch.zeros(1, 2, dtype=torch.long), "NaN"),
        (torch.rand(1, 2, 3, 12, 20), torch.full((1, 2), 3), r"expected actions in \[0, 3\)"),
        (torch.rand(1, 2, 3, 12, 20), torch.zeros(2, 2, dtype=torch.long), r"actions: expected shape \[1, 2\]"),
    ],
)
def test_bad_input_is_named(odd_model, ctx, acts, match):
    with pytest.raises(ValueError, match=match):
        odd_model.rollout(ctx, acts)
