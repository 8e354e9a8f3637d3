"""KV-cached rollout against full recompute, measured in one run on this machine.

    python benchmarks/rollout_cache.py            # the shipped pong model
    python benchmarks/rollout_cache.py --model runs/mine/checkpoint --frames 64

Prints frames per second of one dream (batch 1) and of a 16-member ensemble, with the cache and
recomputing the history at every denoising step, and the ratio of the two. Both paths produce
the same frames within the trained window (tests/test_rollout.py checks it).
"""

from __future__ import annotations

import argparse
import time

import torch

from diffworld import WorldModel
from diffworld.worlds import default_policy, make_world
from diffworld.worlds.base import run_episode


def frames_per_second(model: WorldModel, context: torch.Tensor, frames: int, members: int, use_cache: bool, repeats: int) -> float:
    actions = torch.randint(0, model.spec.action.n, (context.shape[0], frames), generator=torch.Generator().manual_seed(0))
    model.rollout(context, actions[:, :2], n_samples=members, use_cache=use_cache)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.rollout(context, actions, n_samples=members, use_cache=use_cache, generator=torch.Generator().manual_seed(1))
        best = min(best, time.perf_counter() - t0)
    return frames * members / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="pong", help="checkpoint directory or shipped model name")
    parser.add_argument("--frames", type=int, default=32, help="frames to dream")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = WorldModel.from_pretrained(args.model)
    episode = run_episode(make_world(model.spec.name), seed=2_000_000, policy=default_policy(model.spec.name), max_steps=64)
    context = torch.as_tensor(episode.frames[None, : model.frames - 1]).float()
    print(f"model {args.model}: {model.num_parameters() / 1e6:.2f}M parameters, window {model.frames}, "
          f"sampler {model.sampler.steps} {model.sampler.method} step(s); {torch.get_num_threads()} threads")
    print(f"{'members':>8} {'cached f/s':>11} {'recompute f/s':>14} {'speed-up':>9}")
    for members in (1, 16):
        cached = frames_per_second(model, context, args.frames, members, True, args.repeats)
        full = frames_per_second(model, context, args.frames, members, False, args.repeats)
        print(f"{members:>8} {cached:>11.1f} {full:>14.1f} {cached / full:>8.2f}x")


if __name__ == "__main__":
    main()
