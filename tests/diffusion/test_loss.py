import pytest
import torch

from diffworld.diffusion.loss import LossConfig, drop_actions, loss_weights, motion_weights, unforeseen_frequency, window_loss
from diffworld.model.denoiser import Denoiser
from tests.model.test_dit import make_dit


def test_motion_weights_depend_on_the_past_only():
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(2, 6, 1, 16, 16, generator=g) > 0.95).float()
    w = motion_weights(frames, 10.0, 1)
    assert w.shape == (2, 6, 1, 16, 16)
    assert torch.equal(w[:, :2], torch.ones_like(w[:, :2]))  # no past for the first two frames
    changed = frames.clone()
    changed[:, 4] = 1 - changed[:, 4]  # rewrite frame 4 entirely
    w2 = motion_weights(changed, 10.0, 1)
    assert torch.equal(w2[:, :5], w[:, :5])  # frame 4's own weight ignores frame 4
    assert not torch.equal(w2[:, 5], w[:, 5])  # but frame 5 sees that frame 4 changed


def test_motion_weights_cover_a_moving_dot():
    frames = torch.zeros(1, 3, 1, 16, 16)
    frames[0, 0, 0, 5, 5] = 1
    frames[0, 1, 0, 5, 6] = 1  # moved one pixel right
    w = motion_weights(frames, 4.0, 2)[0, 2, 0]
    assert w[5, 7] == 5 and w[3, 4] == 5 and w[5, 9] == 1  # within 2 px of the change, and not beyond


def test_action_dropout_rate_and_values():
    a = torch.randint(0, 3, (200, 50))
    d = drop_actions(a, 0.25, torch.Generator().manual_seed(0))
    dropped = d == -1
    assert 0.22 < dropped.float().mean() < 0.28
    assert torch.equal(d[~dropped], a[~dropped])
    c = drop_actions(torch.randn(10, 8, 2), 0.5, torch.Generator().manual_seed(0))
    assert torch.isnan(c).any() and (torch.isnan(c[..., 0]) == torch.isnan(c[..., 1])).all()


def test_window_loss_is_finite_and_seeded_in_both_modes():
    den = Denoiser(make_dit(), 0.5)
    frames = torch.randn(2, 5, 3, 12, 20) * 0.5
    acts = torch.randint(0, 3, (2, 5))
    freq = torch.rand(12, 20) * 1e-2
    for context in ("teacher", "forcing"):
        cfg = LossConfig(context=context, motion_weight=3.0, event_weight=2.0)
        a = window_loss(den, frames, acts, cfg, torch.Generator().manual_seed(1), freq)
        b = window_loss(den, frames, acts, cfg, torch.Generator().manual_seed(1), freq)
        assert torch.isfinite(a) and a.item() == b.item()



def teleporting_dot(steps: int = 200) -> torch.Tensor:
    """A dot walks right one pixel a step and, every 10 steps, reappears at column 3."""
    frames = torch.zeros(steps, 1, 16, 16)
    col = 0
    for t in range(steps):
        if t % 10 == 0:
            col = 3  # teleport: unforeseeable from the two previous frames
        frames[t, 0, 8, col] = 1
        col = (col + 1) % 16
    return frames


def test_unforeseen_frequency_marks_where_objects_appear():
    freq = unforeseen_frequency([teleporting_dot()], radius=1)
    assert freq[8, 3] == pytest.approx(20 / 198, abs=0.01)  # the landing spot, every 10th transition
    assert (freq > 0).sum() <= 2  # (and where it vanished from, when far from its landing)
    assert freq[8, 6:].sum() == 0  # ordinary steps are foreseen by the motion mask
    assert unforeseen_frequency([teleporting_dot()[:2]], 1).sum() == 0
    with pytest.raises(ValueError):
        unforeseen_frequency([], 1)


def test_surprise_and_event_weights():
    frames = teleporting_dot(40)[None]  # [1, 40, 1, 16, 16]
    freq = unforeseen_frequency([frames[0]], radius=1)
    cfg = LossConfig(motion_weight=5.0, motion_radius=1, surprise_weight=7.0, surprise_threshold=0.01, event_weight=3.0, event_max_frequency=0.5)
    pixel, frame = loss_weights(frames, cfg, freq)
    assert pixel[0, 25, 0, 8, 3] == 8  # surprise weight on the landing spot, in every frame
    assert pixel[0, 25, 0, 8, 8] == 6 and pixel[0, 25, 0, 0, 0] == 1  # motion weight near the dot only
    assert frame[0, 20] == 4 and frame[0, 30] == 4  # frames where the dot teleports
    assert frame[0, 25] == 1 and frame[0, 0] == 1
    # Rare means rare: with event_max_frequency below the landing spot's frequency, no events.
    _, frame = loss_weights(frames, LossConfig(event_weight=3.0, event_max_frequency=0.01, motion_radius=1), freq)
    assert (frame == 1).all()
    pixel, frame = loss_weights(frames, LossConfig(motion_weight=5.0, motion_radius=1), None)
    assert pixel.max() == 6 and (frame == 1).all()
