"""Dreams recorded once and replayed: the shipped pong model and tiny seeded models, rolled out and
stepped with fixed generators, must reproduce the recording made on this machine's torch, vector
unit and CPU model exactly (`recorded_dreams*.npz`, one per machine), elsewhere `recorded_dreams.npz`
to float rounding.

Run this file as a script to record the dreams again (only where a change of the dreams is meant;
the other machines' recordings are removed); with `--machine`, to add this machine's recording of
unchanged code beside the others.
"""

from __future__ import annotations

import platform
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from diffworld.diffusion.sampling import SamplerConfig
from diffworld.dreamer import Dreamer
from diffworld.model.world_model import ModelConfig, WorldModel
from diffworld.rollout import rollout
from diffworld.spec import ActionSpace, WorldSpec
from diffworld.worlds import collect_episodes, default_policy, make_world
from tests.conftest import cpu_model, perturb, tiny_model

RECORDED = Path(__file__).with_name("recorded_dreams.npz")

REAL = WorldSpec("real", "grid", (2, 8, 8), "real", ActionSpace("discrete", 3))
BITS = WorldSpec("bits", "grid", (1, 8, 8), "binary", ActionSpace("discrete", 3), value_range=(0.0, 1.0))
PUSH = WorldSpec("push", "grid", (2, 8, 8), "real", ActionSpace("continuous", 2))


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pong_dreams() -> dict[str, torch.Tensor]:
    """The shipped pong model: 2 held-out contexts × 3 members × 12 frames, and a stepped session."""
    model = WorldModel.from_pretrained("pong")
    episodes = collect_episodes(lambda: make_world("pong"), [90_001, 90_002], default_policy("pong"), max_steps=60)
    ctx = torch.as_tensor(np.stack([e.frames[20:26] for e in episodes]), dtype=torch.float32)  # [2, 6, 1, 32, 32]
    ctx_acts = torch.as_tensor(np.stack([e.actions[20:26] for e in episodes]))  # [2, 6]
    acts = torch.as_tensor(np.stack([e.actions[26:38] for e in episodes]))  # [2, 12]
    kw = dict(n_samples=3, context_actions=ctx_acts)
    euler = SamplerConfig(steps=1, sigma_ctx=model.sampler.sigma_ctx)  # guidance and adaptive steps need an ODE sampler
    out = {
        "pong": rollout(model, ctx, acts, generator=seeded(1), **kw),
        "pong_cfg": rollout(model, ctx, acts, sampler=replace(euler, guidance=2.0), generator=seeded(2), **kw),
        "pong_adaptive": rollout(model, ctx, acts, sampler=replace(euler, adaptive_steps=4), generator=seeded(3), **kw),
        "pong_uncached": rollout(model, ctx, acts[:, :6], generator=seeded(4), use_cache=False, **kw),
        "pong_marginal": rollout(
            model, ctx, acts, sampler=replace(model.sampler, method="marginal"), generator=seeded(6), **kw
        ),
    }
    dreamer = Dreamer(model, 2, replace(euler, adaptive_steps=4), seeded(5))
    dreamer.reset(ctx, ctx_acts)
    frames = [dreamer.step(acts[:, h]) for h in range(6)]
    again = episodes[1]  # row 0 restarts from another moment, as long as the frames row 1 holds (7)
    restart = (
        torch.as_tensor(again.frames[40:47][None], dtype=torch.float32),
        torch.as_tensor(again.actions[40:47][None]),
    )
    dreamer.reset(*restart, rows=[0])
    frames += [dreamer.step(acts[:, h]) for h in range(6, 12)]
    out["pong_dreamer"] = torch.stack(frames, 1)  # [2, 12, 1, 32, 32]
    return out


def real_dreams() -> dict[str, torch.Tensor]:
    """A real-valued tiny world: members that stop, closed-loop policies, Heun with churn and CFG."""
    model = tiny_model(REAL)
    g = seeded(10)
    ctx, acts = torch.rand(2, 3, *REAL.frame_shape, generator=g), torch.randint(0, 3, (2, 8), generator=g)
    stop = lambda f: f.mean((1, 2, 3)) > 0.12  # noqa: E731
    policy = lambda h, prev: torch.full((6,), h % 3) if prev is None else (prev.mean((1, 2, 3)) * 40).long() % 3  # noqa: E731
    heun = SamplerConfig(steps=3, method="heun", churn=0.5, guidance=1.5)
    out = {}
    for cached in (True, False):
        name = "" if cached else "_uncached"
        kw = dict(n_samples=3, sampler=SamplerConfig(steps=2), use_cache=cached)
        out[f"real_stop_policy{name}"] = rollout(
            model, ctx, None, horizon=8, stop=stop, policy=policy, generator=seeded(11), **kw
        )
        out[f"real_heun{name}"] = rollout(
            model, ctx, acts, n_samples=2, sampler=heun, use_cache=cached, generator=seeded(12)
        )
    dreamer = Dreamer(model, 2, SamplerConfig(steps=2, guidance=2.0), seeded(13))
    dreamer.reset(ctx)
    out["real_dreamer"] = torch.stack([dreamer.step(acts[:, h]) for h in range(8)], 1)
    return out


def guided_dreams() -> dict[str, torch.Tensor]:
    """Autoguidance by a second tiny model, with classifier-free guidance and members that stop."""
    model, guide = tiny_model(REAL, seed=0), tiny_model(REAL, seed=1)
    g = seeded(20)
    ctx, acts = torch.rand(2, 2, *REAL.frame_shape, generator=g), torch.randint(0, 3, (2, 7), generator=g)
    stop = lambda f: f.mean((1, 2, 3)) > 0.12  # noqa: E731
    kw = dict(n_samples=3, sampler=SamplerConfig(steps=2, guidance=1.5), guide=guide, guide_weight=2.5, stop=stop)
    return {
        "guided": rollout(model, ctx, acts, generator=seeded(21), **kw),
        "guided_uncached": rollout(model, ctx, acts, generator=seeded(22), use_cache=False, **kw),
    }


def bits_dreams() -> dict[str, torch.Tensor]:
    """A binary tiny world: adaptive steps among members that stop, and the marginal sampler."""
    model = tiny_model(BITS)
    g = seeded(30)
    ctx, acts = (
        (torch.rand(2, 2, *BITS.frame_shape, generator=g) > 0.5).float(),
        torch.randint(0, 3, (2, 7), generator=g),
    )
    stop = lambda f: f.sum((1, 2, 3)) > 34  # noqa: E731
    adaptive = SamplerConfig(steps=1, adaptive_steps=3, uncertain=2.0, guidance=2.0)
    out = {}
    for cached in (True, False):
        name = "" if cached else "_uncached"
        out[f"bits_adaptive{name}"] = rollout(
            model, ctx, acts, n_samples=3, sampler=adaptive, stop=stop, use_cache=cached, generator=seeded(31)
        )
    out["bits_marginal"] = rollout(
        model, ctx, acts, n_samples=3, sampler=SamplerConfig(method="marginal"), generator=seeded(32)
    )
    dreamer = Dreamer(model, 2, adaptive, seeded(33))
    dreamer.reset(ctx)
    out["bits_dreamer"] = torch.stack([dreamer.step(acts[:, h]) for h in range(7)], 1)
    return out


def change_dreams() -> dict[str, torch.Tensor]:
    """A tiny model that diffuses the change, with continuous actions (some unknown)."""
    torch.manual_seed(0)
    config = replace(ModelConfig.preset("tiny", patch=4, frames=5, target="change"), change_std=0.2)
    model = perturb(WorldModel(PUSH, config, np.full(2, 0.1), np.full(2, 0.3)), 0).eval()
    g = seeded(40)
    ctx, acts = torch.rand(2, 3, *PUSH.frame_shape, generator=g), torch.randn(2, 7, 2, generator=g)
    acts[0, 2] = float("nan")
    out = {
        f"change{'' if cached else '_uncached'}": rollout(
            model, ctx, acts, n_samples=2, sampler=SamplerConfig(steps=2), use_cache=cached, generator=seeded(41)
        )
        for cached in (True, False)
    }
    dreamer = Dreamer(model, 2, SamplerConfig(steps=2), seeded(42))
    dreamer.reset(ctx, acts[:, :3])
    out["change_dreamer"] = torch.stack([dreamer.step(acts[:, h]) for h in range(7)], 1)
    return out


def dreams() -> dict[str, torch.Tensor]:
    """Every recorded dream, by name."""
    with torch.no_grad():
        return {**pong_dreams(), **real_dreams(), **guided_dreams(), **bits_dreams(), **change_dreams()}


def machine() -> str:
    """What the exact numbers depend on: torch's version and the CPU's kernels."""
    return f"torch {torch.__version__}, {platform.machine()}, {torch.backends.cpu.get_cpu_capability()}, {cpu_model()}"


def recording_of(name: str) -> Path:
    """Where a machine's recording beside `recorded_dreams.npz` lives."""
    return RECORDED.with_name(f"recorded_dreams.{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.npz")


def recordings() -> dict[str, Path]:
    """Every recording, by the machine that made it."""
    out = {}
    for path in sorted(RECORDED.parent.glob("recorded_dreams*.npz")):
        with np.load(path) as f:
            out[str(f["machine"])] = path
    return out


BINARY = ("pong", "bits")
#: Dreams whose course a last-bit difference may change: binary values round, members stop at a threshold.
FRAGILE = (*BINARY, "real_stop", "guided")


def save(path: Path = RECORDED) -> None:
    """Record the dreams: binary ones as packed bits, the others as float32."""
    arrays = {"machine": np.array(machine())}
    for name, dream in dreams().items():
        a = dream.numpy()
        if name.startswith(BINARY):
            assert set(np.unique(a)) <= {0.0, 1.0}, name
            arrays[f"{name}.bits"] = np.packbits(a.astype(bool))
            arrays[f"{name}.shape"] = np.array(a.shape)
        else:
            arrays[name] = a.astype(np.float32)
    np.savez_compressed(path, **arrays)


def load(path: Path = RECORDED) -> dict[str, torch.Tensor]:
    """The recorded dreams, by name."""
    out = {}
    with np.load(path) as f:
        for key in f.files:
            if key.endswith(".bits"):
                name = key[: -len(".bits")]
                shape = tuple(f[f"{name}.shape"])
                out[name] = torch.as_tensor(
                    np.unpackbits(f[key], count=int(np.prod(shape))).reshape(shape).astype(np.float32)
                )
            elif not key.endswith(".shape") and key != "machine":
                out[key] = torch.as_tensor(f[key])
    return out


@pytest.fixture(scope="module")
def recorded_and_dreamed() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], bool]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the recording's: reductions split across threads round differently
    try:
        dreamed = dreams()
    finally:
        torch.set_num_threads(threads)
    mine = recordings().get(machine())
    return load(mine or RECORDED), dreamed, mine is not None


def test_dreams_reproduce_the_recording(recorded_and_dreamed):
    """Bit for bit where torch and the CPU's kernels are the recording's; elsewhere to float rounding,
    the dreams a rounding difference cannot send on another course."""
    recorded, dreamed, same_machine = recorded_and_dreamed
    assert sorted(dreamed) == sorted(recorded)
    for name, want in recorded.items():
        got = dreamed[name]
        assert got.shape == want.shape, name
        if same_machine:
            assert torch.equal(got, want), (name, float((got - want).abs().max()))
        elif not name.startswith(FRAGILE):
            assert torch.allclose(got, want, atol=1e-4), (name, float((got - want).abs().max()))


if __name__ == "__main__":
    torch.set_num_threads(1)
    if "--machine" in sys.argv[1:]:
        path = recordings().get(machine(), recording_of(machine()))
    else:
        path = RECORDED
        for old in RECORDED.parent.glob("recorded_dreams.*.npz"):
            old.unlink()
    save(path)
    print(f"recorded {len(load(path))} dreams in {path} ({path.stat().st_size / 1e3:.0f} kB) on {machine()}")
