"""Shared fixtures: tiny specs and models whose weights are random (not adaLN-Zero), so tests can fail."""

from __future__ import annotations

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


def recording_signature() -> dict[str, str]:
    """What recorded numbers depend on beyond the code: torch and the CPU's vector unit."""
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}
