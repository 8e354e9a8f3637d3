import pytest
import torch

from diffworld.diffusion.loss import teacher_mask
from diffworld.layouts import GridLayout
from diffworld.model.dit import DiT, DiTConfig
from diffworld.model.kernels import rope_angles
from diffworld.model.kv_cache import KVCache
from tests.conftest import perturb


def make_dit(frames=6, action_kind="discrete", action_n=3, shape=(3, 12, 20), patch=4, refine=0):
    torch.manual_seed(0)
    cfg = DiTConfig(width=32, depth=2, heads=2, patch=patch, frames=frames, refine=refine)
    net = DiT(cfg, GridLayout(shape, patch), action_kind, action_n)
    return perturb(net).eval()


def inputs(b=2, n=5, shape=(3, 12, 20), seed=1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, n, *shape, generator=g),
        torch.randn(b, n, generator=g),
        torch.randint(0, 3, (b, n), generator=g),
        torch.arange(n),
    )


@pytest.mark.parametrize("refine", [0, 3])
@pytest.mark.parametrize("shape,patch", [((3, 12, 20), 4), ((1, 6, 10), 2), ((2, 8, 8), 8)])
def test_output_has_input_shape(shape, patch, refine):
    net = make_dit(shape=shape, patch=patch, refine=refine)
    x, c, a, t = inputs(shape=shape)
    assert net(x, c, a, t).shape == x.shape


@pytest.mark.parametrize("refine", [0, 3])
def test_adaln_zero_starts_at_zero(refine):
    net = DiT(DiTConfig(width=32, depth=2, heads=2, patch=4, refine=refine), GridLayout((3, 12, 20), 4), "discrete", 3)
    x, c, a, t = inputs()
    assert net(x, c, a, t).abs().max() == 0


@pytest.mark.parametrize("refine", [0, 3])
def test_causality_later_frames_never_change_earlier_outputs(refine):
    net = make_dit(refine=refine)
    x, c, a, t = inputs()
    base = net(x, c, a, t)
    for k in range(1, 5):
        x2, c2, a2 = x.clone(), c.clone(), a.clone()
        x2[:, k] += 1.0
        c2[:, k] += 0.5
        a2[:, k] = (a2[:, k] + 1) % 3
        out = net(x2, c2, a2, t)
        assert torch.allclose(out[:, :k], base[:, :k], atol=1e-6)
        assert not torch.allclose(out[:, k], base[:, k], atol=1e-3)  # the change itself is seen


@pytest.mark.parametrize("refine", [0, 3])
def test_a_single_frame_gets_what_it_gets_as_the_first_of_a_window(refine):
    """One frame without history skips temporal q, k and softmax (its only key is itself)."""
    net = make_dit(refine=refine)
    x, c, a, t = inputs()
    assert torch.allclose(net(x[:, :1], c[:, :1], a[:, :1], t[:1]), net(x, c, a, t)[:, :1], atol=1e-5)


def test_actions_and_noise_level_condition_their_own_frame():
    net = make_dit()
    x, c, a, t = inputs()
    base = net(x, c, a, t)
    a2 = a.clone()
    a2[:, 2] = (a2[:, 2] + 1) % 3
    assert not torch.allclose(net(x, c, a2, t)[:, 2], base[:, 2], atol=1e-4)
    no_action = torch.full_like(a, -1)
    assert not torch.allclose(net(x, c, no_action, t), base, atol=1e-4)


@pytest.mark.parametrize("refine", [0, 3])
def test_cache_prefill_then_step_equals_full_forward(refine):
    net = make_dit(refine=refine)
    x, c, a, t = inputs(n=5)
    full = net(x, c, a, t)
    cache = net.new_cache()
    net(x[:, :3], c[:, :3], a[:, :3], t[:3], cache=cache, write_cache=True)
    assert len(cache) == 3
    step = net(x[:, 3:4], c[:, 3:4], a[:, 3:4], t[3:4], cache=cache)
    assert torch.allclose(step, full[:, 3:4], atol=1e-5)
    assert len(cache) == 3  # reading does not write


def test_cache_keeps_a_sliding_window():
    net = make_dit(frames=4)
    x, c, a, t = inputs(n=8)
    cache = net.new_cache()
    for i in range(8):
        net(x[:, i : i + 1], c[:, i : i + 1], a[:, i : i + 1], t[i : i + 1], cache=cache, write_cache=True)
        assert len(cache) == min(i + 1, 3)


@pytest.mark.parametrize("held", [2, 3])  # the ring of 3 frames filling up, and full (its oldest frame drops)
def test_a_committed_frame_is_written_as_a_write_pass_then_a_step_would(held):
    net = make_dit(frames=4)
    x, c, a, t = inputs(n=held + 2)
    separate, fused = net.new_cache(), net.new_cache()
    for cache in (separate, fused):
        net(x[:, :held], c[:, :held], a[:, :held], t[:held], cache=cache, write_cache=True)
    net(
        x[:, held : held + 1],
        c[:, held : held + 1],
        a[:, held : held + 1],
        t[held : held + 1],
        cache=separate,
        write_cache=True,
    )
    want = net(x[:, held + 1 :], c[:, held + 1 :], a[:, held + 1 :], t[held + 1 :], cache=separate)
    got = net(x[:, held:], c[:, held:], a[:, held:], t[held:], cache=fused, commit=1)  # the new frame's output only
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)
    assert fused.written == separate.written and len(fused) == min(held + 1, 3)
    assert all(torch.allclose(f, s, atol=1e-6) for f, s in zip(fused.k + fused.v, separate.k + separate.v))
    if held == 3:  # the new frame must not see the frame the commit pushed out of the window
        wide = KVCache(net.cfg.depth, 4)
        net(x[:, : held + 1], c[:, : held + 1], a[:, : held + 1], t[: held + 1], cache=wide, write_cache=True)
        assert not torch.allclose(
            got, net(x[:, held + 1 :], c[:, held + 1 :], a[:, held + 1 :], t[held + 1 :], cache=wide), atol=1e-3
        )
    with pytest.raises(ValueError, match="commit needs a cache"):
        net(x[:, held:], c[:, held:], a[:, held:], t[held:], commit=1)


def test_teacher_mask_with_late_targets():
    m = teacher_mask(5, 2)
    assert m.shape == (8, 8)
    assert torch.equal(m[5:, :5], torch.ones(5, 5, dtype=torch.bool).tril(-1)[2:])
    assert torch.equal(m[5:, 5:], torch.eye(3, dtype=torch.bool))


def test_teacher_mask_targets_see_clean_past_only():
    m = teacher_mask(4)
    ctx, tgt = slice(0, 4), slice(4, 8)
    assert torch.equal(m[ctx, ctx], torch.ones(4, 4, dtype=torch.bool).tril())
    assert not m[ctx, tgt].any()  # clean frames never see noisy ones
    assert torch.equal(m[tgt, ctx], torch.ones(4, 4, dtype=torch.bool).tril(-1))  # strictly earlier clean frames
    assert torch.equal(m[tgt, tgt], torch.eye(4, dtype=torch.bool))  # and themselves


@pytest.mark.parametrize("first", [0, 2])
def test_teacher_forward_equals_separate_rollout_steps(first):
    """A target frame in the doubled sequence gets exactly what a cached rollout step computes."""
    net = make_dit()
    x, c, a, t = inputs(n=4)
    noisy = torch.randn_like(x)
    noisy[:, :first] = float("nan")  # frames before `first` are no targets: never read
    seq = torch.cat([x, noisy[:, first:]], 1)
    out = net(
        seq,
        torch.cat([c, c[:, first:] + 1], 1),
        torch.cat([a, a[:, first:]], 1),
        torch.cat([t, t[first:]]),
        teacher_mask(4, first),
    )
    assert torch.isfinite(out).all()
    out = torch.cat([out[:, :4], torch.zeros_like(out[:, :first]), out[:, 4:]], 1)
    for i in range(first, 4):
        cache = net.new_cache()
        if i:
            net(x[:, :i], c[:, :i], a[:, :i], t[:i], cache=cache, write_cache=True)
        step = net(noisy[:, i : i + 1], c[:, i : i + 1] + 1, a[:, i : i + 1], t[i : i + 1], cache=cache)
        assert torch.allclose(step, out[:, 4 + i : 5 + i], atol=1e-5)


def test_continuous_and_no_actions():
    for kind, n, acts in [("continuous", 2, torch.randn(2, 5, 2)), ("none", 0, None)]:
        net = make_dit(action_kind=kind, action_n=n)
        x, c, _, t = inputs()
        assert net(x, c, acts, t).shape == x.shape
    net = make_dit(action_kind="continuous", action_n=2)
    acts = torch.randn(2, 5, 2)
    missing = acts.clone()
    missing[:, 1] = float("nan")
    out = net(x, c, missing, t)
    assert torch.isfinite(out).all()


def test_width_must_split_into_heads():
    with pytest.raises(ValueError, match="heads"):
        DiT(DiTConfig(width=30, heads=4), GridLayout((1, 8, 8), 4))


def test_refiner_reaches_across_patch_borders():
    """With the refiner a pixel's value depends on the next patch's token; without it, it cannot."""
    shape = (1, 8, 8)
    for refine, crosses in [(0, False), (3, True)]:
        net = make_dit(shape=shape, patch=4, refine=refine, frames=2)
        net.blocks = torch.nn.ModuleList()  # tokens stay apart: only the head could mix them
        x, c, a, t = inputs(n=1, shape=shape)
        x2 = x.clone()
        x2[..., :, 4:] += 1.0  # change only the right-hand patches
        left = (net(x, c, a, t) - net(x2, c, a, t))[..., :, 3].abs().max()  # last column of the left patches
        assert (left > 1e-4) == crosses, (refine, float(left))


def test_grid_model_has_no_learned_layout_parts():
    """Grid checkpoints keep their keys: no position projection, no bias module, positions not saved."""
    net = make_dit()
    assert net.pos_embed is None and net.spatial_bias_module is None and net.diffusion_times() is None
    assert not any(k == "pos" or k.startswith(("pos_embed", "spatial_bias")) for k in net.state_dict())
    assert net.spatial_biases() == [None, None]


def test_rope_rotates_pairs_and_attends_by_time_difference():
    """RoPE's complex form (eager fp32) equals its real-pair form (other dtypes, and under
    torch.compile) to the last bit in fp32, keeps norms, and makes a query-key product depend
    only on their time difference."""
    from diffworld.model.kernels import rope, rope_angles, rope_pairs

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 1, 8, generator=g), torch.randn(2, 3, 1, 8, generator=g)  # [M, H, 1 frame, dh]
    rot = rope_angles(torch.tensor([5, 2, 105, 102]), 8)  # [4 times, dh/2]
    x = torch.randn(2, 3, 4, 8, generator=g)
    assert torch.allclose(rope(x, rot), rope(x.double(), rot).float(), atol=1e-6)  # complex vs real pairs
    assert torch.equal(rope(x, rot), rope_pairs(x, rot))  # what a compiled step computes, bit for bit in eager
    assert torch.allclose(rope(x, rot).norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    qr, kr = rope(q.expand(-1, -1, 4, -1), rot), rope(k.expand(-1, -1, 4, -1), rot)
    near = (qr[..., 0, :] * kr[..., 1, :]).sum(-1)  # times 5 and 2
    far = (qr[..., 2, :] * kr[..., 3, :]).sum(-1)  # times 105 and 102: the same difference
    assert torch.allclose(near, far, atol=1e-4) and not torch.allclose(near, (q * k).sum(-1).squeeze(-1), atol=1e-3)


@pytest.mark.parametrize("n", [1, 5])  # one frame (its temporal branch folded to one map) and a window
def test_inference_without_autograd_equals_the_differentiable_forward_and_leaves_inputs_alone(n):
    """Without autograd the blocks update their residual stream and MLP in place: same outputs,
    and the caller's tensors unchanged."""
    net = make_dit()
    x, c, a, t = inputs(n=n)
    want = net(x, c, a, t)
    assert want.requires_grad
    x0, c0 = x.clone(), c.clone()
    with torch.no_grad():
        got = net(x, c, a, t)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.equal(x, x0) and torch.equal(c, c0)
    h = torch.randn(2, n, net.layout.num_tokens, 32)
    h0 = h.clone()
    with torch.no_grad():
        net.blocks[0](h, torch.randn(2, n, 32), rope_angles(t, 16), None, None, None, 0, False)
    assert torch.equal(h, h0)
