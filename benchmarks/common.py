"""Shared measuring helpers of the benchmarks: medians of repeated runs, the matmul peak, FLOP counts."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from diffworld.model import linear


def synchronize(device: str | torch.device) -> None:
    """Wait for the work queued on `device` (a no-op on the CPU, where calls return when done)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], Any], device: str | torch.device = "cpu") -> float:
    """Wall time of one call of `fn()`, from an idle device until the work it queued is done."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def median_seconds(
    fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, device: str | torch.device = "cpu"
) -> float:
    """Median wall time of `fn()` over `repeats` calls (`seconds`), after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(seconds(fn, device) for _ in range(repeats))


def matmul_peak(dtype: torch.dtype, repeats: int = 7, device: str = "cpu") -> float:
    """The machine's practical peak in `dtype`: GFLOP/s of square n×n matmuls, the median of
    `repeats` per size, the best size (on this 2-core CPU single runs vary by ±20%). Sizes
    512–2048 on the CPU, 2048–8192 on a GPU (smaller ones do not fill it). On a CPU in fp32 the
    best of PyTorch's matmul (MKL) and oneDNN's, which `diffworld.model.linear` uses where it is
    faster (on AMD processors MKL's fp32 GEMM runs AVX2 kernels on AVX-512 hardware)."""
    cpu = torch.device(device).type == "cpu"
    sizes = (512, 1024, 2048) if cpu else (2048, 4096, 8192)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        products = [lambda: a @ b]
        if cpu and dtype == torch.float32 and linear.ONEDNN:
            products.append(lambda: linear.onednn_linear(a, b))
        for product in products:
            best = max(best, 2 * n**3 / median_seconds(product, repeats, warmup=3, device=device) / 1e9)
    return best


# The counter hands formulas the shapes of the tensor arguments.
def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _onednn_linear(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(x_shape) * weight_shape[0]


#: torch's FLOP counter knows the CUDA attention kernels but not the CPU flash kernel, nor the
#: oneDNN linear map `diffworld.model.linear` uses on x86 CPUs.
CPU_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}
if linear.ONEDNN:  # builds without oneDNN lack the op
    CPU_FLOPS[torch.ops.mkldnn._linear_pointwise] = _onednn_linear


def count_flops(fn: Callable[[], Any]) -> int:
    """Matmul and attention FLOPs of one call of `fn` (forward, and backward if `fn` runs one)."""
    counter = FlopCounterMode(display=False, custom_mapping=CPU_FLOPS)
    with counter:
        fn()
    return counter.get_total_flops()


def machine(device: str = "cpu") -> str:
    """One line naming the hardware the figures were measured on."""
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    import platform

    from diffworld.train import native_bf16

    name = platform.processor() or platform.machine()
    try:  # Linux names the model; platform.processor() often says only "x86_64"
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    bf16 = "native bf16" if native_bf16(torch.device("cpu")) else "bf16 emulated (slower than fp32)"
    isa = torch.backends.cpu.get_cpu_capability()
    return f"CPU {name}, {isa}, {bf16}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def note_emulated_bf16(device: str, precision: str) -> None:
    """Say so before a bf16 run on a CPU that emulates bf16 (minutes per cell instead of seconds)."""
    from diffworld.train import native_bf16

    if precision == "bf16" and not native_bf16(torch.device(device)):
        print("note: this CPU emulates bf16, which runs several times slower than fp32 here (~5× for a linear layer)")
