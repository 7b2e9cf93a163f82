"""X @ W in torch, and the GEMM the other torch ops use for float32 on a CPU.

On a CPU, torch's float32 matmul calls MKL; oneDNN's GEMM (the one torch's own inductor
uses for CPU linear layers, ``torch.ops.mkldnn._linear_pointwise``) is about twice as fast
on AMD Zen (measured single-threaded on the CI machine: 218 vs 106 GFLOP/s at (2048x64) @
(64x128), 91 vs 60 at (16x4096) @ (4096x11008)). ``mm_nt`` uses it when torch has it and
the operands are float32 on the CPU, and torch.matmul otherwise (and under a dispatch mode
such as FlopCounterMode, which counts aten.mm but can't see into a private op).
"""

from __future__ import annotations

from typing import Any

import torch

LOOP_MAX_BATCH = 64  # above this many (batch, head) products, one batched matmul is cheaper
LOOP_MIN_MACS = 1 << 19  # below this many multiply-adds per product, a oneDNN call's overhead
# outweighs its faster kernel (decode at T=1024: 0.93 vs 0.57 ms; at T=4096: 1.48 vs 1.66 ms)


def _onednn_linear() -> Any:
    """torch.ops.mkldnn._linear_pointwise, or None where this torch lacks it."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        op.default  # noqa: B018  (raises where the overload is missing)
    except (AttributeError, RuntimeError):
        return None
    return op if torch.backends.mkldnn.is_available() else None


ONEDNN_LINEAR = _onednn_linear()


def _dispatch_mode_active() -> bool:
    """Whether a TorchDispatchMode (FlopCounterMode, a tracer) is watching: it knows aten.mm,
    not a private oneDNN op, so the plain path is taken."""
    return bool(torch._C._len_torch_dispatch_stack())


def uses_onednn(*xs: torch.Tensor) -> bool:
    """Whether mm_nt takes oneDNN's GEMM for these operands (float32 on the CPU)."""
    return (
        ONEDNN_LINEAR is not None
        and all(x.device.type == "cpu" and x.dtype == torch.float32 for x in xs)
        and not _dispatch_mode_active()
    )


def _dense(x: torch.Tensor) -> torch.Tensor:
    """x itself when row- or column-major, else a row-major copy."""
    return x if x.is_contiguous() or x.t().is_contiguous() else x.contiguous()


def mm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (M, K) @ b (N, K)ᵀ -> (M, N)."""
    if uses_onednn(a, b):  # oneDNN falls back to a reference kernel on non-dense operands
        a, b = _dense(a), _dense(b)
        return ONEDNN_LINEAR(a, b, None, "none", [None], "")  # type: ignore[no-any-return]
    return a @ b.transpose(-1, -2)  # (M, N)


def bmm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (..., M, K) @ b (..., N, K)ᵀ -> (..., M, N), one oneDNN GEMM per leading index."""
    lead = a.shape[:-2]
    macs = a.shape[-2] * a.shape[-1] * b.shape[-2]
    small = macs < LOOP_MIN_MACS or lead.numel() > LOOP_MAX_BATCH
    if not uses_onednn(a, b) or a.ndim < 3 or small:
        return a @ b.transpose(-1, -2)  # (..., M, N)
    a3 = a.reshape(-1, *a.shape[-2:])  # (L, M, K)
    b3 = b.reshape(-1, *b.shape[-2:])  # (L, N, K)
    out = torch.empty(a3.shape[0], a3.shape[1], b3.shape[1], dtype=a.dtype)  # (L, M, N)
    for i in range(a3.shape[0]):
        out[i] = mm_nt(a3[i], b3[i])
    return out.view(*lead, a3.shape[1], b3.shape[1])  # (..., M, N)


def matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """X (B, D) @ W (D, F) -> (B, F)."""
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(
            f"matmul expects X (B, D) and W (D, F); got {tuple(x.shape)} and {tuple(w.shape)}"
        )
    return mm_nt(x, w.t())  # (B, F)
