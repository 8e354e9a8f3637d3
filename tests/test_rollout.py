import pytest
import torch

from diffworld.diffusion.sampling import SamplerConfig
from diffworld.model.kv_cache import KVCache
from diffworld.rollout import rollout
from tests.conftest import DEVICES, tiny_model


def run(model, ctx, acts, seed=0, **kw):
    return rollout(model, ctx, acts, generator=torch.Generator(device=model.device).manual_seed(seed), **kw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method,guidance", [("euler", 1.0), ("heun", 1.0), ("euler", 2.0)])
def test_cached_rollout_equals_full_recompute(odd_model, method, guidance, device):
    odd_model.to(device)
    ctx = torch.rand(2, 2, 3, 12, 20)
    acts = torch.randint(0, 3, (2, 2))  # 2 context + 2 new frames fit the window of 5
    sampler = SamplerConfig(steps=3, method=method, guidance=guidance)
    cached = run(odd_model, ctx, acts, n_samples=3, sampler=sampler)
    full = run(odd_model, ctx, acts, n_samples=3, sampler=sampler, use_cache=False)
    assert cached.shape == (2, 3, 2, 3, 12, 20) and cached.device.type == device
    assert torch.allclose(cached, full, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES[1:])
def test_the_network_computes_the_same_on_the_gpu_as_on_the_cpu_and_runs_in_bf16(odd_model, device):
    x, sigma = torch.randn(2, 5, 3, 12, 20), torch.rand(2, 5) + 0.1
    acts, times = torch.randint(0, 3, (2, 5)), torch.arange(5)
    want = odd_model.denoiser(x, sigma, acts, times)
    gpu = odd_model.to(device).denoiser
    on = lambda *t: [a.to(device) for a in t]  # noqa: E731
    got = gpu(*on(x, sigma, acts, times))
    assert torch.allclose(got.cpu(), want, atol=1e-4), float((got.cpu() - want).abs().max())
    with torch.autocast(device, dtype=torch.bfloat16):
        dream = run(odd_model, *on(torch.rand(1, 2, 3, 12, 20), torch.randint(0, 3, (1, 2))), n_samples=4)
    assert dream.dtype == torch.float32 and torch.isfinite(dream).all() and dream.shape == (1, 4, 2, 3, 12, 20)


def test_rollout_is_seeded_and_members_differ(odd_model):
    ctx, acts = torch.rand(1, 3, 3, 12, 20), torch.randint(0, 3, (1, 4))
    a, b, c = (
        run(odd_model, ctx, acts, 1, n_samples=4),
        run(odd_model, ctx, acts, 1, n_samples=4),
        run(odd_model, ctx, acts, 2, n_samples=4),
    )
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a[0, 0], a[0, 1])


def test_long_rollout_slides_and_costs_the_same_per_frame(odd_model, monkeypatch):
    """Beyond the trained window the cache keeps frames − 1 frames: attention length stays bounded."""
    seen = []
    original = KVCache.append

    def spy(self, layer, k, v):
        original(self, layer, k, v)
        seen.append(self.get(layer)[0].shape[-2])

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


def test_categorical_worlds_are_projected_and_sampled_one_hot():
    from diffworld.worlds import make_world

    model = tiny_model(make_world("cascade", graph="karate").spec)
    ctx = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 2, 34)), 3).float()
    for method in ("euler", "marginal"):
        sampler = SamplerConfig(method=method)
        out = run(model, ctx, None, horizon=3, n_samples=2, sampler=sampler)
        assert out.shape == (2, 2, 3, 34, 3) and torch.equal(out.sum(-1), torch.ones(2, 2, 3, 34))
        assert torch.equal(out, run(model, ctx, None, horizon=3, n_samples=2, sampler=sampler))  # seeded
        full = run(model, ctx, None, horizon=3, n_samples=2, sampler=sampler, use_cache=False)
        # Same draws, estimates equal to float tolerance: a node flips only on a near-tie of this
        # random model's channels, which then also changes what follows for that member.
        assert (out == full).all(-1).float().mean() > 0.95


def test_members_that_stop_hold_their_last_frame():
    from diffworld.worlds import make_world

    model = tiny_model(make_world("cascade", graph="karate").spec)
    ctx = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 2, 34)), 3).float()
    ended = lambda f: f[:, :, 1].sum(-1) % 2 == 1  # noqa: E731 — an odd number infected ends the episode
    kw = dict(horizon=6, n_samples=8, sampler=SamplerConfig(steps=2))
    out = run(model, ctx, None, stop=ended, **kw)
    full = run(model, ctx, None, stop=ended, use_cache=False, **kw)
    assert (out == full).all(-1).float().mean() > 0.95  # see the test above: near-ties may flip a node
    stops = 0
    for member in out.flatten(0, 1):  # [H, N, 3]
        first = next((h for h in range(6) if member[h, :, 1].sum() % 2 == 1), None)
        if first is not None and first < 5:
            stops += 1
            assert (member[first:] == member[first]).all()
    assert stops >= 4  # the check above ran on members that stopped early
    never = lambda f: torch.zeros(len(f), dtype=torch.bool)  # noqa: E731
    assert torch.equal(run(model, ctx, None, stop=never, **kw), run(model, ctx, None, **kw))


def test_marginal_sampler_refuses_real_valued_worlds(odd_model):
    with pytest.raises(ValueError, match="marginal sampler needs a binary or categorical world"):
        run(
            odd_model,
            torch.rand(1, 2, 3, 12, 20),
            torch.zeros(1, 2, dtype=torch.long),
            sampler=SamplerConfig(method="marginal"),
        )


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
        rollout(odd_model, ctx, acts)


CTX = torch.rand(1, 2, 3, 12, 20)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (
            (CTX, torch.zeros(3, dtype=torch.long)),
            {},
            ValueError,
            r"^actions: expected a batch of action sequences \[B, H\], found shape \[3\]$",
        ),
        (
            (CTX, [torch.zeros(2), torch.zeros(3)]),
            {},
            TypeError,
            r"^actions: expected a tensor, an array or nested lists of numbers, found list$",
        ),
        (
            (CTX, [["a", "b"]]),
            {},
            TypeError,
            r"^actions: expected a tensor, an array or nested lists of numbers, found list$",
        ),
        (
            (CTX[:0], torch.zeros(0, 2, dtype=torch.long)),
            {},
            ValueError,
            r"^context: expected at least one sequence of at least one frame, found shape \[0, 2, 3, 12, 20\]$",
        ),
        (
            (CTX[:, :0], torch.zeros(1, 2, dtype=torch.long)),
            {},
            ValueError,
            r"^context: expected at least one sequence of at least one frame",
        ),
        (
            (CTX, torch.zeros(1, 2, dtype=torch.long)),
            dict(n_samples=2.5),
            ValueError,
            r"^rollout n_samples: expected an integer >= 1, found 2.5$",
        ),
        (
            (CTX, torch.zeros(1, 2, dtype=torch.long)),
            dict(n_samples=0),
            ValueError,
            r"^rollout n_samples: expected an integer >= 1, found 0$",
        ),
        ((CTX, None), dict(horizon=1.5), ValueError, r"^rollout horizon: expected an integer >= 1, found 1.5$"),
        ((CTX, torch.tensor([[0.5, 1.0]])), {}, ValueError, r"^actions: expected whole action numbers, found 0.5$"),
        (
            ("frames", None),
            dict(horizon=1),
            TypeError,
            r"^context: expected a tensor or an array of frames, found str$",
        ),
        (
            (CTX, None),
            dict(horizon=10**12),
            ValueError,
            r"^a rollout of 1×1 dreams of 1000000000000 frames: expected at most the .* GiB of memory this cpu has",
        ),
    ],
    ids=[
        "1-d-actions",
        "ragged-list",
        "list-of-strings",
        "batch-of-0",
        "no-context-frames",
        "fractional-samples",
        "no-samples",
        "fractional-horizon",
        "fractional-action",
        "context-string",
        "too-long",
    ],  # fmt: skip
)
def test_rollout_arguments_are_checked_naming_what_was_expected_and_found(odd_model, args, kwargs, error, match):
    with pytest.raises(error, match=match) as err:
        rollout(odd_model, *args, **kwargs)
    assert "\n" not in str(err.value)


def test_actions_as_nested_lists_dream_as_a_tensor_does(odd_model):
    acts = [[0, 2, 1]]
    a = rollout(odd_model, CTX, acts, generator=torch.Generator().manual_seed(0))
    b = rollout(odd_model, CTX, torch.tensor(acts), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_a_policy_sees_the_dreamed_frames_and_replays_an_action_sequence(odd_model):
    """Closed loop: actions from a policy equal the same actions given up front; the policy gets each previous frame."""
    ctx, acts = torch.rand(2, 2, 3, 12, 20), torch.randint(0, 3, (2, 3))
    seen = []

    def policy(h, previous):
        seen.append(None if previous is None else previous.clone())
        return acts.repeat_interleave(2, dim=0)[:, h]  # [B·n]

    closed = run(odd_model, ctx, None, n_samples=2, horizon=3, policy=policy)
    open_loop = run(odd_model, ctx, acts, n_samples=2)
    assert torch.equal(closed, open_loop)
    assert seen[0] is None and torch.equal(seen[2], closed.flatten(0, 1)[:, 1])
    with pytest.raises(ValueError, match="policy"):
        run(odd_model, ctx, acts, n_samples=2, policy=policy)
    with pytest.raises(ValueError, match=r"policy at frame 0: expected shape \[4, 1\]"):
        run(odd_model, ctx, None, n_samples=2, horizon=3, policy=lambda h, p: acts[:, 0])


def test_compiled_rollouts_and_dreamers_equal_eager_ones(odd_spec):
    """torch.compile changes how the denoising passes run, not what they compute: cached and
    recomputed dreams, and a Dreamer's steps past the window (the ring rotating under the
    compiled pass), equal the eager ones to float rounding; the model's state stays the same."""
    from diffworld.dreamer import Dreamer

    model = tiny_model(odd_spec)
    keys = set(model.state_dict())
    ctx, acts = torch.rand(2, 2, 3, 12, 20), torch.randint(0, 3, (2, 3))  # 2 + 3 frames: the window
    sampler = SamplerConfig(steps=2)
    for use_cache in (True, False):
        eager = run(model, ctx, acts, sampler=sampler, use_cache=use_cache)
        compiled = run(model, ctx, acts, sampler=sampler, use_cache=use_cache, compile=True)
        assert torch.allclose(compiled, eager, atol=1e-4), (use_cache, float((compiled - eager).abs().max()))
    steps = torch.randint(0, 3, (2, 8))
    dreams = []
    for compile in (False, True):
        dreamer = Dreamer(model, 2, sampler, torch.Generator().manual_seed(0), compile=compile)
        dreamer.reset(ctx)
        dreams.append(torch.stack([dreamer.step(steps[:, h]) for h in range(8)], dim=1))
    assert torch.allclose(dreams[1], dreams[0], atol=1e-4), float((dreams[1] - dreams[0]).abs().max())
    assert set(model.state_dict()) == keys  # the compiled wrapper is kept outside the module's state


def test_compiled_rollout_without_a_cpp_compiler_is_one_line(odd_spec, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler++")
    with pytest.raises(ValueError, match=r"^torch.compile on a CPU needs a C\+\+ compiler \(no-such-compiler\+\+"):
        rollout(tiny_model(odd_spec), torch.rand(1, 2, 3, 12, 20), torch.randint(0, 3, (1, 1)), compile=True)


# ---------------------------------------------------------------- autoguidance


def test_autoguided_rollout_mixes_the_two_denoisers(odd_spec):
    """w = 0 dreams what the guide alone dreams, w = 1 what the model alone dreams; any w is the
    same with and without the caches (two of them), with classifier-free guidance on top too."""
    model, guide = tiny_model(odd_spec, refine=3, seed=0), tiny_model(odd_spec, refine=3, seed=1)
    ctx, acts = torch.rand(2, 2, 3, 12, 20), torch.randint(0, 3, (2, 2))
    kw = dict(n_samples=3, sampler=SamplerConfig(steps=3, guidance=1.5))
    alone, guide_alone = run(model, ctx, acts, **kw), run(guide, ctx, acts, **kw)
    assert not torch.allclose(alone, guide_alone, atol=1e-3)  # two different models
    assert torch.equal(run(model, ctx, acts, guide=guide, guide_weight=1.0, **kw), alone)
    assert torch.allclose(run(model, ctx, acts, guide=guide, guide_weight=0.0, **kw), guide_alone, atol=1e-5)
    guided = run(model, ctx, acts, guide=guide, guide_weight=2.5, **kw)
    assert not torch.allclose(guided, alone, atol=1e-3) and torch.isfinite(guided).all()
    assert torch.allclose(
        guided, run(model, ctx, acts, guide=guide, guide_weight=2.5, use_cache=False, **kw), atol=1e-5
    )


def test_autoguided_members_that_stop_keep_both_caches_in_step():
    from diffworld.worlds import make_world

    spec = make_world("cascade", graph="karate").spec
    model, guide = tiny_model(spec, seed=0), tiny_model(spec, seed=1)
    ctx = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 2, 34)), 3).float()
    ended = lambda f: f[:, :, 1].sum(-1) % 2 == 1  # noqa: E731
    kw = dict(horizon=6, n_samples=8, sampler=SamplerConfig(steps=2), stop=ended, guide=guide, guide_weight=2.0)
    out, full = run(model, ctx, None, **kw), run(model, ctx, None, use_cache=False, **kw)
    assert (out == full).all(-1).float().mean() > 0.95  # near-ties may flip a node (see above)


def test_a_guide_that_does_not_match_the_model_is_refused(odd_spec):
    model, ctx, acts = tiny_model(odd_spec), torch.rand(1, 2, 3, 12, 20), torch.randint(0, 3, (1, 2))
    with pytest.raises(ValueError, match="guide must share the model's world.*window"):
        run(model, ctx, acts, guide=tiny_model(odd_spec, frames=4), guide_weight=2.0)
    other_stats = tiny_model(odd_spec, seed=1)
    other_stats.std.mul_(2)
    with pytest.raises(ValueError, match="normalise frames as the model does"):
        run(model, ctx, acts, guide=other_stats, guide_weight=2.0)
    with pytest.raises(ValueError, match="guide_weight 2.0 needs a guide model"):
        run(model, ctx, acts, guide_weight=2.0)
    with pytest.raises(ValueError, match="guide_weight must be a finite number, got nan"):
        run(model, ctx, acts, guide=tiny_model(odd_spec, seed=1), guide_weight=float("nan"))


# --- adaptive steps: uncertain frames drawn again --------------------------------------------


@pytest.fixture
def bits_model():
    """A tiny binary grid world with actions (8×8 frames, 4 tokens a frame)."""
    from diffworld.spec import ActionSpace, WorldSpec

    return tiny_model(
        WorldSpec("bits", "grid", (1, 8, 8), "binary", ActionSpace("discrete", 3), value_range=(0.0, 1.0))
    )


def test_adaptive_steps_draw_again_only_the_uncertain_frames(bits_model):
    """Row 0's first draw is grey (the average of outcomes), row 1's is clean: only row 0 is drawn
    again, with `adaptive_steps` evaluations, and keeps the new draw."""
    from diffworld.dreamer import sample_frame

    m, shape = bits_model, (2, 1, 1, 8, 8)
    first = torch.stack([torch.full(shape[1:], 0.6), torch.ones(shape[1:])])  # world units
    calls = []

    def denoise(x, sigma):
        return m.normalize(first)

    def redraw(index):
        calls.append(index.tolist())
        return lambda x, sigma: calls.append(sigma) or m.normalize(torch.zeros(len(index), *shape[1:]))

    sampler = SamplerConfig(steps=1, adaptive_steps=3)
    out = sample_frame(m, denoise, 2, sampler, torch.Generator().manual_seed(0), redraw=redraw)
    assert calls[0] == [0] and len(calls) == 1 + 3  # row 0 alone, three levels
    assert torch.equal(out[0], torch.zeros(shape[1:])) and torch.equal(out[1], torch.ones(shape[1:]))
    calls.clear()
    plain = sample_frame(m, denoise, 2, SamplerConfig(steps=1), redraw=redraw)
    assert not calls and torch.equal(plain[0], torch.ones(shape[1:]))  # 0.6 rounds up; nothing drawn again


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_adaptive_steps_cached_equals_full_recompute_and_count_their_evaluations(bits_model, guidance):
    from diffworld.evaluate.forecasts import counting_evaluations

    ctx, acts = (torch.rand(3, 2, 1, 8, 8) > 0.5).float(), torch.randint(0, 3, (3, 2))  # fits the window of 5
    per_call = 2 if guidance != 1.0 else 1
    for uncertain, expected in ((7.5, None), (1e-6, 3 * 4 * 2 * (1 + 3) * per_call)):
        sampler = SamplerConfig(steps=1, adaptive_steps=3, uncertain=uncertain, guidance=guidance)
        with counting_evaluations(bits_model) as n:
            cached = run(bits_model, ctx, acts, n_samples=4, sampler=sampler)
        full = run(bits_model, ctx, acts, n_samples=4, sampler=sampler, use_cache=False)
        assert torch.equal(cached, full)
        if expected is None:  # some frames drawn again, not all
            assert 3 * 4 * 2 * per_call < n[0] < 3 * 4 * 2 * 4 * per_call, n[0]
        else:  # every frame: one evaluation, then three more
            assert n[0] == expected


def test_adaptive_steps_need_an_ode_sampler_on_a_discrete_world(odd_model, bits_model):
    with pytest.raises(ValueError, match="adaptive steps need"):
        run(
            odd_model,
            torch.rand(1, 2, 3, 12, 20),
            torch.zeros(1, 2, dtype=torch.long),
            sampler=SamplerConfig(adaptive_steps=4),
        )
    with pytest.raises(ValueError, match="adaptive steps need"):
        run(
            bits_model,
            torch.zeros(1, 2, 1, 8, 8),
            torch.zeros(1, 2, dtype=torch.long),
            sampler=SamplerConfig(method="marginal", adaptive_steps=4),
        )
    for bad in ({"adaptive_steps": -1}, {"adaptive_steps": 2.5}, {"uncertain": 0.0}, {"uncertain": float("nan")}):
        with pytest.raises(ValueError):
            SamplerConfig(**bad)
