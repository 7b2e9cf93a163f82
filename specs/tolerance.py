"""How close is close enough: a normwise error budget against the float64 reference.

The rule follows the FlashAttention test suite: an implementation's error against the float64
reference may be at most FACTOR times the error of a plain computation in the same precision
(the "baseline"). A floor derived from the dtype's unit roundoff and the reduction length keeps
the budget sane when the baseline happens to be exact. Errors are normwise and relative to the
reference's norm, so returning zeros (relative error 1) can never pass, and NaN or Inf fail
unless the reference has them at the same places.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from attnspec.specs.clauses import (
    ClauseFailure as ClauseFailure,  # its home; imported from here too
)
from attnspec.specs.dtypes import UNIT_ROUNDOFF

FACTOR = 3.0  # FlashAttention's tests allow 2x the baseline error; we allow a little more
OUTPUT_ULPS = 4.0  # rounding the result itself to the working dtype
FLOOR_ULPS = 16.0  # plus accumulating n terms: u_acc * (FLOOR_ULPS + 4 * sqrt(n))
# Past SEQUENTIAL_FROM terms the floor also grows linearly, u_acc * (n - SEQUENTIAL_FROM) / 4,
# a quarter of the worst case of recursive summation ((n - 1) u, Higham 2002, sec. 4.2): a flash
# kernel sums a same-sign weighted mean key block after key block, and that rounding drifts
# instead of cancelling. On values near 1e4, float32: torch's CPU flash kernel 9.6e-5 over 32769
# keys, flex 3.1e-4 over 65537, where 4 sqrt(n) u allows 4.4e-5 and 6.2e-5. Below it, no change.
SEQUENTIAL_FROM = 4096
SEQUENTIAL_PER_ULP = 4
TINY = 1e-30
# Plain kernels accumulate half precision in float32 (cuBLAS, MKL, FlashAttention).
ACCUMULATOR = {
    "float64": "float64",
    "float32": "float32",
    "float16": "float32",
    "bfloat16": "float32",
}


@dataclass(frozen=True)
class Comparison:
    """One finite-budget comparison made by assert_close: its error against its budget."""

    what: str
    dtype: str
    n: int
    error: float
    tolerance: float


_RECORDING: ContextVar[list[Comparison] | None] = ContextVar("attnspec_recording", default=None)


@contextmanager
def recording() -> Iterator[list[Comparison]]:
    """A list that every assert_close inside the block appends its (error, budget) to, pass or
    fail; comparisons with no finite budget (finiteness checks) are left out. The tolerance
    audit (python -m attnspec.suite.meta.budgets) reads budgets this way, from the clauses themselves."""
    comparisons: list[Comparison] = []
    token = _RECORDING.set(comparisons)
    try:
        yield comparisons
    finally:
        _RECORDING.reset(token)


def floor(dtype: str, n: int, output_ulps: float = OUTPUT_ULPS) -> float:
    """The smallest budget for a result of reductions of length `n`, stored in `dtype`.

    `output_ulps` units of the dtype's own roundoff for storing the result (fewer where the
    baseline is sampled several times, as the decoder's is), plus the typical sqrt(n)
    growth of rounding error when n terms are accumulated in the accumulator's precision, plus
    past SEQUENTIAL_FROM terms the linear drift of a long sequential same-sign sum.
    """
    acc = UNIT_ROUNDOFF[ACCUMULATOR[dtype]]
    drift = max(n - SEQUENTIAL_FROM, 0) / SEQUENTIAL_PER_ULP
    return output_ulps * UNIT_ROUNDOFF[dtype] + acc * (
        FLOOR_ULPS + 4.0 * math.sqrt(max(n, 1)) + drift
    )


def normwise_error(
    actual: np.ndarray, expected: np.ndarray, magnitude: float | None = None
) -> float:
    """||actual - expected||_F over max(||expected||_F, magnitude).

    `magnitude` is the norm of what the result is summed from (for attention, P|V|): when the
    terms cancel, ||expected|| alone would make a rounding error look large.
    """
    diff = np.asarray(actual, np.float64) - np.asarray(expected, np.float64)
    scale = max(float(np.linalg.norm(expected)), magnitude or 0.0, TINY)
    return float(np.linalg.norm(diff) / scale)


def budget(
    dtype: str,
    n: int,
    expected: np.ndarray,
    baseline: np.ndarray | None,
    magnitude: float | None = None,
    typical: float = 0.0,
) -> float:
    """FACTOR x the baseline's own error, but never below the dtype/length floor, nor below
    FACTOR x `typical`: the error a same-precision computation typically makes, where it can be
    estimated (for attention, the rounding of the logits: attnspec.specs.attention.logit_error). One
    baseline is one sample of that error, and at large logits its few dominant roundings can
    cancel by luck."""
    tol = max(floor(dtype, n), FACTOR * typical)
    if baseline is not None:
        base_err = normwise_error(baseline, expected, magnitude)
        if np.isfinite(base_err):  # a half-precision baseline can overflow where the impl must not
            tol = max(tol, FACTOR * base_err)
    return tol


def assert_close(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    dtype: str,
    n: int,
    what: str,
    baseline: np.ndarray | None = None,
    tol: float | None = None,
    magnitude: float | None = None,
    typical: float = 0.0,
) -> None:
    """Fail with a ClauseFailure naming `what`, the budget, the worst error and where it is.

    The budget is `tol`, else budget(dtype, n, expected, baseline, magnitude, typical)."""
    __tracebackhide__ = True
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise ClauseFailure(
            f"wrong shape {actual.shape}, expected {expected.shape}\n  in {what}",
            misbehaviour="wrong shape",
            call=what,
        )
    bad = ~np.isfinite(actual) & np.isfinite(expected)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ClauseFailure(
            f"non-finite output {actual[where]} at index {where} where the reference is "
            f"{expected[where]:.6g} ({int(bad.sum())} of {bad.size} elements are NaN/Inf)"
            f"\n  in {what}",
            misbehaviour="NaN/Inf",
            call=what,
            index=list(where),
        )
    if not np.any(actual) and np.any(expected):
        raise ClauseFailure(
            f"returned all zeros where the reference is not (norm {np.linalg.norm(expected):.3g})"
            f"\n  in {what}",
            misbehaviour="zeros",
            call=what,
        )
    if tol is None:
        tol = budget(dtype, n, expected, baseline, magnitude, typical)
    err = normwise_error(actual, expected, magnitude)
    record = _RECORDING.get()
    if record is not None and math.isfinite(tol):
        record.append(Comparison(what, dtype, n, err, float(tol)))
    if not err <= tol:
        absdiff = np.abs(actual - expected)
        where = tuple(int(i) for i in np.unravel_index(int(np.argmax(absdiff)), absdiff.shape))
        raise ClauseFailure(
            f"normwise relative error {err:.3g} exceeds tolerance {tol:.3g} ({dtype}); "
            f"worst element at index {where}: got {actual[where]:.6g}, "
            f"expected {expected[where]:.6g}\n  in {what}",
            error=err,
            tolerance=tol,
            index=list(where),
            call=what,
        )
