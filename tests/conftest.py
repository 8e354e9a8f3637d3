"""Shared fixtures: tiny specs and models whose weights are random (not adaLN-Zero), so tests can fail."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from diffworld.model.world_model import ModelConfig, WorldModel
from diffworld.spec import ActionSpace, WorldSpec

#: Devices a test runs on: the CPU always, and a CUDA GPU where one is present (CI has none, so
#: there the cuda cases are skipped; run `pytest -k cuda` on a GPU machine).
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")),
]


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Add noise to every parameter: zero-initialised branches would hide bugs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def tiny_model(spec: WorldSpec, frames: int = 5, seed: int = 0, **dit) -> WorldModel:
    """A tiny WorldModel for `spec` with perturbed weights."""
    torch.manual_seed(seed)
    dit = {"patch": 4, "frames": frames, **dit}
    channels = spec.frame_shape[spec.channel_axis]  # statistics per channel / feature
    model = WorldModel(spec, ModelConfig.preset("tiny", **dit), np.full(channels, 0.1), np.full(channels, 0.3))
    return perturb(model, seed).eval()


@pytest.fixture
def odd_spec() -> WorldSpec:
    """A grid world with non-square frames, 3 channels and 3 discrete actions."""
    return WorldSpec("odd", "grid", (3, 12, 20), "real", ActionSpace("discrete", 3))


@pytest.fixture(params=[0, 3], ids=["linear-head", "refiner"])
def odd_model(odd_spec: WorldSpec, request: pytest.FixtureRequest) -> WorldModel:
    return tiny_model(odd_spec, refine=request.param)


@pytest.fixture
def one_thread():
    """Torch on one thread while recording and replaying numbers: the thread count reorders float additions."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform says of the processor."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def recording_signature() -> dict[str, str]:
    """What recorded numbers depend on beyond the code: torch, the CPU's vector unit and its model
    (two models of one vector unit may pick other kernels: seen, training runs that part after a step)."""
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(), "model": cpu_model()}


def record_mode() -> str | None:
    """`DIFFWORLD_RECORD`: "1" records anew for a change meant to alter the numbers (recordings of
    other machines are dropped); "machine" adds this machine's recording of unchanged code beside
    the others; unset: replay."""
    mode = os.environ.get("DIFFWORLD_RECORD")
    if mode not in (None, "1", "machine"):
        raise ValueError(f"DIFFWORLD_RECORD must be 1 or machine, got {mode!r}")
    return mode


def this_machines(recordings: list[dict]) -> dict | None:
    """The recording made on this machine's torch, vector unit and CPU model; None where there is none."""
    return next((r for r in recordings if r["signature"] == recording_signature()), None)


def with_recording(recordings: list[dict], entry: dict) -> list[dict]:
    """`recordings` with `entry` (this machine's, signed here) in place of this machine's, as
    `record_mode` asks: alone, or beside the other machines'."""
    entry = {**entry, "signature": recording_signature()}
    others = [r for r in recordings if r["signature"] != entry["signature"]]
    return [entry] if record_mode() == "1" else [*others, entry]
