"""Timing helpers for the benchmarks: synchronise, flush the cache, measure copy bandwidth.

On CUDA every timed region ends with ``torch.cuda.synchronize`` (a synchronising timer: the
wall time of launch plus execution), and the setup before each round writes a buffer twice
the size of the L2 cache so a memory-bound op can't be served from it. On CPU the buffer is
twice the last-level cache, the thread count is fixed for the whole session, and every
benchmark runs warm-up calls first. Copy bandwidth follows STREAM's convention (McCalpin,
1995; as ``reports.calibrate`` does): bytes read plus bytes written, median of a few copies.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MiB = 1 << 20
MIN_FLUSH_BYTES = 64 * MiB


def device_of(impl: Any) -> str:
    """The device an implementation computes on: its `device` attribute, else "cpu"."""
    device = getattr(impl, "device", None)
    return "cpu" if device is None else str(device)


def is_cuda(device: str) -> bool:
    """Whether `device` names a CUDA device ("cuda", "cuda:0")."""
    return device.split(":", 1)[0] == "cuda"


def sync(device: str) -> None:
    """Wait until all queued work on `device` has finished (a no-op on CPU)."""
    if is_cuda(device):
        import torch

        torch.cuda.synchronize(device)


def now(device: str) -> float:
    """perf_counter after the device has drained: a synchronising timer."""
    sync(device)
    return time.perf_counter()


def cpu_llc_bytes() -> int:
    """The largest CPU cache in bytes as sysfs reports it (32 MiB when it can't be read)."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes) if sizes else 32 * MiB


def cache_bytes(device: str) -> int:
    """The size of the last cache level before main memory on `device`."""
    if is_cuda(device):
        import torch

        props = torch.cuda.get_device_properties(device)
        return int(getattr(props, "L2_cache_size", 0)) or 64 * MiB
    return cpu_llc_bytes()


def flusher(device: str) -> Callable[[], None]:
    """A function that evicts the device's last-level cache by writing 2x its size."""
    nbytes = max(2 * cache_bytes(device), MIN_FLUSH_BYTES)
    if is_cuda(device):
        import torch

        buf = torch.empty(nbytes // 4, dtype=torch.float32, device=device)  # (n,)

        def flush_cuda() -> None:
            buf.fill_(0.0)

        return flush_cuda
    host = np.empty(nbytes // 8, dtype=np.float64)  # (n,)

    def flush() -> None:
        host.fill(0.0)

    return flush


def fix_threads(threads: int | None) -> int | None:
    """Pin torch's CPU thread count for the session; return the count in use (None: no torch)."""
    try:
        import torch
    except ImportError:
        return None
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def copy_bandwidth(device: str, nbytes: int, repeats: int = 5) -> float:
    """Bytes/s of `dst.copy_(src)` over `nbytes`-byte buffers, counting read + write.

    The buffers are at least twice the last-level cache, so the copy streams from memory.
    Uses torch (its CPU copy is multi-threaded like the ops it is compared with) when it is
    installed, else numpy.
    """
    nbytes = max(int(nbytes), 2 * cache_bytes(device), MIN_FLUSH_BYTES)
    n = nbytes // 4
    try:
        import torch

        src = torch.ones(n, dtype=torch.float32, device=device)  # (n,)
        dst = torch.empty_like(src)  # (n,)

        def copy() -> None:
            dst.copy_(src)
    except ImportError:
        src_np = np.ones(n, dtype=np.float32)  # (n,)
        dst_np = np.empty_like(src_np)  # (n,)

        def copy() -> None:
            np.copyto(dst_np, src_np)

    copy()
    times = []
    for _ in range(repeats):
        t0 = now(device)
        copy()
        times.append(now(device) - t0)
    return 2 * 4 * n / statistics.median(times)
