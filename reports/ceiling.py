"""The roof as a ceiling over a whole benchmark session: samples taken beside the benchmarks.

On a shared machine the memory bandwidth one tenant gets changes from second to second (on
the 2-core CI VM a read-only stream measured 32 to 68 GB/s within one minute, the median 45).
A calibration of a few seconds can land in a busy stretch, and a row timed in a quiet one
then beats the roof. So after every timed benchmark the session samples, on the same device,
the two read-only matrix-vector streams (from a flushed cache, as the benchmarks run) and
the calibration's best GEMM, while the samples so far took under a twentieth of the session
(SAMPLE_SHARE): about 0.15 s each on 2 cores. A sample reached twice that beats the
calibrated bandwidth or peak by more than 5% (measured.RAISE_MARGIN) raises it for the whole
report: one bandwidth and one peak per report. The calibration file keeps the samples for the
next session (attnspec.reports.calibrate.keep_ceiling), so the roof only rises, in steps of more than
5% (smaller moves would shift the ridge, and the verdicts beside it, from run to run). A roof
from the spec table or from --peak-flops / --bandwidth is never raised.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, defaultdict
from collections.abc import Callable

from attnspec.reports import timing
from attnspec.reports.hardware import DeviceRoof
from attnspec.reports.measured import Measured, top_two, utc_now

Probe = tuple[Callable[[], object], float]  # a call, and the bytes or FLOPs it does
Key = tuple[str, str]  # (device, roof dtype)
FIGURES = (("bandwidth", "bandwidth_source"), ("peak_flops", "peak_source"))


def measured_figures(roof: DeviceRoof) -> list[str]:
    """The figures of ``roof`` that come from a measurement (those a sample may raise)."""
    if roof.measured is None:
        return []
    return [fig for fig, source in FIGURES if getattr(roof, source).startswith("measured")]


GEMM_SAMPLE_N = 1024  # the GEMM sample's largest size on a CPU: n=2048 would take ~65 ms a row


def probes(device: str, measured: Measured) -> list[tuple[str, Probe]]:
    """The sampled calls on ``device``, in the order they run after one cache flush: x @ W, W @ x
    and x @ W again, over two buffers the calibration's size (twice the cache bound: each read
    evicts the other buffer and streams from memory), then the calibration's
    best GEMM (at most GEMM_SAMPLE_N on a CPU). Each is called once here (warm-up)."""
    from attnspec.reports import calibrate

    n = measured.buffer_bytes // 4
    a, b = (calibrate.random_buffer(n, device, seed=seed) for seed in (2, 3))  # (n,) each
    gemv, gemv_t = (
        calibrate.read_streams(a, device)["gemv"],
        calibrate.read_streams(b, device)["gemv-t"],
    )
    library, _, size = measured.gemm_method.removeprefix("session ").partition(" n=")
    if not timing.is_cuda(device):
        size = str(min(int(size), GEMM_SAMPLE_N))
    method = f"{library} n={size}"
    gemm = calibrate.product(method, device, measured.gemm_dtype)
    calls: list[tuple[str, Probe]] = [
        ("session gemv-t", gemv_t),
        ("session gemv", gemv),
        ("session gemv-t", gemv_t),
        (f"session {method}", (gemm, 2.0 * int(size) ** 3)),
    ]
    for _, (fn, _) in calls:
        fn()
    return calls


SAMPLE_SHARE = 0.05  # the samples take at most this share of the session's time (on the CI VM
# one takes ~0.15 s, as long as several benchmarks of small ops)


class SessionCeiling:
    """The two best rates each sampled method reached in this session, per device roof."""

    def __init__(
        self, flusher: Callable[[str], Callable[[], object]], share: float | None = SAMPLE_SHARE
    ) -> None:
        self._flusher = flusher
        self._probes: dict[Key, list[tuple[str, Probe]]] = {}
        self.best: dict[Key, dict[str, list[float]]] = defaultdict(dict)  # two best per method
        self.count: Counter[Key] = Counter()
        self.share = share  # None: sample every time asked
        self.started: float | None = None  # the first sample's time: the session's benchmarks
        self.spent = 0.0  # seconds of sampling so far (the probes' one-time set-up left out)

    def sample(self, roof: DeviceRoof) -> None:
        """Flush the cache, then time each probe once more on the roof's device; skipped while
        the samples so far took more than ``share`` of the session."""
        if not measured_figures(roof) or roof.measured is None:
            return
        key = (roof.device, roof.dtype)
        if key not in self._probes:
            self._probes[key] = probes(roof.device, roof.measured)
        began = time.perf_counter()
        self.started = began if self.started is None else self.started
        elapsed = began - self.started
        if self.share is not None and self.count[key] and self.spent > self.share * elapsed:
            return
        self._flusher(roof.device)()
        best = self.best[key]
        for method, (fn, work) in self._probes[key]:
            start = timing.now(roof.device)
            fn()
            rate = work / max(timing.now(roof.device) - start, 1e-12)
            best[method] = top_two(rate, *best.get(method, []))
        self.count[key] += 1
        self.spent += time.perf_counter() - began

    def raised(self, roof: DeviceRoof) -> DeviceRoof:
        """``roof`` with its measured figures raised to a session sample that beat them by more
        than RAISE_MARGIN (reached twice), and the samples in its ``measured.ceiling``."""
        key = (roof.device, roof.dtype)
        figures = measured_figures(roof)
        if not figures or roof.measured is None or not self.best.get(key):
            return roof
        m = roof.measured.with_samples(self.best[key], self.count[key], utc_now())
        changes: dict[str, object] = {"measured": m}
        for figure, source in FIGURES:
            if figure in figures:
                changes[figure], changes[source] = m.source(
                    "gemm_flops" if figure == "peak_flops" else figure
                )
        return dataclasses.replace(roof, **changes)  # type: ignore[arg-type]

    def persist(self) -> None:
        """Merge this session's best samples into the calibration file (the next session's
        starting ceiling)."""
        kept = {key: best for key, best in self.best.items() if best}
        if not kept:  # nothing sampled (untimed, overridden, or no torch): nothing to import
            return
        from attnspec.reports import calibrate

        for (device, dtype), best in kept.items():
            calibrate.keep_ceiling(device, dtype, best, self.count[(device, dtype)])
