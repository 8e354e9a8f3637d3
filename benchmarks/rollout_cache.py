"""KV-cached rollout against full recompute of the context, measured in one run on this machine.

    python benchmarks/rollout_cache.py                     # contexts 4, 16, 64; demo and large configs
    python benchmarks/rollout_cache.py --contexts 7 --configs demo --members 1
    python benchmarks/rollout_cache.py --device cuda --precision bf16
    python benchmarks/rollout_cache.py --compile           # both paths through torch.compile

For each network configuration and context length L, a pong model dreams from an L-frame
context, and its window holds the context and every dreamed frame, so the cached and the
recomputed path compute the same function (past the window they differ: `docs/research-log.md`, "The
backbone"). Each path is timed dreaming 1 frame and `--frames` frames (1 and 16 members), the
context encoded inside the timed run. Printed, per path:

- whole dream: frames/s of the `--frames`-frame dream, the context's encoding included (the
  cache pays it once, so with few frames and one member it dominates);
- per frame: frames/s of the frames after the first, (T_frames − T_1) / (frames − 1), each
  with L + 1 to L + frames − 1 frames in view in both paths: what every further frame of a
  long dream or a play session costs once the context is encoded;

the speed-ups, and the share of dreamed pixels on which the two paths differ (pong's pixels are
projected to {0, 1}, so a float-level difference shows only where it flips a pixel). Every rate
is the median of `--repeats` runs and every speed-up the median of the runs' own ratios: each
run times both paths in turn, so the machine's drift between minutes cancels in its ratio.

The models have random weights (every parameter N(0, 0.05²), so attention and its cache matter;
speed does not depend on the weights, and a window of 64 frames needs a model trained for it)
and one Euler step at the shipped `pong` model's context noise. `--model` measures a trained checkpoint
instead, from a context of (its window − frames) frames so the dream stays inside its window.
`--compile` runs both paths' denoising passes through `torch.compile` (`rollout(compile=True)`);
compiling happens in the untimed warm-up, which dreams the whole `--frames` so every shape the
timed runs meet is compiled.
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import replace

import torch
from common import machine, note_emulated_bf16, seconds

from diffworld import SamplerConfig, WorldModel
from diffworld.model.dit import PRESETS
from diffworld.model.world_model import ModelConfig
from diffworld.rollout import rollout
from diffworld.splits import BENCHMARK_EPISODE_SEED
from diffworld.worlds import default_policy, make_world
from diffworld.worlds.base import run_episode

#: The demo's network and a larger one (4× the tokens per frame, twice the width and depth).
CONFIGS = {
    "demo": PRESETS["small"],
    "large": replace(PRESETS["small"], width=256, depth=8, heads=8, patch=4),
}


def one_step(reference: WorldModel) -> SamplerConfig:
    """One Euler step at the reference's context noise: the random models have no chance code."""
    return SamplerConfig(steps=1, sigma_ctx=reference.sampler.sigma_ctx)


def random_model(reference: WorldModel, config_name: str, window: int) -> WorldModel:
    """A pong model of configuration `config_name` and `window` frames, every parameter N(0, 0.05²)."""
    dit = replace(CONFIGS[config_name], frames=window)
    torch.manual_seed(0)
    model = WorldModel(
        reference.spec, ModelConfig(dit=dit), reference.mean.cpu(), reference.std.cpu(), one_step(reference)
    ).eval()
    with torch.no_grad():
        for p in model.parameters():  # adaLN-Zero starts every residual branch closed: open them
            p.normal_(0.0, 0.05)
    return model


def finite_median(values: list[float]) -> float:
    """Median of the finite values (NaN when there are none)."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def measure(
    model: WorldModel,
    context: torch.Tensor,
    frames: int,
    members: int,
    repeats: int,
    precision: str = "fp32",
    compile: bool = False,
) -> dict[str, float]:
    """Frames/s of the whole dream and per frame after the first, cached and recomputed (medians
    of `repeats`), their ratios (medians of each repeat's ratio), and the share of dreamed pixels
    where the two paths differ. Within a repeat the two paths run in turn, so a drift in the
    machine's speed (minutes long on a shared CPU) moves both sides of a ratio alike."""
    actions = torch.randint(0, model.spec.action.n, (1, frames), generator=torch.Generator().manual_seed(0))
    dreams = {}

    def run(use_cache: bool, horizon: int) -> None:
        gen = torch.Generator(device=model.device).manual_seed(1)
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            dreams[use_cache] = rollout(
                model,
                context,
                actions[:, :horizon],
                n_samples=members,
                use_cache=use_cache,
                generator=gen,
                compile=compile,
            )

    for use_cache in (True, False):  # warm-up (and compiling): every shape the timed runs meet
        run(use_cache, frames)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    runs: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, use_cache in (("cached", True), ("full", False)):
            first = seconds(lambda: run(use_cache, 1), model.device)
            whole = seconds(lambda: run(use_cache, frames), model.device)
            runs.setdefault(f"{name}_whole", []).append(frames * members / whole)
            # A repeat whose N-frame dream did not take longer than its 1-frame one (the machine
            # stalled in between) has no per-frame figure: NaN, left out of the median.
            runs.setdefault(f"{name}_each", []).append(
                (frames - 1) * members / (whole - first) if whole > first else math.nan
            )
        for kind in ("whole", "each"):
            runs.setdefault(f"ratio_{kind}", []).append(runs[f"cached_{kind}"][-1] / runs[f"full_{kind}"][-1])
    if torch._dynamo.utils.counters["stats"]["unique_graphs"] != graphs:
        raise SystemExit(
            "torch.compile compiled during the timed runs: the warm-up missed a shape, "
            "so the figures would include compiling"
        )
    out = {key: finite_median(values) for key, values in runs.items()}
    out["differ"] = float((dreams[True] != dreams[False]).float().mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--members", type=int, nargs="+", default=[1, 16])
    parser.add_argument(
        "--model", default=None, help="a trained checkpoint (or shipped name): measure it at its own window"
    )
    parser.add_argument("--frames", type=int, default=4, help="frames to dream per timed run (at least 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: the rollout under autocast"
    )
    parser.add_argument("--compile", action="store_true", help="both paths' denoising passes through torch.compile")
    args = parser.parse_args()
    if args.compile:  # every model, context and batch is a new entry of the same compiled code: keep them
        torch._dynamo.config.recompile_limit = torch._dynamo.config.accumulated_recompile_limit = 4096
        torch._dynamo.config.fail_on_recompile_limit_hit = True  # never time an eager fallback as compiled
    if args.frames < 2:
        parser.error(
            "--frames must be at least 2 (the per-frame figure is a difference of 1- and N-frame dreams), "
            f"got {args.frames}"
        )
    reference = WorldModel.from_pretrained(args.model or "pong", device=args.device)
    episode = run_episode(
        make_world("pong"), seed=BENCHMARK_EPISODE_SEED, policy=default_policy("pong"), max_steps=max(args.contexts) + 1
    )
    if args.model:
        if args.frames >= reference.frames:
            raise SystemExit(
                f"--frames must be below the model's window of {reference.frames} frames, got {args.frames}"
            )
        rows = [(args.model, reference.frames - args.frames, reference)]
    else:
        rows = [(name, length, None) for name in args.configs for length in args.contexts]
    sampler = reference.sampler if args.model else one_step(reference)
    print(f"{machine(args.device)}, {args.precision}{', torch.compile' if args.compile else ''}")
    note_emulated_bf16(args.device, args.precision)
    print(
        f"sampler: {sampler.method}, {sampler.steps} step(s); "
        f"dreams of 1 and {args.frames} frames, median of {args.repeats}"
    )
    print(f"{'':>32} {'whole dream, frames/s':^31} {'per frame after the first':^31}")
    print(
        f"{'config':>10} {'params':>7} {'context':>7} {'members':>7} "
        f"{'cached':>9} {'recompute':>10} {'ratio':>9} {'cached':>9} {'recompute':>10} {'ratio':>9} {'differ':>7}"
    )
    for name, length, model in rows:
        model = model or random_model(reference, name, length + args.frames).to(args.device)
        context = torch.as_tensor(episode.frames[None, :length]).float()
        for members in args.members:
            r = measure(model, context, args.frames, members, args.repeats, args.precision, args.compile)
            print(
                f"{name:>10} {model.num_parameters() / 1e6:>6.2f}M {length:>7} {members:>7} "
                f"{r['cached_whole']:>9.1f} {r['full_whole']:>10.1f} {r['ratio_whole']:>8.1f}x "
                f"{r['cached_each']:>9.1f} {r['full_each']:>10.1f} {r['ratio_each']:>8.1f}x {r['differ']:>7.1%}"
            )


if __name__ == "__main__":
    main()
