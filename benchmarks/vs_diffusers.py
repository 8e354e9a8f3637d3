"""diffworld's DiT against diffusers' `DiTTransformer2DModel` at an identical configuration, in one run.

    pip install -e ".[bench]"              # diffusers, only for this benchmark
    python benchmarks/vs_diffusers.py
    python benchmarks/vs_diffusers.py --configs demo --batch 32

Both networks get the same width, depth, heads, MLP ratio, patch size, channels and image size
(so the same tokens per image) and the same batch; both are raw networks (no preconditioning),
in fp32 (or both under bf16 autocast), with PyTorch's scaled-dot-product attention. Timed: the forward (no grad) and the
forward + backward of a sum of the outputs, ours and theirs in turn in each of `--repeats` after a
warm-up (which goes first alternates); the times are medians, and each ratio is the median of the
repeats' own ratios.

Two comparisons per configuration:
- `image`: each of diffworld's inputs is one frame (a window of 1), so both run spatial
  attention over the same images — the like-for-like comparison.
- `window`: diffworld runs windows of `--frames` frames with causal temporal attention in every
  block (what a world model trains on); diffusers runs the same frames as independent images,
  i.e. the same tokens without the temporal half of the work.

The configurations differ in what they are built for: diffworld's blocks add temporal
attention and RMS-normalised queries and keys; diffusers' take a class label. The FLOPs each
does are printed beside the times (torch's FLOP counter, matmuls and attention).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from common import count_flops, machine, note_emulated_bf16, seconds

from diffworld.layouts import make_layout
from diffworld.model.dit import DiT, DiTConfig
from diffworld.spec import ActionSpace, WorldSpec

#: name -> (width, depth, heads, patch, channels, image size). `demo` is the pong demo's network;
#: `DiT-S/2` is the DiT paper's smallest model at its 32×32×4 latent size.
CONFIGS = {
    "demo": (128, 4, 4, 8, 1, 32),
    "DiT-S/2": (384, 12, 6, 2, 4, 32),
}
CLASSES = 3


def ours(width: int, depth: int, heads: int, patch: int, channels: int, size: int, frames: int) -> DiT:
    spec = WorldSpec(
        name="bench", layout="grid", frame_shape=(channels, size, size), action=ActionSpace("discrete", CLASSES)
    )
    cfg = DiTConfig(width=width, depth=depth, heads=heads, patch=patch, frames=frames)
    return DiT(cfg, make_layout(spec, patch), "discrete", CLASSES)


def theirs(width: int, depth: int, heads: int, patch: int, channels: int, size: int):
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=width // heads,
        in_channels=channels,
        out_channels=channels,
        num_layers=depth,
        sample_size=size,
        patch_size=patch,
        num_embeds_ada_norm=CLASSES,
    )


def passes(fn, device: str, precision: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """(forward without grad, forward + backward of the outputs' sum) of `fn()` -> output tensor."""
    autocast = lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")  # noqa: E731

    def forward() -> None:
        with torch.no_grad(), autocast():
            fn()

    def forward_backward() -> None:
        with autocast():
            out = fn()
        out.float().sum().backward()

    return forward, forward_backward


def paired(
    ours_fn: Callable[[], None], theirs_fn: Callable[[], None], repeats: int, device: str
) -> tuple[float, float, float]:
    """(our median seconds, theirs, the median of the repeats' own ratios): the two are timed in
    turn within each repeat, so a drift of the machine between repeats stays out of the ratio, and
    which goes first alternates, so neither always inherits the other's state (on a CPU, the heap
    the other left: glibc returns freed memory to the system, and reusing it costs page faults)."""
    for fn in (ours_fn, theirs_fn):  # warm-up
        fn()
    times = []
    for i in range(repeats):
        order = (ours_fn, theirs_fn) if i % 2 == 0 else (theirs_fn, ours_fn)
        took = {fn: seconds(fn, device) for fn in order}  # timed in `order`
        times.append((took[ours_fn], took[theirs_fn]))
    mine, theirs_ = zip(*times)
    return statistics.median(mine), statistics.median(theirs_), statistics.median(a / b for a, b in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch", type=int, default=16, help="images (image mode) or windows (window mode)")
    parser.add_argument("--frames", type=int, default=6, help="frames per window in window mode")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: both under autocast")
    parser.add_argument("--modes", nargs="+", default=["image", "window"], choices=["image", "window"])
    args = parser.parse_args()
    dev = torch.device(args.device)
    print(f"{machine(args.device)}, {args.precision}")
    note_emulated_bf16(args.device, args.precision)
    print(
        f"{'config':>8} {'mode':>6} {'tokens':>7} {'ours fwd ms':>11} {'theirs fwd ms':>13} {'ratio':>6} "
        f"{'ours f+b ms':>11} {'theirs f+b ms':>13} {'ratio':>6} {'GFLOP ours/theirs':>17}"
    )
    for name in args.configs:
        width, depth, heads, patch, channels, size = CONFIGS[name]
        torch.manual_seed(0)
        net_theirs = theirs(width, depth, heads, patch, channels, size).to(dev)
        for mode, frames in (("image", 1), ("window", args.frames)):
            if mode not in args.modes:
                continue
            net_ours = ours(width, depth, heads, patch, channels, size, frames).to(dev)
            b = args.batch
            x = torch.randn(b, frames, channels, size, size, device=dev)
            c_noise = torch.rand(b, frames, device=dev)
            acts = torch.randint(0, CLASSES, (b, frames), device=dev)
            times = torch.arange(frames, device=dev)
            images = x.flatten(0, 1)
            steps = (c_noise.flatten() * 1000).long()
            labels = acts.flatten()
            ours_fwd, ours_fb = passes(lambda: net_ours(x, c_noise, acts, times), args.device, args.precision)
            theirs_fwd, theirs_fb = passes(
                lambda: net_theirs(images, timestep=steps, class_labels=labels, return_dict=False)[0],
                args.device,
                args.precision,
            )
            fwd = paired(ours_fwd, theirs_fwd, args.repeats, args.device)
            fb = paired(ours_fb, theirs_fb, args.repeats, args.device)
            flops = f"{count_flops(ours_fwd) / 1e9:.2f}/{count_flops(theirs_fwd) / 1e9:.2f}"
            tokens = b * frames * (size // patch) ** 2
            print(
                f"{name:>8} {mode:>6} {tokens:>7} {fwd[0] * 1e3:>11.1f} {fwd[1] * 1e3:>13.1f} {fwd[2]:>6.2f} "
                f"{fb[0] * 1e3:>11.1f} {fb[1] * 1e3:>13.1f} {fb[2]:>6.2f} {flops:>17}"
            )


if __name__ == "__main__":
    main()
