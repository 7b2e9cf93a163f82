"""The cache a tenant holds: at most the smallest working set that re-reads at main-memory speed.

The OS reports the last-level cache of the whole socket; on a shared machine a tenant holds
only part of it (the 2-core CI VM's sysfs says 480 MiB; re-reads of 64 MiB ran at 54 GB/s, of
128 or 256 MiB, depending on the neighbours, at main memory's 30 GB/s). Sized by the reported
figure (a flush wrote twice it, a calibration stream buffer was eight times it), a benchmark
run spent most of its time on them: 335 s, 186 s of it flushing. Sized by the probed bound, a
flush still evicts: a working set that re-reads at main-memory speed is not kept.

The probe reads views of one buffer, doubling from PROBE_START up to the reported size, each
once to bring it in and then the fastest of PROBE_REPEATS re-reads (the most the cache gave:
a neighbour's burst only slows a re-read down). The first view is held by any last-level
cache; the bound is the first view that re-read HELD_MARGIN times slower than the fastest
before it, when the next view did too (the cache holds less), and the reported size when none
did. The flush and the calibration's streams are sized by the bound; the roof's cache is the
view before it, the largest seen held. Pages are touched only as the views grow (a VM faults
them in at ~0.4 GB/s). Reads are numpy's matrix-vector product, as calibrate's "gemv" stream:
BLAS threads read at the machine's rate. About a second, once per calibration
(attnspec.reports.calibrate keeps it in its file).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

MiB = 1 << 20
PROBE_START = 8 * MiB
PROBE_REPEATS = 5
HELD_MARGIN = 1.3  # a re-read this much slower than a smaller view's came from main memory
CONFIRM = 2  # slow views in a row that set the bound (the first of them)
COLUMNS = 1024  # each view is read as an (n / 1024, 1024) float32 matrix times a vector


@dataclass(frozen=True)
class CacheProbe:
    """What the probe found: the bound, the largest view held, the reported size, the rates."""

    bound: int  # bytes: the first view that re-read at main-memory speed (else `nominal`)
    held: int  # bytes: the view before `bound`, the largest seen at cache speed (else `nominal`)
    nominal: int  # bytes: the size the OS reports
    rates: dict[str, float]  # "<n> MiB": bytes/s of the fastest re-read of that view


def _best_rate(buffer: np.ndarray, nbytes: int, repeats: int) -> float:
    """Bytes/s of the fastest of `repeats` reads of the buffer's first `nbytes`, after one
    read that brings them in."""
    rows = nbytes // (4 * COLUMNS)
    w = buffer[: rows * COLUMNS].reshape(rows, COLUMNS)  # (rows, 1024)
    x = np.ones(COLUMNS, dtype=np.float32)  # (1024,)
    w @ x
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        w @ x
        best = min(best, time.perf_counter() - start)
    return 4 * rows * COLUMNS / max(best, 1e-9)


def sizes(nominal: int) -> list[int]:
    """The views probed: PROBE_START doubling while below `nominal`, then `nominal` itself."""
    out, size = [], PROBE_START
    while size < nominal:
        out.append(size)
        size *= 2
    return [*out, max(nominal, PROBE_START)]


def held_source(held: int, bound: int, nominal: int) -> str:
    """How the held size was found, for the report."""
    if held >= nominal:
        return f"size from sysfs ({nominal / MiB:.4g} MiB); probed: no view re-read slower"
    return (
        f"size probed: re-reads of {held / MiB:.4g} MiB ran at cache speed, of {bound / MiB:.4g} "
        f"MiB at main-memory speed; sysfs says {nominal / MiB:.4g} MiB"
    )


def probe_cpu(nominal: int, repeats: int = PROBE_REPEATS) -> CacheProbe:
    """Probe the bound on the CPU cache a tenant holds, against `nominal`, the size reported.

    A slow view is the bound only when the next view is slow too (or it is the last): a
    neighbour's burst that slowed all of one view's re-reads doesn't shrink every later flush."""
    views = sizes(nominal)
    buffer = np.empty(views[-1] // 4, dtype=np.float32)  # (n,): pages unfaulted until filled
    rates: dict[str, float] = {}
    filled, top = 0, 0.0
    slow: list[int] = []  # the views in a row that re-read slower than the fastest before them
    for i, size in enumerate(views):
        # Distinct values on every page: a constant fill could be deduplicated by a hypervisor.
        buffer[filled : size // 4] = np.arange(filled, size // 4, dtype=np.float32)
        filled = size // 4
        rate = _best_rate(buffer, size, repeats)
        rates[f"{size / MiB:.4g} MiB"] = rate
        if rate * HELD_MARGIN < top:
            slow.append(i)
            if len(slow) == CONFIRM or i == len(views) - 1:
                first = slow[0]
                return CacheProbe(views[first], views[first - 1], nominal, rates)
            continue
        slow, top = [], max(top, rate)
    return CacheProbe(bound=nominal, held=nominal, nominal=nominal, rates=rates)
