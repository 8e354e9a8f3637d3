"""The chance code's loss and its event windows; a coin toss that a one-step sampler averages away."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from diffworld.data.windows import WindowSampler
from diffworld.diffusion.chance import chance_loss, draw_chance_noise
from diffworld.diffusion.loss import LossConfig
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.dreamer import Dreamer
from diffworld.evaluate.forecasts import counting_evaluations
from diffworld.model.world_model import ModelConfig, WorldModel
from diffworld.spec import ActionSpace, WorldSpec
from diffworld.train import event_frames, event_shift, quiet_frames
from tests.conftest import tiny_model

ROWS = (0, 3, 6)  # where the toss puts a 2×2 block in the new frame, each with chance 1/3


def toss_windows(b: int, g: torch.Generator, quiet: bool | torch.Tensor = False) -> torch.Tensor:
    """[b, 3, 1, 8, 8]: two frames with a marker at the left, then a block at a row drawn uniformly
    from ROWS; where `quiet` ([b] or one for all), the marker is at the right and stays: no toss."""
    quiet = torch.as_tensor(quiet).expand(b)
    f = torch.zeros(b, 3, 1, 8, 8)
    f[~quiet, :2, 0, 0, 0] = 1
    f[quiet, :, 0, 0, 7] = 1
    for i, r in enumerate(torch.tensor(ROWS)[torch.randint(3, (b,), generator=g)].tolist()):
        if not quiet[i]:
            f[i, 2, 0, r : r + 2, 3:5] = 1
    return f


def outcomes(frames: torch.Tensor) -> list[int]:
    """How many frames [N, 1, 8, 8] are exactly a block at each row of ROWS (invalid frames count nowhere)."""
    counts = [0] * len(ROWS)
    for j, r in enumerate(ROWS):
        want = torch.zeros(1, 8, 8)
        want[0, r : r + 2, 3:5] = 1
        counts[j] = int((frames == want).flatten(1).all(1).sum())
    return counts


def train_toss(
    codes: int, steps: int, windows: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]
) -> tuple[WorldModel, torch.Generator]:
    """A tiny DiT with a chance code, trained on the chance loss alone over `windows(g)` ->
    (frames [32, 3, 1, 8, 8], event [32]); returned in eval mode with the generator it drew from."""
    spec = WorldSpec("toss", "grid", (1, 8, 8), "binary", ActionSpace("none", 0), value_range=(0.0, 1.0))
    torch.manual_seed(0)
    model = WorldModel(spec, ModelConfig.preset("tiny", patch=4, frames=3, chance=codes), [0.05], [0.2])
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    cfg = LossConfig(motion_weight=0, surprise_weight=0)
    model.train()
    for _ in range(steps):
        frames, event = windows(g)
        x = model.normalize(frames)
        loss, _ = chance_loss(
            model.denoiser, x, None, cfg, draw_chance_noise(cfg, tuple(x.shape), g), 5.0, None, g, event
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), g


def test_a_chance_code_draws_every_outcome_of_a_toss_that_the_posterior_mean_averages_away(one_thread):
    """Half the windows toss, half are quiet (nothing happens): the code draws the toss's three
    outcomes where one happens, and where none does it draws no event and costs one evaluation."""

    def windows(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        quiet = torch.rand(32, generator=g) < 0.5
        return toss_windows(32, g, quiet), ~quiet

    model, g = train_toss(8, 800, windows)
    drawn, evaluations = {}, {}
    for method, quiet in (("chance", False), ("euler", False), ("chance", True)):
        model.sampler = SamplerConfig(method=method, steps=1, sigma_ctx=0.02)
        dreamer = Dreamer(model, 300, generator=torch.Generator().manual_seed(1))
        dreamer.reset(toss_windows(1, g, quiet)[:, :2].expand(300, -1, -1, -1, -1))
        with counting_evaluations(model) as count:
            new = dreamer.step()
        drawn[method, quiet], evaluations[method, quiet] = new, count[0] / 300
    tossed, still = outcomes(drawn["chance", False]), toss_windows(1, g, True)[0, 2]
    assert sum(tossed) >= 0.95 * 300, tossed  # measured: 300 of 300
    assert chisquare(tossed).pvalue > 0.001, tossed  # measured: [89, 126, 85]
    assert sum(outcomes(drawn["euler", False])) < 0.5 * 300  # one step returns the mean: measured 0 valid
    assert (drawn["chance", True] == still).flatten(1).all(1).float().mean() >= 0.95  # measured: 1.00
    assert evaluations["chance", True] < 1.1 and evaluations["chance", False] > 1.9, evaluations  # measured: 1.0, 2.0


def test_events_drawn_at_the_datas_rate_when_training_over_draws_them(one_thread):
    """A toss happens after the same past one time in five; training sees half its windows at tosses,
    and the event head's shift brings a dream back to one in five."""
    rate, share = 0.2, 0.5

    def windows(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        event = torch.cat([torch.rand(16, generator=g) < rate, torch.ones(16, dtype=torch.bool)])  # random, then events
        frames = toss_windows(32, g)
        frames[~event, 2] = frames[~event, 1]  # no toss: nothing changes
        return frames, event

    model, g = train_toss(4, 300, windows)
    drawn = {}
    model.denoiser.net.chance.event_shift.fill_(event_shift(round(rate * 10_000), 10_000, share))
    start = toss_windows(1, g)[:, :2].expand(400, -1, -1, -1, -1)
    for shift in (0.0, None):  # the sampler's override (the mix's odds), then the model's correction
        model.sampler = SamplerConfig(method="chance", sigma_ctx=0.02, event_shift=shift)
        dreamer = Dreamer(model, 400, generator=torch.Generator().manual_seed(1))
        dreamer.reset(start)
        new = dreamer.step()
        drawn[shift] = float(new[:, 0, 0, 0].eq(0).float().mean())  # the marker gone: a toss was drawn
    unshifted, shifted = drawn.values()
    assert 0.45 < unshifted < 0.75, drawn  # the mix's rate, 0.5 + 0.5 · 0.2 = 0.6: measured 0.650
    assert 0.12 < shifted < 0.28, drawn  # the data's rate, 0.2: measured 0.228


def test_the_chance_loss_needs_a_code_and_a_frame_target(odd_spec):
    x = torch.zeros(2, 4, 3, 12, 20)
    cfg, g = LossConfig(), torch.Generator().manual_seed(0)
    noise = draw_chance_noise(cfg, tuple(x.shape), g)
    assert noise.sigma.shape == (2, 3) and noise.noise.shape == (2, 5, 3, 12, 20)
    with pytest.raises(ValueError, match="needs a model with a chance code"):
        chance_loss(tiny_model(odd_spec).denoiser, x, None, cfg, noise, 5.0)
    loss, parts = chance_loss(tiny_model(odd_spec, chance=4).train().denoiser, x, None, cfg, noise, 5.0)
    assert (
        loss.ndim == 0
        and torch.isfinite(loss)
        and set(parts) == {"mean", "decoder", "event", "prior", "codes_used", "events", "quiet"}
    )
    quiet, _ = chance_loss(
        tiny_model(odd_spec, chance=4).train().denoiser,
        x,
        None,
        cfg,
        noise,
        5.0,
        event=torch.zeros(2, dtype=torch.bool),
    )
    assert torch.isfinite(quiet)  # no window with an event: the event head alone learns


def test_the_posterior_means_weight_scales_its_term_alone(odd_spec):
    x = torch.randn(3, 4, 3, 12, 20, generator=torch.Generator().manual_seed(1))
    event = torch.tensor([True, False, False])
    model = tiny_model(odd_spec, chance=4).eval()  # eval: no code restarts between the two calls
    losses = {}
    for weight in (1.0, 4.0):
        cfg = LossConfig(chance_mean_weight=weight)
        noise = draw_chance_noise(cfg, tuple(x.shape), torch.Generator().manual_seed(0))
        losses[weight] = chance_loss(model.denoiser, x, None, cfg, noise, 5.0, event=event)
    (one, parts), (four, _) = losses[1.0], losses[4.0]
    assert parts["mean"] > 0 and float(four - one) == pytest.approx(3 * parts["mean"], rel=1e-4)
    with pytest.raises(ValueError, match="chance_mean_weight must be >= 0"):
        LossConfig(chance_mean_weight=-1.0)


def test_with_a_decoder_of_its_own_the_decoders_error_never_reaches_the_backbone(odd_spec):
    x = torch.randn(3, 4, 3, 12, 20, generator=torch.Generator().manual_seed(1))
    model = tiny_model(odd_spec, chance=4, chance_decoder=True).eval()  # eval: no code restarts
    net, event, cfg = model.denoiser.net, torch.tensor([True, True, False]), LossConfig()

    def grads() -> tuple[list[torch.Tensor], dict[str, float]]:
        model.zero_grad()
        noise = draw_chance_noise(cfg, tuple(x.shape), torch.Generator().manual_seed(0))
        loss, parts = chance_loss(model.denoiser, x, None, cfg, noise, 5.0, event=event)
        loss.backward()
        return [p.grad.clone() for p in net.blocks.parameters()], parts

    backbone, parts = grads()
    assert sum(float(g.abs().sum()) for g in backbone) > 0  # the mean and the prior train it
    assert sum(float(p.grad.abs().sum()) for p in net.decoder.blocks.parameters()) > 0
    with torch.no_grad():
        for p in net.decoder.parameters():
            p.add_(0.05)
    again, changed = grads()
    assert changed["decoder"] != pytest.approx(parts["decoder"], rel=1e-3)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(backbone, again))


@pytest.mark.parametrize(
    ("dit", "loss", "reaches"),
    [
        ({"chance_decoder": True}, {}, True),
        ({"chance_decoder": True}, {"chance_prior_detached": True}, False),
        ({"chance_decoder": True, "chance_prior": "decoder"}, {}, False),
    ],
    ids=["prior-on-backbone", "prior-on-stopped-features", "prior-on-decoder"],
)
def test_the_code_priors_loss_reaches_the_backbone_only_where_it_reads_its_features(odd_spec, dit, loss, reaches):
    """The backbone's gradient with the prior's code head moved: the same unless that head's loss trains it."""
    x = torch.randn(3, 4, 3, 12, 20, generator=torch.Generator().manual_seed(1))
    model = tiny_model(odd_spec, chance=4, **dit).eval()  # eval: no code restarts
    net, event, cfg = model.denoiser.net, torch.tensor([True, True, False]), LossConfig(**loss)

    def grads() -> tuple[list[torch.Tensor], float]:
        model.zero_grad()
        noise = draw_chance_noise(cfg, tuple(x.shape), torch.Generator().manual_seed(0))
        out, parts = chance_loss(model.denoiser, x, None, cfg, noise, 5.0, event=event)
        out.backward()
        return [p.grad.clone() for p in net.blocks.parameters()], parts["prior"]

    backbone, prior = grads()
    with torch.no_grad():
        net.chance.prior.weight.add_(
            torch.randn(net.chance.prior.weight.shape, generator=torch.Generator().manual_seed(2))
        )
    again, moved = grads()
    assert moved != pytest.approx(prior, rel=1e-3)  # the head moved: its loss changed
    same = all(torch.allclose(a, b, atol=1e-7) for a, b in zip(backbone, again))
    assert same != reaches
    if dit.get("chance_prior") == "decoder":  # the decoder's features carry it instead
        assert sum(float(p.grad.abs().sum()) for p in net.decoder.blocks.parameters()) > 0


def new_ball() -> torch.Tensor:
    """[8, 1, 10, 10]: a ball moves right one pixel a frame, then a new one appears at the far side
    (frame 5) and moves left."""
    frames = torch.zeros(8, 1, 10, 10)
    for t in range(5):
        frames[t, 0, 5, 1 + t] = 1
    for t in range(5, 8):
        frames[t, 0, 2, 8 - (t - 5)] = 1
    return frames


def test_event_frames_are_births_on_discrete_grids_and_rare_unforeseen_changes_on_real_ones():
    """A ball moves one pixel a frame, then a new one appears at the far side: a birth, and unforeseen."""
    frames = new_ball()
    cfg, rare, common = LossConfig(), torch.full((10, 10), 1e-3), torch.full((10, 10), 0.5)
    assert event_frames(frames, "binary", (0.0, 1.0), None, cfg).nonzero()[:, 0].tolist() == [
        5,
        6,
    ]  # and its first move
    assert event_frames(frames, "real", (0.0, 1.0), rare, cfg).nonzero()[:, 0].tolist() == [5]
    assert not event_frames(frames, "real", (0.0, 1.0), common, cfg).any()  # common there: not an event
    assert not event_frames(frames[:5], "binary", (0.0, 1.0), None, cfg).any()  # motion alone: nothing born


def test_the_quiet_frame_drops_what_was_born():
    """A ball moves right; a new one appears at the far side (frame 5), then moves (frame 6)."""
    frames = new_ball()
    frames[:, 0, 9, :] = 1  # a wall, there all along
    model = tiny_model(
        WorldSpec("dots", "grid", (1, 10, 10), "binary", ActionSpace(), value_range=(0.0, 1.0)), 3, patch=2
    )
    windows = torch.stack([frames[t - 2 : t + 1] for t in (4, 5, 6)])  # ending before, at and after the birth
    event = torch.tensor([False, True, True])
    calm, has = quiet_frames(model, windows[:, -2:], event)
    assert has.tolist() == [False, True, False]  # only the birth frame has an object to drop
    expected = frames[5].clone()
    expected[0, 2, 8] = 0  # the wall stays, the new ball is gone
    assert torch.equal(calm[1], expected) and torch.equal(calm[0], frames[4])


def test_windows_ending_at_frames_stay_inside_their_episode():
    frames = np.broadcast_to(np.arange(10, dtype=np.float32)[:, None, None, None], (10, 1, 2, 2))
    ends = np.array([4, 10])
    sampler = WindowSampler.from_arrays(frames, None, ends, 3)
    assert sampler.ending_at(torch.tensor([1, 2, 3, 5, 9])).tolist() == [0, 1, 7]  # 5 would straddle episodes
    batch = sampler.sample(50, torch.Generator().manual_seed(0), starts=torch.tensor([7]))
    assert batch.frames.shape == (50, 3, 1, 2, 2) and (batch.frames[:, :, 0, 0, 0] == torch.tensor([7, 8, 9])).all()
