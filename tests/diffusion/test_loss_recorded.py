"""Training draws and losses pinned to a recorded run: every mode of the window loss, bit for bit.

The numbers in loss_recorded.json are 20 seeded training steps of tiny models in each training
mode (teacher, forcing, self-context, random shift, a model that diffuses the change) and the
first step of one batch trained as one process and as two ranks, each rank keeping its part of
the batch. A change to how the loss draws its noise, weighs its error or slices a batch shows
here as a changed number. Torch runs on one thread here (the thread count changes the order of
float additions); on the CPU and torch that recorded them the numbers must match exactly,
elsewhere (another vector unit or BLAS kernel) to a tolerance. Record anew with
`DIFFWORLD_RECORD=1 pytest FILE`, only for a change meant to alter training.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from diffworld import distributed
from diffworld import train as training
from diffworld.diffusion.loss import LossConfig
from diffworld.model.world_model import ModelConfig
from diffworld.train import TrainConfig, build_model, train
from diffworld.worlds import collect_episodes, default_policy, make_world, random_policy, training_defaults
from tests.conftest import perturb, recording_signature

RECORDED = Path(__file__).with_name("loss_recorded.json")
RECORD = os.environ.get("DIFFWORLD_RECORD") == "1"
#: Where the recording's machine and torch differ from this one: relative tolerance on each number.
#: Reordered float additions move these numbers a little: two threads instead of one, 1.6e-7
#: relative at most over the 20 steps; 1e-4 leaves room for other kernels and still catches a
#: changed draw, which moves them by whole percents.
FOREIGN_RTOL = 1e-4
#: On the recording's torch and vector unit: two CPU models of one vector unit still differ in the
#: last bits of a float sum (seen: 2e-7 relative), far below a changed draw.
SAME_RTOL = 1e-6

#: name: (world, world options, model target, loss settings over the world's recommended ones)
CASES = {
    "pong-teacher": ("pong", {}, "frame", {}),
    "pong-forcing": ("pong", {}, "frame", {"context": "forcing"}),
    "pong-self-context": ("pong", {}, "frame", dict(self_context=0.5, self_context_steps=2, self_context_churn=1.0)),
    "lorenz96-random-shift": ("lorenz96", {"k": 16}, "frame", {"random_shift": True}),
    "lorenz96-forcing-random-shift": ("lorenz96", {"k": 16}, "frame", {"random_shift": True, "context": "forcing"}),
    "fields-change": ("fields", {"size": 16}, "change", {}),
    "fields-change-self-context": ("fields", {"size": 16}, "change", {"self_context": 0.5, "self_context_steps": 2}),
}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here records and replays on one thread (`one_thread`)."""


def episodes(world: str, options: dict) -> list:
    policy = default_policy(world) if world == "pong" else random_policy
    return collect_episodes(lambda: make_world(world, **options), range(3), policy, max_steps=80)


def trained(name: str, out: Path) -> dict[str, list[float] | float]:
    """Loss at each of 20 steps, the gradient norm every 5, and the sum of the final raw weights."""
    world, options, target, loss = CASES[name]
    data = episodes(world, options)
    model = build_model(make_world(world, **options).spec, data, ModelConfig.preset("tiny", patch=4, target=target))
    cfg = TrainConfig(steps=20, batch_size=4, lr=2e-3, warmup=2, log_every=5, checkpoint_every=100, seed=3)
    cfg = replace(cfg, loss=LossConfig(**{**training_defaults(world), **loss}))
    losses: list[float] = []
    result = train(model, data, cfg, out, progress=False, on_step=lambda step, value: losses.append(value))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert result.steps == 20 and len(losses) == 20
    weights = float(sum(p.detach().double().sum() for p in model.parameters()))
    return {"losses": losses, "grad_norms": [r["grad_norm"] for r in log], "weights": weights}


def first_step(cfg: LossConfig, part: tuple[int, int], out: Path, monkeypatch: pytest.MonkeyPatch) -> float:
    """The loss of the first training step of a perturbed tiny pong model as rank `part[0]` of
    `part[1]` processes: the training loop keeps this rank's windows and noise of the global batch.

    The process group is stood in for in this one process (no gradient averaging is needed for a
    first step's loss).
    """
    data = episodes("pong", {})
    model = perturb(build_model(make_world("pong").spec, data, ModelConfig.preset("tiny", patch=4)), seed=1)
    train_cfg = TrainConfig(steps=1, batch_size=4, lr=2e-3, warmup=2, log_every=5, checkpoint_every=100, seed=5)
    train_cfg = replace(train_cfg, loss=cfg)
    losses: list[float] = []
    with monkeypatch.context() as m:
        m.setattr(distributed, "setup", lambda device: (distributed.Ranks(*part), torch.device(device)))
        m.setattr(distributed, "mean_over_ranks", lambda value, ranks: value)
        m.setattr(distributed, "barrier", lambda ranks: None)
        m.setattr(training, "DistributedDataParallel", lambda module, **kw: module)
        train(model, data, train_cfg, out, progress=False, on_step=lambda step, value: losses.append(value))
    return losses[0]


def parts(out: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[float]]:
    """One batch of 4 windows as one part and as two (two ranks): teacher with self-context, and forcing."""
    got = {}
    pong = training_defaults("pong")
    for mode, cfg in (
        ("teacher-self-context", LossConfig(**pong, self_context=0.5, self_context_steps=2, self_context_churn=1.0)),
        ("forcing", LossConfig(**{**pong, "context": "forcing"})),
    ):
        runs = ((0, 1), (0, 2), (1, 2))
        got[mode] = [first_step(cfg, part, out / f"{mode}-{part[0]}-of-{part[1]}", monkeypatch) for part in runs]
    return got


def recorded() -> dict:
    return json.loads(RECORDED.read_text()) if RECORDED.exists() else {}


def record(key: str, value) -> None:
    data = recorded()
    data[key] = value
    data["signature"] = recording_signature()
    RECORDED.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def flat(numbers) -> list[float]:
    """The numbers of nested dicts and lists, in order."""
    if isinstance(numbers, dict):
        return [x for key in sorted(numbers) for x in flat(numbers[key])]
    return [x for item in numbers for x in flat(item)] if isinstance(numbers, list) else [numbers]


def check(got, want) -> None:
    """Within SAME_RTOL on the recording's torch and vector unit; else within FOREIGN_RTOL."""
    if recorded()["signature"] == recording_signature():
        assert flat(got) == pytest.approx(flat(want), rel=SAME_RTOL)
    else:
        assert flat(got) == pytest.approx(flat(want), rel=FOREIGN_RTOL)


@pytest.mark.parametrize("name", list(CASES))
def test_training_matches_the_recorded_run(name, tmp_path):
    got = trained(name, tmp_path)
    if RECORD:
        record(name, got)
    check(got, recorded()[name])


def test_two_parts_of_a_batch_match_the_recorded_whole(tmp_path, monkeypatch):
    got = parts(tmp_path, monkeypatch)
    for whole, *halves in got.values():
        assert whole == pytest.approx(sum(halves) / 2, rel=1e-6)  # two ranks average to one process's loss
    if RECORD:
        record("parts", got)
    check(got, recorded()["parts"])
