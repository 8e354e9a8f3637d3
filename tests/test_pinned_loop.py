"""One full loop pinned to a recorded number: collect, train a tiny model, dream — its output sum.

A tiny Lorenz-96 model trains 20 seeded steps on three episodes, then dreams 8 frames for 2
members from a held-out start; the sum and the sum of squares of the dream are recorded in
pinned_loop.json. Any change to collection, normalisation, the model, the loss, the optimiser,
the sampler or the rollout engine that alters what a user gets shows here. Torch runs on one
thread; on the CPU and torch that recorded the numbers they must match exactly, elsewhere to
FOREIGN_RTOL. Record anew with `DIFFWORLD_RECORD=1 pytest FILE`, only for a change meant to alter
what models learn or dream.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from diffworld.diffusion.loss import LossConfig
from diffworld.model.world_model import ModelConfig
from diffworld.rollout import rollout
from diffworld.train import TrainConfig, build_model, train
from diffworld.worlds import collect_episodes, make_world, random_policy, training_defaults
from tests.conftest import recording_signature

RECORDED = Path(__file__).with_name("pinned_loop.json")
RECORD = os.environ.get("DIFFWORLD_RECORD") == "1"
#: Relative tolerance where the recording's torch or CPU differ from this one: 20 steps of training
#: and 8 dreamed frames carry reordered float additions further than the loss alone does.
FOREIGN_RTOL = 1e-3


def loop(out: Path) -> dict[str, float]:
    make = lambda: make_world("lorenz96", k=16)  # noqa: E731
    data = collect_episodes(make, range(3), random_policy, max_steps=80)
    model = build_model(make().spec, data, ModelConfig.preset("tiny", patch=4))
    cfg = TrainConfig(steps=20, batch_size=4, lr=2e-3, warmup=2, log_every=5, checkpoint_every=100, seed=3)
    train(model, data, replace(cfg, loss=LossConfig(**training_defaults("lorenz96"))), out, progress=False)
    start = collect_episodes(make, [10], random_policy, max_steps=model.frames)[0].frames[None, : model.frames - 1]
    dream = rollout(
        model, torch.as_tensor(start), None, horizon=8, n_samples=2, generator=torch.Generator().manual_seed(0)
    )
    values = dream.double()
    return {"sum": float(values.sum()), "sum_of_squares": float(values.square().sum()), "shape": list(dream.shape)}


def test_a_tiny_train_then_dream_matches_the_recorded_numbers(tmp_path, one_thread):
    got = loop(tmp_path)
    if RECORD:
        RECORDED.write_text(json.dumps({**got, "signature": recording_signature()}, indent=1, sort_keys=True) + "\n")
    want = json.loads(RECORDED.read_text())
    assert got["shape"] == want["shape"]
    assert all(map(torch.isfinite, torch.tensor([got["sum"], got["sum_of_squares"]])))
    if want["signature"] == recording_signature():
        assert (got["sum"], got["sum_of_squares"]) == (want["sum"], want["sum_of_squares"])
    else:
        assert got["sum"] == pytest.approx(
            want["sum"], rel=FOREIGN_RTOL, abs=FOREIGN_RTOL * want["sum_of_squares"] ** 0.5
        )
        assert got["sum_of_squares"] == pytest.approx(want["sum_of_squares"], rel=FOREIGN_RTOL)
