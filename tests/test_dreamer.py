import pytest
import torch

from diffworld.diffusion.sampling import SamplerConfig
from diffworld.dreamer import Dreamer
from diffworld.rollout import rollout


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("method,guidance", [("euler", 1.0), ("heun", 2.0)])
def test_stepping_equals_rollout_draw_for_draw(odd_model, method, guidance):
    """Past the trained window too (7 steps, window 5): the ring slides the same way."""
    sampler = SamplerConfig(steps=2, method=method, guidance=guidance)
    ctx, acts = torch.rand(2, 3, 3, 12, 20), torch.randint(0, 3, (2, 7))
    expected = rollout(odd_model, ctx, acts, sampler=sampler, generator=seeded())[:, 0]  # [2, 7, *frame]
    dreamer = Dreamer(odd_model, 2, sampler, seeded())
    dreamer.reset(ctx)
    got = torch.stack([dreamer.step(acts[:, h]) for h in range(7)], dim=1)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.equal(dreamer.last, got[:, -1]) and len(dreamer) == odd_model.frames - 1


def without_noise(monkeypatch):
    """Every Gaussian draw 0: a dream becomes a function of its context and actions alone, so
    dreams that consumed different draws can be compared."""

    def zeros(shape, generator=None, device=None, dtype=None):
        return torch.zeros(shape, device=device, dtype=dtype or torch.float32)

    monkeypatch.setattr(torch, "randn", zeros)


def test_restarting_one_row_leaves_the_others_alone_and_matches_a_fresh_dream(odd_model, monkeypatch):
    """Row 1 restarts mid-dream (past the window): rows 0 and 2 go on as if nothing happened, and
    row 1 dreams what a fresh one-row Dreamer dreams from the same context."""
    sampler = SamplerConfig(steps=2)
    ctx = torch.rand(3, 4, 3, 12, 20)
    acts = torch.randint(0, 3, (3, 9))
    new_ctx = torch.rand(1, 4, 3, 12, 20)
    without_noise(monkeypatch)

    base = Dreamer(odd_model, 3, sampler)
    base.reset(ctx)
    undisturbed = torch.stack([base.step(acts[:, h]) for h in range(9)], 1)

    d = Dreamer(odd_model, 3, sampler)
    d.reset(ctx)
    frames = [d.step(acts[:, h]) for h in range(5)]
    d.reset(new_ctx, rows=[1])
    frames += [d.step(acts[:, h]) for h in range(5, 9)]
    got = torch.stack(frames, 1)
    assert torch.allclose(got[[0, 2]], undisturbed[[0, 2]], atol=1e-4)

    fresh = Dreamer(odd_model, 1, sampler)
    fresh.reset(new_ctx)
    alone = torch.stack([fresh.step(acts[1:2, h]) for h in range(5, 9)], 1)
    assert torch.allclose(got[1:2, 5:], alone, atol=1e-4)
    assert not torch.allclose(got[1:2, 5:], undisturbed[1:2, 5:], atol=1e-2)


def test_restarts_keep_no_autograd_graph(odd_model):
    """A restart writes the pending frame and the new rows into the cache in place: outside
    no-grad the cache would chain every restart's activations (an agent's run grew by ~45 MB a
    restart until the machine ran out of memory)."""
    d = Dreamer(odd_model, 3, SamplerConfig(steps=1), seeded())
    d.reset(torch.rand(3, 4, 3, 12, 20))
    for h in range(6):
        d.step(torch.randint(0, 3, (3,)))
        if h % 2:
            d.reset(torch.rand(1, len(d), 3, 12, 20), rows=[h % 3])
    cache = d.pasts[0].cache
    cached = [t for t in cache.k + cache.v if t is not None]
    assert cached and not any(t.requires_grad or t.grad_fn is not None for t in cached)


def test_rebasing_the_time_positions_keeps_the_frames_and_actions_in_view(odd_model, monkeypatch):
    """A rebase re-encodes the frames in view at small positions: from then on the dream is the one
    a Dreamer started from that window (its frames and actions) dreams. (It is not the unrebased
    dream: cached keys of the window's oldest frames had attended to frames since dropped.)"""
    import diffworld.dreamer as dreamer_module

    sampler = SamplerConfig(steps=2)
    ctx, acts = torch.rand(1, 4, 3, 12, 20), torch.randint(0, 3, (1, 9))
    without_noise(monkeypatch)
    monkeypatch.setattr(dreamer_module, "REBASE_EVERY", 9)
    rebased = Dreamer(odd_model, 1, sampler)
    rebased.reset(ctx)
    for h in range(5):  # t = 4 + 5 = 9: the next step rebases first
        rebased.step(acts[:, h])
    window, window_actions = rebased.history.clone(), rebased.history_actions.clone()
    got = torch.stack([rebased.step(acts[:, h]) for h in range(5, 9)], 1)
    assert rebased.t == window.shape[1] + 4  # rebased once to positions 0..3, then 4 steps

    fresh = Dreamer(odd_model, 1, sampler)
    fresh.reset(window, window_actions)
    expected = torch.stack([fresh.step(acts[:, h]) for h in range(5, 9)], 1)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.equal(window_actions[0, 1:], acts[0, 2:5])  # the actions into the window's frames were kept


def test_bad_input_is_named(odd_model):
    d = Dreamer(odd_model, 2)
    with pytest.raises(RuntimeError, match="reset"):
        d.step(torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected shape \[2, L, 3, 12, 20\]"):
        d.reset(torch.rand(2, 3, 1, 12, 20))
    with pytest.raises(ValueError, match="NaN"):
        d.reset(torch.full((2, 3, 3, 12, 20), float("nan")))
    d.reset(torch.rand(2, 3, 3, 12, 20))
    with pytest.raises(ValueError, match=r"actions in \[0, 3\)"):
        d.step(torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="needs 3 frames"):
        d.reset(torch.rand(1, 2, 3, 12, 20), rows=[0])
    with pytest.raises(ValueError, match="distinct indices"):
        d.reset(torch.rand(1, 3, 3, 12, 20), rows=[4])


def test_stepping_with_adaptive_steps_equals_rollout_draw_for_draw():
    """Frames drawn again for some dreams only: the Dreamer's selected rows line up with rollout's."""
    from diffworld.spec import ActionSpace, WorldSpec
    from tests.conftest import tiny_model

    model = tiny_model(
        WorldSpec("bits", "grid", (1, 8, 8), "binary", ActionSpace("discrete", 3), value_range=(0.0, 1.0))
    )
    sampler = SamplerConfig(steps=1, adaptive_steps=3, uncertain=7.5)
    ctx, acts = (torch.rand(4, 2, 1, 8, 8) > 0.5).float(), torch.randint(0, 3, (4, 2))
    expected = rollout(model, ctx, acts, sampler=sampler, generator=seeded())[:, 0]
    dreamer = Dreamer(model, 4, sampler, seeded())
    dreamer.reset(ctx)
    got = torch.stack([dreamer.step(acts[:, h]) for h in range(2)], dim=1)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("use_cache", [True, False], ids=["cached", "uncached"])
def test_an_autoguided_ensemble_steps_as_it_rolls_out(odd_spec, use_cache):
    """A guide with a past of its own, classifier-free guidance, contexts repeated into an
    ensemble and members that stop: stepping with the same generator equals `rollout`."""
    from tests.conftest import tiny_model

    model, guide = tiny_model(odd_spec, seed=0), tiny_model(odd_spec, seed=1)
    sampler = SamplerConfig(steps=2, guidance=1.5)
    ctx, acts = torch.rand(2, 3, 3, 12, 20), torch.randint(0, 3, (2, 5))
    stop = lambda f: f.mean((1, 2, 3)) > 0.05  # noqa: E731
    kw = dict(use_cache=use_cache, guide=guide, guide_weight=2.5)
    expected = rollout(model, ctx, acts, n_samples=2, sampler=sampler, generator=seeded(), stop=stop, **kw)
    expected = expected.flatten(0, 1)  # [4, 5, *frame]
    dreamer = Dreamer(model, 4, sampler, seeded(), **kw)
    dreamer.reset(ctx, repeat=2)
    got = torch.empty_like(expected)
    for h in range(5):
        running = dreamer.running
        if h:
            got[:, h] = got[:, h - 1]  # stopped members hold their last frame, as in rollout
        if len(running):
            got[running, h] = dreamer.step(acts.repeat_interleave(2, 0)[running, h], stop if h < 4 else None)
    assert torch.allclose(got, expected, atol=1e-5)
    assert len(dreamer.running) < 4  # some members stopped: the case this test is about


def test_restarting_a_row_without_the_cache_matches_a_fresh_dream(odd_model, monkeypatch):
    """The reference past (frames recomputed at every pass) restarts rows as the cache does."""
    sampler = SamplerConfig(steps=2)
    ctx, new_ctx, acts = torch.rand(2, 4, 3, 12, 20), torch.rand(1, 4, 3, 12, 20), torch.randint(0, 3, (2, 6))
    without_noise(monkeypatch)
    d = Dreamer(odd_model, 2, sampler, use_cache=False)
    d.reset(ctx)
    for h in range(3):
        d.step(acts[:, h])
    d.reset(new_ctx, rows=[0])
    got = torch.stack([d.step(acts[:, h]) for h in range(3, 6)], 1)
    fresh = Dreamer(odd_model, 1, sampler, use_cache=False)
    fresh.reset(new_ctx)
    alone = torch.stack([fresh.step(acts[:1, h]) for h in range(3, 6)], 1)
    assert torch.allclose(got[:1], alone, atol=1e-4)


def test_a_guide_and_a_repeat_are_checked(odd_spec, odd_model):
    from tests.conftest import tiny_model

    with pytest.raises(ValueError, match="guide must share the model's world"):
        Dreamer(odd_model, 2, guide=tiny_model(odd_spec, frames=4), guide_weight=2.0)
    with pytest.raises(ValueError, match="needs a guide model"):
        Dreamer(odd_model, 2, guide_weight=2.0)
    with pytest.raises(ValueError, match="a divisor of the batch 3"):
        Dreamer(odd_model, 3).reset(torch.rand(1, 2, 3, 12, 20), repeat=2)
