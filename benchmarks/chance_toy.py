"""Can a network and sampler draw a chance event? A toy where every frame is a pong serve.

    python benchmarks/chance_toy.py                                        # the base-like recipe, 1,500 steps
    python benchmarks/chance_toy.py --dit '{"patch": 4}' --steps 4500
    python benchmarks/chance_toy.py --loss '{"p_mean": 1.0, "p_std": 1.5}' --sigma-max 40
    python benchmarks/chance_toy.py --normalization sparse                # a ball pixel 8 model units, not 1.7

Each 32×32 frame holds one 2×2 ball at columns 15–16 in a row drawn uniformly from 8..22, afresh
every frame: nothing in the past says where, as after a miss in pong. A small DiT (width 64, depth
2, patch 8, the refiner head; `--dit` overrides) learns it with the EDM loss on windows of three
frames, then draws the third frame from two true ones with 1, 8 and 16 Euler steps
(`--samplers`). *Valid* is a frame with exactly the four pixels of one ball at the serve
columns; *empty* a frame with nothing drawn. With an exact denoiser every step count above one
would draw valid balls in uniformly random rows; one step returns the average over rows.

Frames are normalised with pong's own statistics (mean 0.078 and std 0.268, from its walls and
paddles: a ball pixel is 1.7 model units), or with those of the toy's sparse frames
(`--normalization sparse`: 8 model units). The patch grid splits the ball across the border of
columns 15 | 16 for every even patch size, as in pong.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import machine

from diffworld.diffusion.loss import LossConfig, window_loss
from diffworld.diffusion.sampling import karras_sigmas, sample
from diffworld.layouts.grid import GridLayout
from diffworld.model.denoiser import Denoiser
from diffworld.model.dit import DiT, DiTConfig

ROWS, COL = (8, 22), 15
#: (mean, std) of the frames: pong's (walls and paddles included) or the toy's own (a lone ball).
NORMALIZATION = {"pong": (0.0781, 0.2684), "sparse": (4 / 1024, (4 / 1024 * (1 - 4 / 1024)) ** 0.5)}


def serve_windows(batch: int, generator: torch.Generator, stats: tuple[float, float]) -> torch.Tensor:
    """[batch, 3, 1, 32, 32] windows in model units (σ_data 0.5), a ball in a uniform row in every frame."""
    frames = torch.zeros(batch, 3, 32, 32)
    rows = torch.randint(ROWS[0], ROWS[1] + 1, (batch, 3), generator=generator)
    r = torch.arange(32)
    on_rows = (r[None, None] == rows[..., None]) | (r[None, None] == rows[..., None] + 1)  # [B, 3, 32]
    frames[..., COL : COL + 2] = on_rows[..., None].float()
    mean, std = stats
    return ((frames - mean) / std * 0.5)[:, :, None]


def valid_and_empty(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary frames [n, 32, 32] -> (one whole ball at the serve columns, nothing drawn), bool [n] each."""
    count = frames.flatten(1).sum(1)
    at_serve = frames[:, :, COL : COL + 2]
    top = at_serve[:, :, 0].float().argmax(1)  # first row of the left column that is on
    n = torch.arange(len(frames))
    whole = (
        at_serve[n, top, 0]
        & at_serve[n, top, 1]
        & at_serve[n, (top + 1).clamp_max(31), 0]
        & at_serve[n, (top + 1).clamp_max(31), 1]
    )
    return (count == 4) & whole, count == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="training steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dit", default="{}", help="JSON overrides of the toy's DiT")
    parser.add_argument(
        "--loss", default="{}", help="JSON overrides of the loss (default: wide levels, no motion weight)"
    )
    parser.add_argument("--samplers", type=int, nargs="+", default=[1, 8, 16], help="Euler steps to draw with")
    parser.add_argument("--sigma-max", type=float, default=5.0)
    parser.add_argument("--normalization", choices=list(NORMALIZATION), default="pong")
    parser.add_argument("--draws", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine())
    dit = {"width": 64, "depth": 2, "heads": 2, "patch": 8, "frames": 3, "refine": 4, **json.loads(args.dit)}
    loss = LossConfig(**{"motion_weight": 0.0, "p_mean": 0.3, "p_std": 1.2, **json.loads(args.loss)})
    stats = NORMALIZATION[args.normalization]
    torch.manual_seed(args.seed)
    denoiser = Denoiser(DiT(DiTConfig(**dit), GridLayout((1, 32, 32), dit["patch"])), 0.5)
    opt = torch.optim.AdamW(denoiser.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        value = window_loss(denoiser, serve_windows(args.batch_size, gen, stats), None, loss, gen)
        opt.zero_grad()
        value.backward()
        opt.step()
    print(
        f"trained {args.steps} steps in {time.perf_counter() - t0:.0f}s: dit {json.dumps(dit)}, "
        f"{args.normalization} normalisation"
    )
    denoiser.eval()
    n = args.draws
    context = serve_windows(n, gen, stats)[:, :2]
    levels = torch.full((n, 3), 0.02)

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        levels[:, -1] = sigma
        with torch.no_grad():
            return denoiser(torch.cat([context, x], dim=1), levels, None, torch.arange(3))[:, -1:]

    print("| Euler steps | σ_max | valid | empty | rows of the valid draws, 8..22 |\n|---|---|---|---|---|")
    for steps in args.samplers:
        drawn = sample(denoise, (n, 1, 1, 32, 32), karras_sigmas(steps, 0.002, args.sigma_max), gen)[:, 0, 0]
        on = drawn / 0.5 * stats[1] + stats[0] > 0.5  # world units, rounded
        valid, empty = valid_and_empty(on)
        rows = on[valid][:, :, COL].float().argmax(1) - ROWS[0]
        hist = torch.bincount(rows, minlength=ROWS[1] - ROWS[0] + 1).tolist()
        print(
            f"| {steps} | {args.sigma_max:g} | {valid.float().mean():.3f} | {empty.float().mean():.3f} | {hist} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
