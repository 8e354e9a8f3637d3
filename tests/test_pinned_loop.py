"""One full loop pinned to a recorded number: collect, train a tiny model, dream — its output sum.

A tiny Lorenz-96 model trains 20 seeded steps on three episodes, then dreams 8 frames for 2
members from a held-out start; the sum and the sum of squares of the dream are recorded in
pinned_loop.json. Any change to collection, normalisation, the model, the loss, the optimiser,
the sampler or the rollout engine that alters what a user gets shows here. Torch runs on one
thread; on a machine with a recording (torch, vector unit and CPU model) they must match exactly.
Elsewhere the first step's loss is compared, to FOREIGN_RTOL: another CPU's kernels send the 20
steps on another course (seen: the dream's sum 0.7% off). Record anew with
`DIFFWORLD_RECORD=1 pytest FILE`, only for a change meant to alter what models learn or dream;
`DIFFWORLD_RECORD=machine` adds this machine's recording of unchanged code.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from diffworld.diffusion.loss import LossConfig
from diffworld.model.world_model import ModelConfig
from diffworld.rollout import rollout
from diffworld.train import TrainConfig, build_model, train
from diffworld.worlds import collect_episodes, make_world, random_policy, training_defaults
from tests.conftest import record_mode, this_machines, with_recording

RECORDED = Path(__file__).with_name("pinned_loop.json")
#: Relative tolerance on the first step's loss where no recording is this machine's.
FOREIGN_RTOL = 1e-4


def loop(out: Path) -> dict[str, float]:
    make = lambda: make_world("lorenz96", k=16)  # noqa: E731
    data = collect_episodes(make, range(3), random_policy, max_steps=80)
    model = build_model(make().spec, data, ModelConfig.preset("tiny", patch=4))
    cfg = TrainConfig(steps=20, batch_size=4, lr=2e-3, warmup=2, log_every=5, checkpoint_every=100, seed=3)
    losses: list[float] = []
    cfg = replace(cfg, loss=LossConfig(**training_defaults("lorenz96")))
    train(model, data, cfg, out, progress=False, on_step=lambda step, value: losses.append(value))
    start = collect_episodes(make, [10], random_policy, max_steps=model.frames)[0].frames[None, : model.frames - 1]
    dream = rollout(
        model, torch.as_tensor(start), None, horizon=8, n_samples=2, generator=torch.Generator().manual_seed(0)
    )
    values = dream.double()
    return {
        "sum": float(values.sum()),
        "sum_of_squares": float(values.square().sum()),
        "shape": list(dream.shape),
        "first_loss": losses[0],
    }


def test_a_tiny_train_then_dream_matches_the_recorded_numbers(tmp_path, one_thread):
    got = loop(tmp_path)
    recordings = json.loads(RECORDED.read_text())["recordings"]
    if record_mode():
        recordings = with_recording(recordings, got)
        RECORDED.write_text(json.dumps({"recordings": recordings}, indent=1, sort_keys=True) + "\n")
    assert all(map(torch.isfinite, torch.tensor([got["sum"], got["sum_of_squares"]])))
    want = this_machines(recordings)
    if want is not None:
        assert got["shape"] == want["shape"]
        assert (got["sum"], got["sum_of_squares"]) == (want["sum"], want["sum_of_squares"])
    else:
        want = next(r for r in recordings if "first_loss" in r)
        assert got["shape"] == want["shape"]
        assert got["first_loss"] == pytest.approx(want["first_loss"], rel=FOREIGN_RTOL)
