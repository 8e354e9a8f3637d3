"""The chance code's loss and its event windows; a coin toss that a one-step sampler averages away."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from diffworld.data.windows import WindowSampler
from diffworld.diffusion.chance import chance_loss, draw_chance_noise
from diffworld.diffusion.loss import LossConfig
from diffworld.diffusion.sampling import SamplerConfig
from diffworld.dreamer import Dreamer
from diffworld.model.world_model import ModelConfig, WorldModel
from diffworld.spec import ActionSpace, WorldSpec
from diffworld.train import event_frames
from tests.conftest import tiny_model

ROWS = (0, 3, 6)  # where the toss puts a 2×2 block in the new frame, each with chance 1/3


def toss_windows(b: int, g: torch.Generator) -> torch.Tensor:
    """[b, 3, 1, 8, 8]: two frames with a marker, then a block at a row drawn uniformly from ROWS."""
    f = torch.zeros(b, 3, 1, 8, 8)
    f[:, :2, 0, 0, 0] = 1
    for i, r in enumerate(torch.tensor(ROWS)[torch.randint(3, (b,), generator=g)].tolist()):
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


def test_a_chance_code_draws_every_outcome_of_a_toss_that_the_posterior_mean_averages_away(one_thread):
    spec = WorldSpec("toss", "grid", (1, 8, 8), "binary", ActionSpace("none", 0), value_range=(0.0, 1.0))
    torch.manual_seed(0)
    model = WorldModel(spec, ModelConfig.preset("tiny", patch=4, frames=3, chance=8), [0.05], [0.2])
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    cfg = LossConfig(motion_weight=0, surprise_weight=0)
    model.train()
    for _ in range(400):
        x = model.normalize(toss_windows(32, g))
        loss, _ = chance_loss(model.denoiser, x, None, cfg, draw_chance_noise(cfg, tuple(x.shape), g), 5.0, None, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    context = toss_windows(1, g)[:, :2].expand(300, -1, -1, -1, -1)
    drawn = {}
    for method in ("chance", "euler"):
        model.sampler = SamplerConfig(method=method, steps=1, sigma_ctx=0.02)
        dreamer = Dreamer(model, 300, generator=torch.Generator().manual_seed(1))
        dreamer.reset(context)
        drawn[method] = outcomes(dreamer.step())
    assert sum(drawn["chance"]) >= 0.95 * 300, drawn  # measured: 296 of 300
    assert chisquare(drawn["chance"]).pvalue > 0.001, drawn  # measured: [124, 88, 84]
    assert sum(drawn["euler"]) < 0.5 * 300, drawn  # one step returns the mean: measured 0 valid


def test_the_chance_loss_needs_a_code_and_a_frame_target(odd_spec):
    x = torch.zeros(2, 4, 3, 12, 20)
    cfg, g = LossConfig(), torch.Generator().manual_seed(0)
    noise = draw_chance_noise(cfg, tuple(x.shape), g)
    assert noise.sigma.shape == (2, 3) and noise.noise.shape == (2, 5, 3, 12, 20)
    with pytest.raises(ValueError, match="needs a model with a chance code"):
        chance_loss(tiny_model(odd_spec).denoiser, x, None, cfg, noise, 5.0)
    loss, parts = chance_loss(tiny_model(odd_spec, chance=4).train().denoiser, x, None, cfg, noise, 5.0)
    assert loss.ndim == 0 and torch.isfinite(loss) and set(parts) == {"decoder", "prior", "codes_used"}


def test_event_frames_are_births_on_discrete_grids_and_rare_unforeseen_changes_on_real_ones():
    """A ball moves one pixel a frame, then a new one appears at the far side: a birth, and unforeseen."""
    frames = torch.zeros(8, 1, 10, 10)
    for t in range(5):
        frames[t, 0, 5, 1 + t] = 1
    for t in range(5, 8):
        frames[t, 0, 2, 8 - (t - 5)] = 1
    cfg, rare, common = LossConfig(), torch.full((10, 10), 1e-3), torch.full((10, 10), 0.5)
    assert event_frames(frames, "binary", (0.0, 1.0), None, cfg).nonzero()[:, 0].tolist() == [5]
    assert event_frames(frames, "real", (0.0, 1.0), rare, cfg).nonzero()[:, 0].tolist() == [5]
    assert not event_frames(frames, "real", (0.0, 1.0), common, cfg).any()  # common there: not an event
    assert not event_frames(frames[:5], "binary", (0.0, 1.0), None, cfg).any()  # motion alone: nothing born


def test_windows_ending_at_frames_stay_inside_their_episode():
    frames = np.broadcast_to(np.arange(10, dtype=np.float32)[:, None, None, None], (10, 1, 2, 2))
    ends = np.array([4, 10])
    sampler = WindowSampler.from_arrays(frames, None, ends, 3)
    assert sampler.ending_at(torch.tensor([1, 2, 3, 5, 9])).tolist() == [0, 1, 7]  # 5 would straddle episodes
    batch = sampler.sample(50, torch.Generator().manual_seed(0), starts=torch.tensor([7]))
    assert batch.frames.shape == (50, 3, 1, 2, 2) and (batch.frames[:, :, 0, 0, 0] == torch.tensor([7, 8, 9])).all()
