"""KV-cached rollout against full recompute of the context, measured in one run on this machine.

    python benchmarks/rollout_cache.py                     # contexts 4, 16, 64; demo and large configs
    python benchmarks/rollout_cache.py --contexts 7 --configs demo --members 1
    python benchmarks/rollout_cache.py --device cuda --precision bf16

For each network configuration and context length L, a pong model dreams `--frames` frames
from an L-frame context (1 and 16 members), once with the KV cache (each denoising step runs
the one new frame against the cached keys and values; the context is encoded once, inside the
timed run) and once recomputing the whole history at every denoising step. The window holds
the context and every dreamed frame, so both paths compute the same function. Printed:
frames/s of each (the median of `--repeats` runs), the speed-up, and the share of dreamed
pixels on which the two differ (pong's pixels are projected to {0, 1}, so a float-level
difference shows only where it flips a pixel).

The models have random weights (every parameter N(0, 0.05²), so attention and its cache matter;
speed does not depend on the weights, and a window of 64 frames needs a model trained for it)
and the shipped `pong` model's sampler (Euler, 1 step). `--model` measures a trained checkpoint
instead, from a context of (its window − frames) frames so the dream stays inside its window.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from common import machine, median_seconds

from diffworld import WorldModel
from diffworld.model.dit import PRESETS
from diffworld.model.world_model import ModelConfig
from diffworld.worlds import default_policy, make_world
from diffworld.worlds.base import run_episode

#: The demo's network and a larger one (4× the tokens per frame, twice the width and depth).
CONFIGS = {
    "demo": PRESETS["small"],
    "large": replace(PRESETS["small"], width=256, depth=8, heads=8, patch=4),
}


def random_model(reference: WorldModel, config_name: str, window: int) -> WorldModel:
    """A pong model of configuration `config_name` and `window` frames, every parameter N(0, 0.05²)."""
    dit = replace(CONFIGS[config_name], frames=window)
    torch.manual_seed(0)
    model = WorldModel(reference.spec, ModelConfig(dit=dit), reference.mean.cpu(), reference.std.cpu(), reference.sampler).eval()
    with torch.no_grad():
        for p in model.parameters():  # adaLN-Zero starts every residual branch closed: open them
            p.normal_(0.0, 0.05)
    return model


def measure(
    model: WorldModel, context: torch.Tensor, frames: int, members: int, repeats: int, precision: str = "fp32"
) -> tuple[float, float, float]:
    """(cached frames/s, recompute frames/s, share of dreamed pixels where the two differ)."""
    actions = torch.randint(0, model.spec.action.n, (1, frames), generator=torch.Generator().manual_seed(0))
    dreams = {}

    def run(use_cache: bool) -> None:
        gen = torch.Generator(device=model.device).manual_seed(1)
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            dreams[use_cache] = model.rollout(context, actions, n_samples=members, use_cache=use_cache, generator=gen)

    cached = median_seconds(lambda: run(True), repeats, device=model.device)
    full = median_seconds(lambda: run(False), repeats, device=model.device)
    diff = float((dreams[True] != dreams[False]).float().mean())
    return frames * members / cached, frames * members / full, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--members", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--model", default=None, help="a trained checkpoint (or shipped name): measure it at its own window")
    parser.add_argument("--frames", type=int, default=4, help="frames to dream per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: the rollout under autocast")
    args = parser.parse_args()
    reference = WorldModel.from_pretrained(args.model or "pong", device=args.device)
    episode = run_episode(make_world("pong"), seed=2_000_000, policy=default_policy("pong"), max_steps=max(args.contexts) + 1)
    if args.model:
        if args.frames >= reference.frames:
            raise SystemExit(f"--frames must be below the model's window of {reference.frames} frames")
        rows = [(args.model, reference.frames - args.frames, reference)]
    else:
        rows = [(name, length, None) for name in args.configs for length in args.contexts]
    print(f"{machine(args.device)}, {args.precision}")
    print(f"sampler: {reference.sampler.method}, {reference.sampler.steps} step(s); {args.frames} frames per run, median of {args.repeats}")
    print(f"{'config':>14} {'params':>7} {'context':>7} {'members':>7} {'cached f/s':>10} {'recompute f/s':>13} {'speed-up':>8} {'differ':>7}")
    for name, length, model in rows:
        model = model or random_model(reference, name, length + args.frames).to(args.device)
        context = torch.as_tensor(episode.frames[None, :length]).float()
        for members in args.members:
            cached, full, diff = measure(model, context, args.frames, members, args.repeats, args.precision)
            print(f"{name:>14} {model.num_parameters() / 1e6:>6.2f}M {length:>7} {members:>7} {cached:>10.1f} {full:>13.1f} {cached / full:>7.1f}x {diff:>7.1%}")


if __name__ == "__main__":
    main()
