"""Dreaming epidemics on a graph: where the time goes, measured in one run on this machine.

    python benchmarks/graph_rollout.py                              # a fresh `small` model on Les Misérables
    python benchmarks/graph_rollout.py --model runs/cascade/checkpoint

Prints, each against its baseline in the same run:

1. spatial attention with the heat-kernel bias passed as a 3-D mask [H, S, S] (CPU SDPA falls
   back to its unfused path) and as the 4-D mask [1, H, S, S] the DiT passes (fused kernel);
2. frames per second of an ensemble dreamed with 3 Euler steps and with the marginal sampler
   (one network evaluation per frame, the cascade world's default);
3. the marginal sampler with and without `stop=extinct` on single-seed epidemics, where most
   dreams die out early (the hub ranking's workload) — with a trained model (--model): a fresh
   one draws node states at random and no dream ever dies out.

Speed only: which sampler is right for a world is a question of its dynamics (see
`diffworld.diffusion.sampling`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from diffworld import WorldModel
from diffworld.domains.epidemics.scores import seed_frames
from diffworld.model.world_model import ModelConfig
from diffworld.rollout import rollout
from diffworld.worlds import make_world
from diffworld.worlds.cascade import extinct


def best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a cascade checkpoint (default: a fresh small model on lesmis)")
    parser.add_argument("--seeds", type=int, default=16, help="seed nodes per batch")
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    if args.model:
        model = WorldModel.from_pretrained(args.model)
    else:
        spec = make_world("cascade", graph="lesmis").spec
        model = WorldModel(spec, ModelConfig.preset("small"), np.full(3, 0.33), np.full(3, 0.47))
    model.eval()
    n = model.spec.frame_shape[0]
    torch.manual_seed(0)

    rows, heads, dh = (
        args.seeds * args.members,
        model.config.dit.heads,
        model.config.dit.width // model.config.dit.heads,
    )
    q, k, v = (torch.randn(rows, heads, n, dh) for _ in range(3))
    bias = torch.randn(heads, n, n)
    t3 = best_time(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias), args.repeats + 3)
    t4 = best_time(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None]), args.repeats + 3)
    print(
        f"spatial attention, {rows} frames of {n} nodes: 3-D mask {t3 * 1e3:.1f} ms, "
        f"4-D mask {t4 * 1e3:.1f} ms ({t3 / t4:.2f}×)"
    )

    ctx = torch.as_tensor(np.repeat(seed_frames(n)[: args.seeds, None], model.frames - 1, axis=1))
    frames = args.seeds * args.members * args.horizon

    def dream(method: str, **kw: object) -> Callable[[], object]:
        sampler = replace(model.sampler, method=method, steps=3)
        gen = torch.Generator().manual_seed(0)
        return lambda: rollout(
            model, ctx, None, horizon=args.horizon, n_samples=args.members, sampler=sampler, generator=gen, **kw
        )

    euler = frames / best_time(dream("euler"), args.repeats)
    marginal = frames / best_time(dream("marginal"), args.repeats)
    print(
        f"ensemble of {args.seeds}×{args.members} dreams: euler (3 steps) {euler:.0f} frames/s, "
        f"marginal {marginal:.0f} frames/s ({marginal / euler:.2f}×)"
    )
    stopped = frames / best_time(dream("marginal", stop=extinct), args.repeats)
    print(
        f"single-seed epidemics, marginal: without stop {marginal:.0f} frames/s, "
        f"with stop=extinct {stopped:.0f} frames/s ({stopped / marginal:.2f}×)"
    )


if __name__ == "__main__":
    main()
