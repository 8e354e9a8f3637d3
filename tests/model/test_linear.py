"""`diffworld.model.linear` computes `F.linear` (then SiLU), whichever kernel it picks."""

import pytest
import torch
import torch.nn.functional as F

from diffworld.model import linear as lin

# Large enough for the oneDNN path (rows · in · out >= MIN_MACS); the small one stays with F.linear.
SHAPES = [(4, 256, 96, 512), (3, 7, 5)]  # x's shape, then the output width


def operands(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    *rows, d_in, d_out = shape
    return (
        torch.randn(*rows, d_in, generator=g),
        torch.randn(d_out, d_in, generator=g) / d_in**0.5,
        torch.randn(d_out, generator=g),
    )


def test_large_products_take_onednn_and_small_ones_do_not():
    if not lin.ONEDNN:
        pytest.skip("oneDNN is used on x86 CPUs only")
    x, w, _ = operands(SHAPES[0])
    assert x.numel() * w.shape[0] >= lin.MIN_MACS and lin._takes_onednn(x, w)
    x, w, _ = operands(SHAPES[1])
    assert not lin._takes_onednn(x, w)
    x, w, _ = operands(SHAPES[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lin._takes_onednn(x, w)  # autocast's casts apply to F.linear only
    assert not lin._takes_onednn(x.double(), w.double())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_forward_matches_f_linear(shape, silu, bias):
    x, w, b = operands(shape)
    b = b if bias else None
    want = F.linear(x, w, b)
    want = F.silu(want) if silu else want
    with torch.no_grad():
        got = lin.linear(x, w, b, silu=silu)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lin.linear(x, w, b, silu=silu), want, rtol=1e-5, atol=1e-5)  # with autograd on


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_gradients_match_f_linear(shape, silu, bias):
    reference = lambda x, w, b: F.silu(F.linear(x, w, b)) if silu else F.linear(x, w, b)  # noqa: E731
    grads = []
    for fn in (reference, lambda x, w, b: lin.linear(x, w, b, silu=silu)):
        x, w, b = (t.requires_grad_() for t in operands(shape))
        y = fn(x, w, b if bias else None)
        (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
        grads.append((x.grad, w.grad, b.grad))
    for got, want in zip(grads[1], grads[0]):
        if want is None:  # no bias: neither path gives it a gradient
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_only_the_inputs_that_need_it_get_a_gradient():
    x, w, b = operands(SHAPES[0])
    w.requires_grad_()
    lin.linear(x, w, b).sum().backward()
    assert w.grad is not None and x.grad is None and b.grad is None


def test_autocast_still_casts():
    x, w, b = operands(SHAPES[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lin.linear(x, w, b).dtype == torch.bfloat16


def test_module_keeps_nn_linear_parameters():
    torch.manual_seed(0)
    theirs = torch.nn.Linear(96, 512)
    mine = lin.Linear(96, 512)
    mine.load_state_dict(theirs.state_dict())
    assert list(mine.state_dict()) == ["weight", "bias"]
    x, _, _ = operands(SHAPES[0])
    with torch.no_grad():
        torch.testing.assert_close(mine(x), theirs(x), rtol=1e-5, atol=1e-5)
