import re

import pytest
import torch

from diffworld.diffusion.loss import (
    LossConfig,
    draw_loss_noise,
    drop_actions,
    loss_weights,
    motion_weights,
    noised_loss,
    shift_windows,
    unforeseen_frequency,
    window_loss,
)
from diffworld.diffusion.sampling import karras_sigmas
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
    cfg = LossConfig(
        motion_weight=5.0,
        motion_radius=1,
        surprise_weight=7.0,
        surprise_threshold=0.01,
        event_weight=3.0,
        event_max_frequency=0.5,
    )
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


class Recorder(torch.nn.Module):
    """A stand-in denoiser that returns a fixed frame everywhere and keeps what each call saw."""

    sigma_data = 0.5

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value, self.calls = value, []

    def forward(self, x, sigma, actions, times, mask=None):
        self.calls.append((x.clone(), sigma.clone(), times.clone()))
        return torch.full_like(x, self.value)


def test_self_context_feeds_the_models_own_predictions_as_context():
    frames = torch.randn(3, 5, 1, 4, 4)
    rec = Recorder(7.0)
    window_loss(
        rec,
        frames,
        None,
        LossConfig(self_context=1.0, min_context=2, motion_weight=0.0, surprise_weight=0.0),
        torch.Generator().manual_seed(0),
    )
    (first, first_sigma, first_times), (second, sigma, times) = rec.calls
    t, k = 5, 2
    # The first pass starts every target (frames 2..4) from noise at self_context_sigma, after the true context.
    assert torch.equal(first_sigma[:, t:], torch.full((3, 3), 5.0)) and torch.equal(first_times, times)
    ctx_noise = (first[:, :t] - frames) / first_sigma[:, :t, None, None, None]
    # The second pass sees the true first k frames, then the predictions (7.0), and the true targets.
    noised = torch.cat([frames[:, :k], torch.full_like(frames[:, k:], 7.0), frames[:, k:]], dim=1)
    expected = noised + sigma[:, :, None, None, None] * torch.cat(
        [ctx_noise, (second[:, t:] - frames[:, k:]) / sigma[:, t:, None, None, None]], dim=1
    )
    assert torch.allclose(second, expected, atol=1e-5)
    assert torch.allclose(second[:, k:t], 7.0 + sigma[:, k:t, None, None, None] * ctx_noise[:, k:], atol=1e-5)


def test_self_context_projects_the_models_own_predictions_like_a_rollout():
    frames = torch.randn(2, 4, 1, 4, 4)
    rec = Recorder(7.3)
    cfg = LossConfig(self_context=1.0, min_context=2, motion_weight=0.0, surprise_weight=0.0)
    window_loss(rec, frames, None, cfg, torch.Generator().manual_seed(0), project=torch.round)
    (first, first_sigma, _), (second, sigma, _) = rec.calls
    ctx_noise = (first[:, :4] - frames) / first_sigma[:, :4, None, None, None]
    # The fed-back context holds the projected prediction (7.0), not the raw one (7.3).
    assert torch.allclose(second[:, 2:4], 7.0 + sigma[:, 2:4, None, None, None] * ctx_noise[:, 2:], atol=1e-5)
    assert torch.allclose(second[:, :2], first[:, :2])  # the first min_context frames stay true


def test_self_context_off_draws_leave_the_plain_loss_unchanged_and_parts_agree():
    den = Denoiser(make_dit(), 0.5)
    frames = torch.randn(4, 5, 3, 12, 20) * 0.5
    acts = torch.randint(0, 3, (4, 5))
    plain = window_loss(den, frames, acts, LossConfig(), torch.Generator().manual_seed(2))
    never = window_loss(den, frames, acts, LossConfig(self_context=1e-12), torch.Generator().manual_seed(2))
    assert plain.item() == never.item()  # the extra draws come after every draw of the plain loss
    for cfg in (
        LossConfig(self_context=0.5),
        LossConfig(self_context=0.5, self_context_steps=3, self_context_churn=1.0),
        LossConfig(context="forcing", random_shift=True, surprise_weight=0.0),
    ):
        full = window_loss(den, frames, acts, cfg, torch.Generator().manual_seed(3))
        assert full.item() != window_loss(den, frames, acts, LossConfig(), torch.Generator().manual_seed(3)).item()
        # Two processes: each draws for the whole batch with the shared seed and keeps its part.
        halves = []
        for i in range(2):
            noise = draw_loss_noise(cfg, frames.shape, True, torch.Generator().manual_seed(3)).part((i, 2))
            halves.append(noised_loss(den, frames[i * 2 : i * 2 + 2], acts[i * 2 : i * 2 + 2], cfg, noise))
        assert torch.allclose(full, sum(halves) / 2, rtol=1e-5)


def test_parts_of_the_draws_are_rows_of_the_whole():
    cfg = LossConfig(self_context=0.5, self_context_steps=3, self_context_churn=1.0, random_shift=True)
    whole = draw_loss_noise(cfg, (6, 5, 3, 12, 20), True, torch.Generator().manual_seed(0))
    assert len(whole.churn) == 2 and whole.target_sigma.shape == (6, 3) and whole.noise.shape == (6, 8, 3, 12, 20)
    parts = [whole.part((i, 3)) for i in range(3)]
    assert torch.equal(torch.cat([p.noise for p in parts]), whole.noise)
    assert torch.equal(torch.cat([p.churn[1] for p in parts]), whole.churn[1])
    assert torch.equal(torch.cat([p.shift for p in parts]), whole.shift) and parts[1].own.shape == (2,)
    with pytest.raises(ValueError, match="cannot split a batch of 6 into 4 equal parts"):
        whole.part((0, 4))


def test_self_context_settings_are_checked():
    with pytest.raises(ValueError, match="probability"):
        LossConfig(self_context=1.5)
    with pytest.raises(ValueError, match="teacher"):
        LossConfig(context="forcing", self_context=0.5)
    for steps in (0, 2.5):
        with pytest.raises(ValueError, match=f"self_context_steps must be an integer >= 1, got {steps}"):
            LossConfig(self_context_steps=steps)
    with pytest.raises(ValueError, match="self_context_churn must be >= 0, got -1"):
        LossConfig(self_context_churn=-1)


def test_self_context_draws_its_context_with_the_sampler():
    """With `self_context_steps` the first pass is the sampler: Euler down the Karras levels from
    `self_context_sigma`, each level after the first lifted by churn; a denoiser that always answers
    7 is landed on exactly, whatever the noise."""
    frames = torch.randn(3, 5, 1, 4, 4)
    rec = Recorder(7.0)
    cfg = LossConfig(
        self_context=1.0,
        self_context_steps=4,
        self_context_churn=2.0,
        self_context_sigma=3.0,
        min_context=2,
        motion_weight=0.0,
        surprise_weight=0.0,
    )
    window_loss(rec, frames, None, cfg, torch.Generator().manual_seed(0))
    assert len(rec.calls) == 5  # four sampler steps, then the training pass
    gamma = min(2.0 / 4, 2**0.5 - 1)
    levels = karras_sigmas(4, 0.002, 3.0)[:4] * torch.tensor([1.0, 1 + gamma, 1 + gamma, 1 + gamma])
    for (_, sigma, _), level in zip(rec.calls[:4], levels):
        assert torch.allclose(sigma[:, 5:], torch.full((3, 3), float(level)))
    second, sigma, _ = rec.calls[4]
    ctx_noise = (rec.calls[0][0][:, :5] - frames) / rec.calls[0][1][:, :5, None, None, None]
    assert torch.allclose(second[:, 2:5], 7.0 + sigma[:, 2:5, None, None, None] * ctx_noise[:, 2:], atol=1e-5)


class ChangeRecorder(torch.nn.Module):
    """A stand-in for a model that diffuses the change: every target changes by 0.1 from its base."""

    sigma_data, change_std = 0.5, 0.05

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def forward(self, x, sigma, actions, times, mask=None, base=None):
        self.calls.append((sigma.clone(), base.clone()))
        out = x.clone()
        out[:, -base.shape[1] :] = base + 0.1
        return out


def test_a_change_model_fed_its_own_frames_changes_them_as_a_rollout_would():
    """The first pass changes each true frame; the training pass's targets then change the model's
    own frames (the first target still the last true context frame), as a rollout feeds them back."""
    frames = torch.randn(2, 5, 1, 4, 4)
    rec = ChangeRecorder()
    cfg = LossConfig(self_context=1.0, self_context_steps=3, self_context_sigma=3.0, min_context=2)
    window_loss(rec, frames, None, cfg, torch.Generator().manual_seed(0))
    (first_sigma, first_base), _, _, (sigma, base) = rec.calls
    assert torch.equal(first_base, frames[:, 1:4])  # targets 2..4 drawn from the true frames before them
    assert torch.allclose(first_sigma[:, 5:], torch.full((2, 3), 3.0 * 0.05 / 0.5))  # levels in the change's units
    own = frames[:, 1:4] + 0.1  # the drawn frames 2..4
    assert torch.equal(base[:, 0], frames[:, 1]) and torch.allclose(base[:, 1:], own[:, :2], atol=1e-6)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"p_mean": "a"}, "p_mean must be a finite number, got 'a'"),
        ({"p_std": float("nan")}, "p_std must be a finite number"),
        ({"motion_weight": True}, "motion_weight must be a finite number"),
        ({"p_std": 0.0}, "p_std > 0"),
        ({"ctx_sigma_max": 0.001}, "sigma_min < ctx_sigma_max"),
        ({"context": "diffusion"}, "'teacher' or 'forcing'"),
    ],
)
def test_loss_settings_of_the_wrong_kind_fail_when_made_not_mid_training(bad, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        LossConfig(**bad)


def test_shift_windows_rolls_each_window_along_its_periodic_axes():
    ring = torch.arange(2 * 3 * 5, dtype=torch.float32).view(2, 3, 5, 1)
    out = shift_windows(ring, torch.tensor([[0.4, 0.9], [0.0, 0.5]]))
    assert torch.equal(out[0], ring[0].roll(-2, dims=1))  # ⌊0.4·5⌋ = 2: node i takes node i + 2
    assert torch.equal(out[1], ring[1])
    grid = torch.randn(2, 3, 2, 4, 6)
    out = shift_windows(grid, torch.tensor([[0.5, 0.5], [0.25, 0.99]]))
    assert torch.equal(out[0], grid[0].roll((-2, -3), dims=(2, 3)))
    assert torch.equal(out[1], grid[1].roll((-1, -5), dims=(2, 3)))


def test_random_shift_trains_on_shifted_windows():
    rec = Recorder(0.0)
    frames = torch.arange(4 * 40, dtype=torch.float32).view(1, 4, 40, 1).repeat(3, 1, 1, 1)
    window_loss(rec, frames, None, LossConfig(random_shift=True), torch.Generator().manual_seed(0))
    ((x, _, _),) = rec.calls
    seen = x[:, :4].round()  # the context frames: their noise (σ_c ≤ 0.1) is far below the values' spacing
    starts = seen[:, 0, 0, 0]
    assert len(set(starts.tolist())) > 1  # windows are shifted differently
    for i in range(3):
        assert torch.equal(seen[i], frames[i].roll(-int(starts[i]), dims=1))


def test_random_shift_refuses_a_fixed_surprise_map():
    with pytest.raises(ValueError, match="surprise map"):
        window_loss(
            Recorder(0.0),
            torch.zeros(1, 4, 1, 8, 8),
            None,
            LossConfig(random_shift=True),
            torch.Generator(),
            torch.zeros(8, 8),
        )
