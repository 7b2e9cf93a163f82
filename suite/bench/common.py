"""What every benchmark shares: skips for missing ops, fresh native inputs, reference checks.

Each benchmark gets fresh inputs every round (a result cached by the implementation can't
fake speed), then compares the output of its last timed call with the float64 reference of
specs/reference under the same tolerance rule as the matching clause.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from attnspec.reports import timing
from attnspec.reports.timing import Bench, Timed
from attnspec.specs.dtypes import WORK, matmul, round_to
from attnspec.specs.reference import attention as attn_ref
from attnspec.specs.runner import missing
from attnspec.specs.tolerance import assert_close, budget


def need(impl: Any, dtype: str, *ops: str) -> None:
    """Skip unless `impl` provides every op in `ops` and supports `dtype`, exactly as a clause
    needing those ops is skipped (attnspec.specs.runner.missing gives the reason)."""
    reason = missing(tuple(ops), impl, dtype)
    if reason:
        pytest.skip(reason)


@functools.lru_cache(maxsize=1)
def _drawn(shape: tuple[int, ...]) -> np.ndarray:
    """Seeded standard-normal float32 values of `shape`, read-only (Inputs.shared)."""
    values = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
    values.flags.writeable = False
    return values


class Inputs:
    """Seeded standard-normal inputs in an implementation's native arrays and dtype."""

    def __init__(self, impl: Any, dtype: str, seed: int = 0) -> None:
        self.impl, self.dtype = impl, dtype
        self.rng = np.random.default_rng(seed)

    def normal(self, *shape: int) -> Any:
        """A fresh native array of standard-normal values."""
        return self.impl.asarray(self.rng.standard_normal(shape, dtype=np.float32), self.dtype)

    def shared(self, *shape: int) -> Any:
        """A native copy of standard-normal values drawn once per shape in the session: a large
        operand every case of a benchmark reads the same (the textbook W, 180 MB, takes ~0.5 s
        to draw on the 2-core CI VM, as long as a case's timed rounds)."""
        return self.impl.asarray(_drawn(shape), self.dtype)

    def minimal(self, n: int) -> Callable[[], tuple[Any, ...]]:
        """A maker of n one-element (1, 1, 1, 1) arrays: the input of a per-call floor."""
        return lambda: tuple(self.normal(1, 1, 1, 1) for _ in range(n))

    def numpy(self, x: Any) -> np.ndarray:
        """The exact values of a native array, as float64."""
        return np.asarray(self.impl.to_numpy(x), dtype=np.float64)


def output(impl: Any, y: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A native result as float64, failing clearly on a wrong shape."""
    out = np.asarray(impl.to_numpy(y), dtype=np.float64)
    if out.shape != tuple(shape):
        raise AssertionError(f"returned shape {out.shape}, expected {tuple(shape)} in {what}")
    return out


def attention_reference(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, *, causal: bool, precision: str = "float64"
) -> np.ndarray:
    """attnspec.specs.reference.attention, one (batch row, query head) at a time to bound memory."""
    B, Hq, Tq, _ = q.shape
    G = Hq // k.shape[1]
    out = np.empty((B, Hq, Tq, v.shape[-1]))  # (B, Hq, Tq, Dv)
    for b in range(B):
        for h in range(Hq):
            kv = slice(h // G, h // G + 1)
            out[b : b + 1, h : h + 1] = attn_ref.attention(
                q[b : b + 1, h : h + 1],
                k[b : b + 1, kv],
                v[b : b + 1, kv],
                causal=causal,
                precision=precision,
            )  # (1, 1, Tq, Dv)
    return out


def check_attention(
    inputs: Inputs, y: Any, q: Any, k: Any, v: Any, *, causal: bool, what: str
) -> None:
    """The attention output equals the float64 reference within ATTN-REF's budget."""
    qn, kn, vn = inputs.numpy(q), inputs.numpy(k), inputs.numpy(v)
    out = output(inputs.impl, y, (*qn.shape[:3], vn.shape[-1]), what)
    expected = attention_reference(qn, kn, vn, causal=causal)
    baseline = attention_reference(qn, kn, vn, causal=causal, precision=inputs.dtype)
    n = max(qn.shape[-1], kn.shape[2])
    assert_close(out, expected, dtype=inputs.dtype, n=n, baseline=baseline, what=what)


COLUMN_BLOCK = 512  # columns of W the float64 reference converts at a time (16 MiB at D=4096)


def check_matmul(inputs: Inputs, y: Any, x: Any, w: Any, *, what: str) -> None:
    """X @ W equals the float64 product within the budget of a same-precision product.

    Both products run a block of W's columns at a time: a whole float64 copy of the textbook
    W (4096 x 11008) is 360 MB of fresh pages, ~0.9 s to fault in on the 2-core CI VM."""
    xn = inputs.numpy(x)  # (B, D)
    wn = np.asarray(inputs.impl.to_numpy(w))  # (D, F), the native values (bfloat16 as float32)
    B, F = xn.shape[0], wn.shape[1]
    out = output(inputs.impl, y, (B, F), what)
    work = WORK[inputs.dtype]
    xw = xn.astype(work)
    expected, baseline = np.empty((B, F)), np.empty((B, F))  # (B, F) each
    block = np.empty((wn.shape[0], min(COLUMN_BLOCK, F)))  # (D, block), reused
    for j in range(0, F, COLUMN_BLOCK):
        cols = slice(j, min(j + COLUMN_BLOCK, F))
        wb = block[:, : cols.stop - j]
        np.copyto(wb, wn[:, cols])
        expected[:, cols] = xn @ wb
        baseline[:, cols] = matmul(xw, wn[:, cols].astype(work, copy=False))
    baseline = round_to(baseline, inputs.dtype)
    tol = budget(inputs.dtype, xn.shape[1], expected, baseline)
    assert_close(out, expected, dtype=inputs.dtype, n=xn.shape[1], tol=tol, what=what)


def probe_torch(impl: Any) -> Any:
    """The torch module when `impl` is the torch implementation (the baseline held to the 60%
    target, the only one probed) and torch is installed; None otherwise."""
    if not str(impl.name).startswith("torch"):
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


def matmul_probe(
    bench: Bench,
    impl: Any,
    dtype: str,
    batch: int,
    M: int,
    K: int,
    N: int,
    what: str,
    *,
    right_transposed: bool = True,
) -> dict[str, Any] | None:
    """Time the op's main product alone as one torch matmul, (batch, M, K) @ (batch, K, N) in
    `dtype` on the implementation's device: the BLAS limit for that shape (a single-op probe).
    The right operand is a transposed view, as the ᵀ in Q@Kᵀ is (a BLAS picks its kernel by
    layout: a contiguous (128, 4) operand runs 3-6x slower than the transposed view the torch
    implementation passes), unless `right_transposed` is False (X@W). None when untimed, torch
    is missing, or the row is not the torch implementation's (the baseline held to the 60%
    target)."""
    torch = probe_torch(impl)
    if torch is None:
        return None
    from attnspec.implementations.torch_impl.dtypes import TORCH_DTYPES

    device = timing.device_of(impl)
    label = f"{what} as one torch GEMM, {batch}x({M}x{K})@({K}x{N}),"
    tdtype = TORCH_DTYPES[dtype]
    a = torch.randn(batch, M, K, device=device).to(tdtype)  # (batch, M, K)
    if right_transposed:
        b = torch.randn(batch, N, K, device=device).to(tdtype).transpose(-1, -2)  # (batch, K, N)
    else:
        b = torch.randn(batch, K, N, device=device).to(tdtype)  # (batch, K, N)
    seconds = bench.probe(label, lambda: torch.matmul(a, b), device=device)
    if seconds is None:
        return None
    E = a.element_size()
    flops = 2 * batch * M * K * N
    return {"what": label, "flops": flops, "bytes": E * batch * (M * K + K * N + M * N),
            "seconds": seconds}  # fmt: skip


def copy_probe(bench: Bench, impl: Any, nbytes: int, what: str) -> dict[str, Any] | None:
    """Time one contiguous torch copy of `nbytes` (float32, at least twice the cache bound, so
    it streams from memory) on the implementation's device: the copy limit of an
    op that moves bytes without FLOPs (a single-op probe). None when untimed, torch is
    missing, or the row is not the torch implementation's."""
    torch = probe_torch(impl)
    if torch is None or not bench.timed:  # untimed: nothing to compare, no buffers to allocate
        return None
    device = timing.device_of(impl)
    nbytes = timing.streaming_bytes(device, nbytes, bench.state.cache_bound(device))
    src = torch.randn(nbytes // 4, device=device)  # (n,)
    dst = torch.empty_like(src)  # (n,)
    label = f"{what} as one contiguous torch copy of {nbytes / 2**20:.3g} MiB"
    seconds = bench.probe(label, lambda: dst.copy_(src), device=device)
    if seconds is None:
        return None
    moved = 2 * src.element_size() * src.numel()  # read + written
    return {"what": label, "flops": 0, "bytes": moved, "seconds": seconds, "kind": "copy"}


def measure(
    bench: Bench,
    impl: Any,
    dtype: str,
    fn: Callable[..., Any],
    make_args: Callable[[], tuple[Any, ...]],
    *,
    group: str,
    variant: str,
    case: str,
    shape: dict[str, Any],
    cost: Callable[[float], Any],
    clause: str,
    check: Callable[[Timed], None],
    extras: dict[str, Any] | None = None,
    max_rounds: int | None = None,
    floor_args: Callable[[], tuple[Any, ...]] | None = None,
    floor_fn: Callable[..., Any] | None = None,
    probe: Callable[[], dict[str, Any] | None] | None = None,
) -> Timed:
    """Time fn on fresh inputs, check its last output, record the roofline row; fail if wrong.

    `floor_args` makes a minimal input for fn (or for `floor_fn`, the same call on a minimal
    object, when fn's own state can't take one): its time is the row's per-call floor.
    `probe` times the op's main product alone (``matmul_probe``): the row's BLAS limit.
    """
    device = timing.device_of(impl)
    kwargs = {} if max_rounds is None else {"max_rounds": max_rounds}
    timed = bench.run(fn, make_args, device=device, **kwargs)
    verdict = bench.verify(clause, lambda: check(timed))
    floor = None if floor_args is None else bench.floor(floor_fn or fn, floor_args, device=device)
    found = probe() if probe is not None else None
    if found is not None:
        extras = {**(extras or {}), "probe": found}
    record = bench.record(
        timed,
        impl=impl.name,
        device=device,
        dtype=dtype,
        group=group,
        variant=variant,
        case=case,
        shape=shape,
        cost=cost,
        clause=clause,
        check=verdict,
        extras=extras,
        floor=floor,
    )
    bench.fail_if(record)
    return timed
