"""Timing for the benchmarks: synchronise, flush the cache, copy bandwidth, and `Bench`.

`Bench` (the object behind the `bench` fixture) times a call through pytest-benchmark's
`pedantic` mode with fresh inputs every round, and records its roofline `Record`.

On CUDA every timed region ends with ``torch.cuda.synchronize`` (a synchronising timer: the
wall time of launch plus execution), and the setup before each round reads a buffer twice
the size of the L2 cache so a memory-bound op can't be served from it. On CPU the buffer is
twice the calibration's cache bound (attnspec.reports.cache_probe), the thread count is fixed
for the whole session, and every benchmark runs warm-up calls first. Copy bandwidth follows STREAM's convention (McCalpin,
1995): bytes read plus bytes written, median of a few copies; ``attnspec.reports.calibrate`` uses
the same timer and copy for the measured roof.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attnspec.reports.roofline import BASELINE_ELEMENT_BYTES, Record, as_traffic

MiB = 1 << 20
SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")
MIN_FLUSH_BYTES = 64 * MiB
# Seconds each benchmark's rounds aim for, each round's cache flush included (on the 2-core CI
# VM a flush takes ~10 ms, 100-1000x a decode step's time), and the bounds on the round count.
ROUND_BUDGET_S = {"small": 0.1, "default": 0.15, "large": 2.0}
MIN_ROUNDS, MAX_ROUNDS = 3, 30
FLOOR_REPEATS = 15  # timings of the minimal call that give the per-call floor
PROBE_REPEATS = 5  # timings of a single-op probe after its warm-up call (best of)
PROBE_SPAN_S = 0.1  # ...and more, up to MAX_PROBE_REPEATS, until this long has passed: another
# library's threads still spinning after its call (OpenBLAS waits ~0.1 s) can slow a few calls
MAX_PROBE_REPEATS = 200


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


def cpu_cache_bytes(root: Path = SYSFS_CACHE) -> int:
    """The CPU's last-level cache in bytes: the highest cache level sysfs lists (the largest
    entry at that level), 32 MiB when sysfs can't be read."""
    found: list[tuple[int, int]] = []
    for index in root.glob("index*"):
        try:
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            found.append((level, int(digits) * scale))
    return max(found)[1] if found else 32 * MiB


def cache_bytes(device: str) -> int:
    """The size of the last cache level before main memory on `device`."""
    if is_cuda(device):
        import torch

        props = torch.cuda.get_device_properties(device)
        return int(getattr(props, "L2_cache_size", 0)) or 64 * MiB
    return cpu_cache_bytes()


def streaming_bytes(device: str, nbytes: int = 0, cache: int | None = None) -> int:
    """`nbytes`, raised to twice the cache (`cache`: the probed bound on the size held,
    attnspec.reports.cache_probe; the size the OS or driver reports when not given) and to
    MIN_FLUSH_BYTES: a buffer that size streams from main memory."""
    bound = cache_bytes(device) if cache is None else cache
    return max(int(nbytes), 2 * bound, MIN_FLUSH_BYTES)


def flusher(device: str, cache: int | None = None) -> Callable[[], object]:
    """A function that evicts the device's cache (`cache`: the probed bound on the size held;
    the reported size when not given) by reading a buffer twice its size, filled with distinct values (a hypervisor
    can share constant pages). Reads, not writes: the flush leaves no dirty lines for the timed
    call to write back, and it is faster (on the 2-core CI VM, 256 MiB: 11 ms summed with
    torch's threads, 16 ms filled, 2x that with numpy's one thread). numpy without torch."""
    n = streaming_bytes(device, cache=cache) // 4
    try:
        import torch
    except ImportError:
        host = np.arange(n, dtype=np.float32)  # (n,)
        return lambda: host.sum()
    buf = torch.arange(n, dtype=torch.float32, device=device)  # (n,)
    return lambda: buf.sum()


def fix_threads(threads: int | None) -> int | None:
    """Pin torch's CPU thread count for the session; return the count in use (None: no torch)."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    try:
        import torch
    except ImportError:
        return None
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def _timings(
    device: str,
    fn: Callable[[], object],
    repeats: int,
    inner: int,
    before: Callable[[], object] | None = None,
) -> list[float]:
    """Seconds per call of `fn`: one warm-up call, then `repeats` timings of `inner`
    back-to-back calls, each between synchronising timers (and after `before()`, untimed:
    a cache flush)."""
    fn()
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = now(device)
        for _ in range(inner):
            fn()
        times.append((now(device) - t0) / inner)
    return times


def median_seconds(device: str, fn: Callable[[], object], repeats: int, inner: int = 1) -> float:
    """Median seconds per call of `fn` (a typical run)."""
    return statistics.median(_timings(device, fn, repeats, inner))


def best_seconds(device: str, fn: Callable[[], object], repeats: int, inner: int = 1) -> float:
    """Least seconds per call of `fn` (a ceiling: noise only ever slows a run down)."""
    return min(_timings(device, fn, repeats, inner))


def confirmed_seconds(
    device: str,
    fn: Callable[[], object],
    repeats: int,
    inner: int = 1,
    before: Callable[[], object] | None = None,
) -> float:
    """The second-least seconds per call of `fn` over `repeats` >= 2 timings (each after
    `before()`, untimed): the fastest rate reached twice, a ceiling that one glitched timing
    can't set."""
    return second_best(_timings(device, fn, max(repeats, 2), inner, before), min)


def second_best(values: list[float], best: Callable[[list[float]], float]) -> float:
    """The value that would be best if the best one were dropped: the 2nd least (best=min)
    or the 2nd greatest (best=max); the only value when there is one."""
    if len(values) < 2:
        return values[0]
    rest = list(values)
    rest.remove(best(rest))
    return best(rest)


def copy_bandwidth(
    device: str, nbytes: int, repeats: int = 5, inner: int = 1, *, best: bool = False
) -> float:
    """Bytes/s of copying one `nbytes` buffer into another, counting read + write (STREAM copy).

    Measures exactly `nbytes` (rounded down to float32 elements): the median of `repeats`
    timings, or the best with `best=True`. Uses torch (its CPU copy is multi-threaded like the
    ops it is compared with) when it is installed, else numpy.
    """
    n = int(nbytes) // 4
    if n < 1:
        raise ValueError(f"nbytes must be >= 4, got {nbytes!r}")
    try:
        import torch

        src = torch.rand(n, dtype=torch.float32, device=device)  # (n,)
        dst = torch.empty_like(src)  # (n,)

        def copy() -> None:
            dst.copy_(src)
    except ImportError:
        src_np = np.random.default_rng(0).random(n, dtype=np.float32)  # (n,)
        dst_np = np.empty_like(src_np)  # (n,)

        def copy() -> None:
            np.copyto(dst_np, src_np)

    timer = best_seconds if best else median_seconds
    return 2 * 4 * n / timer(device, copy, repeats, inner)


class Timed:
    """One benchmarked call: its last output and inputs, and the timing statistics."""

    def __init__(self, result: Any, args: tuple[Any, ...], stats: Any) -> None:
        self.result = result
        self.args = args
        self.seconds = float(stats["median"]) if stats else None
        self.spread = float(stats["iqr"]) if stats else None
        self.rounds = int(stats["rounds"]) if stats else None


class Bench:
    """The `bench` fixture: time a call through pytest-benchmark, check it, record its roofline."""

    def __init__(self, state: Any, benchmark: Any, nodeid: str, run: int = 1) -> None:
        self.state = state  # attnspec.reports.bench_state.BenchState: size, flusher(), records
        self.benchmark = benchmark
        self.nodeid = nodeid
        self.size = state.size
        self.run_index = run  # the pass of a --repeat-report session

    @property
    def timed(self) -> bool:
        return bool(self.benchmark.enabled)

    def run(
        self,
        fn: Callable[..., Any],
        make_args: Callable[[], tuple[Any, ...]],
        *,
        device: str,
        flush: bool = True,
        max_rounds: int = MAX_ROUNDS,
    ) -> Timed:
        """Time fn(*make_args()) with fresh inputs every round, the cache flushed before each
        (untimed, under --benchmark-disable, one call and no flush: nothing is measured)."""
        flusher = self.state.flusher(device) if flush and self.timed else None
        last: list[tuple[Any, ...]] = [()]

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            last[0] = make_args()
            if flusher is not None:
                flusher()
            sync(device)
            return last[0], {}

        def target(*args: Any) -> Any:
            out = fn(*args)
            sync(device)
            return out

        rounds, warmup = 1, 0
        if self.timed:
            start = now(device)
            args, _ = setup()
            setup_end = now(device)
            target(*args)
            estimate = max(now(device) - setup_end, 1e-9)
            budget = ROUND_BUDGET_S[self.size]
            per_round = now(device) - start  # inputs, flush and call
            rounds = max(MIN_ROUNDS, min(max_rounds, math.ceil(budget / per_round)))
            warmup = 1 if estimate < 0.1 else 0
        result = self.benchmark.pedantic(target, setup=setup, rounds=rounds, warmup_rounds=warmup)
        return Timed(result, last[0], self.benchmark.stats)

    def floor(
        self, fn: Callable[..., Any], make_args: Callable[[], tuple[Any, ...]], *, device: str
    ) -> float | None:
        """The per-call floor: least seconds of `fn` on the minimal input `make_args()` gives
        (the same call with (almost) nothing to do); None when benchmarks run untimed."""
        if not self.timed:
            return None
        args = make_args()
        return best_seconds(device, lambda: fn(*args), FLOOR_REPEATS)

    def probe(self, what: str, fn: Callable[[], object], *, device: str) -> float | None:
        """Best seconds of one plain library op (`what` names it), timed once per session over
        at least PROBE_REPEATS calls and PROBE_SPAN_S; None when benchmarks run untimed."""
        if not self.timed:
            return None
        probes: dict[str, float] = self.state.probes
        if what not in probes:
            fn()  # warm-up
            times: list[float] = []
            start = time.perf_counter()
            while len(times) < PROBE_REPEATS or (
                time.perf_counter() - start < PROBE_SPAN_S and len(times) < MAX_PROBE_REPEATS
            ):
                t0 = now(device)
                fn()
                times.append(now(device) - t0)
            probes[what] = min(times)
        return probes[what]

    def record(
        self,
        timed: Timed,
        *,
        impl: str,
        device: str,
        dtype: str,
        group: str,
        variant: str,
        case: str,
        shape: dict[str, Any],
        cost: Callable[[float], Any],
        seconds: float | None = None,
        spread: float | None = None,
        clause: str = "",
        check: str = "ok",
        extras: dict[str, Any] | None = None,
        floor: float | None = None,
    ) -> Record:
        """Store a roofline record for this benchmark (also in pytest-benchmark's extra_info).

        `cost(E)` gives the op's attnspec.specs.cost Traffic (or a flat Cost) at E bytes per element.
        """
        from attnspec.specs.dtypes import BYTES_PER_ELEMENT

        run_cost = as_traffic(cost(BYTES_PER_ELEMENT[dtype]))
        base_cost = as_traffic(cost(BASELINE_ELEMENT_BYTES))
        rec = Record(
            group=group,
            variant=variant,
            case=case,
            impl=impl,
            device=device,
            dtype=dtype,
            shape=shape,
            flops=float(run_cost.flops),
            bytes=float(run_cost.compulsory),
            rereads=float(run_cost.rereads),
            working_set=float(run_cost.working_set),
            baseline_flops=float(base_cost.flops),
            baseline_bytes=float(base_cost.compulsory),
            baseline_rereads=float(base_cost.rereads),
            baseline_working_set=float(base_cost.working_set),
            floor_seconds=floor,
            run=self.run_index,
            clause=clause,
            seconds=timed.seconds if seconds is None else seconds,
            spread=timed.spread if seconds is None else spread,
            rounds=timed.rounds,
            check=check,
            extras=dict(extras or {}),
            nodeid=self.nodeid,
        )
        self.state.records.append(rec)
        if self.timed:
            self.state.sample_ceiling(device, dtype)
        info = self.benchmark.extra_info
        info.setdefault("attnspec", []).append(rec.to_dict())
        info.update(flops=rec.flops, bytes=rec.bytes + rec.rereads)
        info.update(check=rec.check, group=group)
        return rec

    def verify(self, clause: str, check: Callable[[], None]) -> str:
        """Run the check of one benchmarked output: "ok", or "FAIL <clause>: <first line>"."""
        try:
            check()
        except AssertionError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"FAIL {clause or 'reference'}: {first}"
        return "ok"

    def fail_if(self, record: Record) -> None:
        """Fail the test after recording when its output did not match the reference."""
        __tracebackhide__ = True
        if record.failed:
            pytest.fail(
                f"{record.impl} {record.group} {record.case}: {record.check}", pytrace=False
            )
