"""Training throughput and model FLOPs utilisation against the machine's matmul peak, in one run.

    python benchmarks/train_throughput.py                          # the demo's training size
    python benchmarks/train_throughput.py --preset base --batch-size 32
    python benchmarks/train_throughput.py --device cuda --batch-size 256 --set width=384 depth=12 heads=6
    python benchmarks/train_throughput.py --modes eager             # without the torch.compile rows

Measures, on this machine and in this run: the peak of a 2048² matmul in fp32 and bf16; the
FLOPs of one training step of the demo's model (pong, `small`, batch 8: matmuls and attention,
forward and backward, counted by torch's FLOP counter); and `diffworld.train.train` itself —
the library's loop with window sampling, the loss, backward, clipping, AdamW and the EMA —
in fp32 and under bf16 autocast, each eager and with the step compiled (`TrainConfig.compile`).
Every figure is a median: of repeated matmuls, and of `--rounds` runs of `train` whose steps/s
is the median of logged windows of 10 steps after a warm-up window (which holds the compiling;
the first round's is printed). The modes run in turn within each round, and the compiled/eager
speed-up is the median of the rounds' own ratios, so the machine's drift between minutes
cancels in it. MFU = achieved FLOP/s / the peak of the same precision. `--set` overrides fields of
the preset's DiT (a wider network fills a GPU that the demo's network leaves mostly idle).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from common import count_flops, machine, matmul_peak

from diffworld.data.windows import WindowSampler, flatten
from diffworld.diffusion.loss import window_loss
from diffworld.domains.games.demo import DemoConfig
from diffworld.model.world_model import ModelConfig
from diffworld.train import TrainConfig, build_model, native_bf16, train
from diffworld.worlds import collect_episodes, default_policy, make_world


def step_flops_and_tokens(model, episodes, cfg: TrainConfig) -> tuple[int, int]:
    """FLOPs of one training step (forward + backward of the loss) and the tokens the network sees in it."""
    frames, actions, ends = flatten(episodes)
    batch = WindowSampler.from_arrays(frames, actions, ends, model.frames).sample(
        cfg.batch_size, torch.Generator().manual_seed(0)
    )
    model.to(cfg.device)
    x = model.normalize(batch.frames.to(cfg.device))
    acts = None if batch.actions is None else batch.actions.to(cfg.device)
    seen: list[int] = []
    hook = model.denoiser.net.register_forward_hook(lambda mod, args, out: seen.append(out.shape[0] * out.shape[1]))

    def step() -> None:
        loss = window_loss(model.denoiser, x, acts, cfg.loss, torch.Generator(device=cfg.device).manual_seed(0))
        loss.backward()

    flops = count_flops(step)
    hook.remove()
    model.zero_grad(set_to_none=True)
    frames_seen = seen[0]  # frames through the network in one step (teacher forcing: context + targets)
    return flops, frames_seen * model.denoiser.net.pos.shape[0]


def steps_per_second(model, episodes, cfg: TrainConfig, windows: int) -> tuple[float, float]:
    """(median steps/s over `windows` logged windows of 10 steps of `train` after one warm-up
    window, the warm-up window's seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = replace(cfg, steps=10 * (windows + 1), log_every=10, checkpoint_every=10**9)
        train(model, episodes, run, tmp, progress=False)
        log = [json.loads(line) for line in (Path(tmp) / "train_log.jsonl").read_text().splitlines()]
    return statistics.median(r["steps_per_s"] for r in log[1:]), log[0]["elapsed_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default=DemoConfig.preset)
    parser.add_argument("--batch-size", type=int, default=DemoConfig.train.batch_size)
    parser.add_argument("--windows", type=int, default=5, help="logged windows of 10 steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each mode, in turn")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="FIELD=INT", help="override DiT fields, e.g. width=384 depth=12"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "bf16"],
        default=None,
        help="default: fp32, and bf16 where the device has native bf16 matmuls",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=["eager", "compiled"],
        default=["eager", "compiled"],
        help="eager steps, and steps through torch.compile (TrainConfig.compile)",
    )
    args = parser.parse_args()
    overrides = {k: int(v) for k, v in (item.split("=", 1) for item in args.set)}
    world = DemoConfig.world
    episodes = collect_episodes(lambda: make_world(world), list(range(args.episodes)), default_policy(world), 1000)
    cfg = replace(DemoConfig.train, batch_size=args.batch_size, device=args.device)
    fresh = lambda: build_model(make_world(world).spec, episodes, ModelConfig.preset(args.preset, **overrides))  # noqa: E731
    flops, tokens = step_flops_and_tokens(fresh(), episodes, cfg)
    print(f"{machine(args.device)}")
    print(
        f"{world}, preset {' '.join([args.preset, *args.set])}, batch {args.batch_size}: {tokens} tokens and "
        f"{flops / 1e9:.2f} GFLOP per training step"
    )
    precisions = args.precisions or ["fp32", "bf16"]
    if args.precisions is None and not native_bf16(torch.device(args.device)):
        precisions = ["fp32"]  # emulated bf16: a 2048² bf16 matmul alone takes ~1 min on an AVX2 CPU
        print("bf16 skipped: this CPU emulates it (add --precisions fp32 bf16 to measure it anyway)")
    print(
        f"{'precision':>9} {'mode':>8} {'peak GFLOP/s':>13} {'warm-up s':>9} "
        f"{'steps/s':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'MFU':>6}"
    )
    for precision in precisions:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        peak = matmul_peak(dtype, device=args.device)
        rates: dict[str, list[float]] = {mode: [] for mode in args.modes}
        warm_up: dict[str, float] = {}
        for _ in range(args.rounds):
            for mode in args.modes:
                run = replace(cfg, precision=precision, compile=mode == "compiled")
                rate, seconds = steps_per_second(fresh(), episodes, run, args.windows)
                rates[mode].append(rate)
                warm_up.setdefault(mode, seconds)
        for mode, values in rates.items():
            rate = statistics.median(values)
            achieved = flops * rate / 1e9
            print(
                f"{precision:>9} {mode:>8} {peak:>13.1f} {warm_up[mode]:>9.1f} "
                f"{rate:>8.2f} {tokens * rate:>9.0f} {achieved:>8.1f} {achieved / peak:>6.1%}"
            )
        if {"eager", "compiled"} <= rates.keys():
            ratios = [c / e for e, c in zip(rates["eager"], rates["compiled"])]
            each = ", ".join(f"{r:.2f}" for r in ratios)
            print(f"{precision:>9} compiled / eager steps/s: {statistics.median(ratios):.2f}x (rounds: {each})")


if __name__ == "__main__":
    main()
