"""The DiT's token-wide linear maps, through oneDNN on x86 CPUs.

PyTorch runs an fp32 `F.linear` on the CPU through MKL's GEMM, which on AMD processors takes
its AVX2 code path even where the CPU has AVX-512; oneDNN (bundled with PyTorch, the library
its bf16 CPU matmuls already use) picks its kernels by instruction set. On a 2-core AMD EPYC
with AVX-512, DiT-S/2's products (4,096 rows; 384 -> 384 / 1152 / 1536, 1536 -> 384) ran at
168-206 GFLOP/s through oneDNN against 113-179 through MKL, and their gradients with respect to
the input likewise (`benchmarks/vs_diffusers.py` measures the network; docs/research-log.md, "A third
kind of CPU"). oneDNN costs ~12 µs more per call, so products below `MIN_MACS`
multiply-accumulates stay with `F.linear`.

The gradient with respect to the weight stays `torch.mm` (oneDNN was faster on some shapes and
slower on others). Set `DIFFWORLD_ONEDNN=0` to send everything through `F.linear`.
"""

from __future__ import annotations

import os
import platform

import torch
import torch.nn.functional as F
from torch import nn

#: Products of fewer multiply-accumulates (rows · in · out) stay with `F.linear`: below about this
#: size oneDNN's fixed cost per call outweighs its faster kernels (in the demo-size network, 256
#: rows × 128 -> 512 ran slower through it, 1,024 rows faster).
MIN_MACS = 1 << 25

ONEDNN = (
    os.environ.get("DIFFWORLD_ONEDNN", "1") != "0"
    and platform.machine().lower() in ("x86_64", "amd64")
    and torch.backends.mkldnn.is_available()
)


def onednn_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, silu: bool = False
) -> torch.Tensor:
    """x·Wᵀ + b (then SiLU) through oneDNN, whatever the size; `linear` decides when to call it."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "swish" if silu else "none", [], "")


def _takes_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        ONEDNN
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.numel() * weight.shape[0] >= MIN_MACS
        and not torch.is_autocast_enabled("cpu")  # autocast casts F.linear's inputs; this path would not
        and not torch.compiler.is_compiling()  # the compiler picks its own kernels
    )


class _OneDNNLinear(torch.autograd.Function):
    """y = x·Wᵀ + b with oneDNN's forward and input gradient, `torch.mm`'s weight gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return onednn_linear(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_x = onednn_linear(grad, weight.t()) if need_x else None  # [..., in]
        rows = grad.reshape(-1, grad.shape[-1])  # [M, out]
        grad_w = rows.t() @ x.reshape(-1, x.shape[-1]) if need_w else None  # [out, in]
        grad_b = rows.sum(0) if need_b else None  # False without a bias
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, silu: bool = False) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, then SiLU if `silu` — through oneDNN where it is faster (see the
    module's docstring); without autograd the SiLU is fused into the product."""
    if not _takes_onednn(x, weight):
        y = F.linear(x, weight, bias)
        return F.silu(y, inplace=not torch.is_grad_enabled()) if silu else y
    if not torch.is_grad_enabled() or not (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    ):
        return onednn_linear(x, weight, bias, silu)
    y = _OneDNNLinear.apply(x, weight, bias)
    return F.silu(y) if silu else y


class Linear(nn.Linear):
    """`nn.Linear` (the same parameters and checkpoint keys) computed by `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
