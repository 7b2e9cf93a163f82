"""The benchmark session's state: option values, device roofs, cache flushers, the records
collected, and their analysis (the rows, the ceiling-raised roofs, the JSON payload).

attnspec.reports.bench_plugin creates one per pytest session (``config.stash[BENCH]``) and wires it to
pytest's hooks; attnspec.reports.timing.Bench adds records to it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from attnspec.plugin import (
    OPT_BANDWIDTH,
    OPT_BENCH_SIZE,
    OPT_PEAK_FLOPS,
    OPT_RECALIBRATE,
    OPT_REPEAT,
    OPT_THREADS,
)
from attnspec.reports import curve, timing
from attnspec.reports.ceiling import SessionCeiling
from attnspec.reports.hardware import DeviceRoof, OverrideError, h100_baseline, parse_rate
from attnspec.reports.roofline import (
    Record,
    Row,
    analyse,
    annotate,
    cache_comparisons,
    repeatability,
    section_spread,
    summarise,
)
from attnspec.suite.plugin import session_of  # the run's implementations, device, report dir
from attnspec.suite.plugin_options import report_dir

BENCH_SIZES = ("small", "default", "large")


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): how busy the machine was."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def size_option(config: pytest.Config) -> str:
    """The --bench-size value; one not in BENCH_SIZES is a usage error."""
    size = config.getoption(OPT_BENCH_SIZE)
    if size not in BENCH_SIZES:
        raise pytest.UsageError(f"{OPT_BENCH_SIZE} {size!r}: choose from {', '.join(BENCH_SIZES)}")
    return str(size)


def rate_option(config: pytest.Config, option: str, what: str) -> float | None:
    """A --peak-flops / --bandwidth value as a positive number; a bad one is a usage error."""
    value = config.getoption(option)
    if value is None:
        return None
    try:
        return parse_rate(value, what, option)
    except OverrideError as exc:
        raise pytest.UsageError(str(exc)) from None


def threads_option(config: pytest.Config) -> int | None:
    """The --bench-threads value as a whole number >= 1; anything else is a usage error."""
    return count_option(config, OPT_THREADS, "thread count")


def repeat_option(config: pytest.Config) -> int:
    """The --repeat-report value as a whole number >= 1 (1 when not given)."""
    runs = count_option(config, OPT_REPEAT, "pass count")
    return 1 if runs is None else runs


def count_option(config: pytest.Config, option: str, what: str) -> int | None:
    """An option's value as a whole number >= 1, None when not given; else a usage error."""
    value = config.getoption(option)
    if value is None:
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise pytest.UsageError(f"{option} {value!r}: the {what} must be a whole number >= 1")
    return count


class BenchState:
    """Per-session benchmark state: size, roofs, cache flushers and the records collected."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.requested_size = size_option(config)
        self.peak = rate_option(config, OPT_PEAK_FLOPS, "peak FLOP/s")
        self.bandwidth = rate_option(config, OPT_BANDWIDTH, "bandwidth (bytes/s)")
        self.recalibrate = bool(config.getoption(OPT_RECALIBRATE))
        self.threads = timing.fix_threads(threads_option(config))
        self.repeat = repeat_option(config)
        self.records: list[Record] = []
        self.load_at_start = load_average()
        self._roofs: dict[tuple[str, str], DeviceRoof] = {}
        self._flushers: dict[str, Callable[[], object]] = {}
        self.probes: dict[str, float] = {}  # single-op probe seconds, by description
        self.ceiling = SessionCeiling(self.flusher)  # samples beside the benchmarks
        self._analysis: tuple[int, list[Row], dict[str, DeviceRoof]] | None = None

    @property
    def device(self) -> str:
        session = session_of(self.config)
        return session.device if session else "cpu"

    @property
    def size(self) -> str:
        """The grid the benchmarks use: `default` means `large` on a GPU."""
        if self.requested_size == "default" and timing.is_cuda(self.device):
            return "large"
        return self.requested_size

    @property
    def report_dir(self) -> Path:
        session = session_of(self.config)
        if session:
            return session.report_dir
        return report_dir(self.config)

    def flusher(self, device: str) -> Callable[[], object]:
        """The device's cache flush, sized by ``cache_bound``."""
        if device not in self._flushers:
            self._flushers[device] = timing.flusher(device, self.cache_bound(device))
        return self._flushers[device]

    def cache_bound(self, device: str) -> int:
        """Bytes of cache a flush must evict: on a CPU the calibration's probed bound (the
        smallest working set that re-read at main-memory speed, attnspec.reports.cache_probe),
        else (a GPU, or no calibration) the size reported."""
        if not timing.is_cuda(device):
            measured = self.roof(device, "float32").measured
            if measured is not None and measured.cache_nominal:
                return measured.cache_bytes
        return timing.cache_bytes(device)

    def roof(self, device: str, dtype: str) -> DeviceRoof:
        """The device's roof for `dtype` (CPU: always the measured float32 roof)."""
        roof_dtype = dtype if timing.is_cuda(device) else "float32"
        key = (device, roof_dtype)
        if key in self._roofs:
            return self._roofs[key]
        try:
            from attnspec.reports.detect import resolve_device
        except ImportError:  # no torch: no detection or calibration, only the overrides
            self._roofs[key] = DeviceRoof(
                name=f"{device} (torch not installed: no detected roof)",
                kind=device.split(":", 1)[0],
                device=device,
                dtype=roof_dtype,
                spec=None,
                measured=None,
                peak_flops=self.peak,
                bandwidth=self.bandwidth,
                peak_source="override (--peak-flops)" if self.peak else "unknown",
                bandwidth_source="override (--bandwidth)" if self.bandwidth else "unknown",
            )
            return self._roofs[key]
        self._roofs[key] = resolve_device(
            device,
            dtype=roof_dtype,
            peak_flops=self.peak,
            bandwidth=self.bandwidth,
            recalibrate=self.recalibrate,
        )
        self.recalibrate = False  # once per session is enough
        return self._roofs[key]

    def sample_ceiling(self, device: str, dtype: str) -> None:
        """Sample the device's streams and GEMM once more, beside a benchmark just timed."""
        self.ceiling.sample(self.roof(device, dtype))

    def final_roof(self, device: str, dtype: str) -> DeviceRoof:
        """The roof the report judges by: the calibrated one raised to this session's ceiling."""
        return self.ceiling.raised(self.roof(device, dtype))

    def analysed(self) -> tuple[list[Row], dict[str, DeviceRoof]]:
        """Every record judged on its device roof and on the baseline, with cross-row notes.

        Computed once per set of records: the JSON hook and the terminal summary share it.
        """
        if self._analysis is None or self._analysis[0] != len(self.records):
            mark_conformance_failures(self.config, self.records)
            baseline = h100_baseline()
            rows, roofs = [], {}
            for record in self.records:
                roof = self.final_roof(record.device, record.dtype)
                roofs[f"{record.device} {roof.dtype}"] = roof
                rows.append(analyse(record, roof, baseline))
            for run in sorted({r.record.run for r in rows}):
                annotate([r for r in rows if r.record.run == run])
            self._analysis = (len(self.records), rows, roofs)
        return self._analysis[1], self._analysis[2]

    def payload(self) -> dict[str, Any]:
        """The JSON block: roofs, baseline, ridge points, rows, comparisons, verdicts."""
        rows, roofs = self.analysed()
        baseline = h100_baseline()
        spread = repeatability(rows)
        first = [r for r in rows if r.record.run == 1]
        return {
            "bench_size": self.size,
            "threads": self.threads,
            "cpu_count": os.cpu_count(),
            "load_average": {"start": self.load_at_start, "end": load_average()},
            "device_roofs": {k: roof.to_dict() for k, roof in roofs.items()},
            "baseline": baseline.to_dict(),
            "ridge_points": {
                **{k: r.ridge for k, r in roofs.items()},
                "h100-sxm bf16": baseline.ridge,
            },
            "rows": [row.to_dict() for row in rows],
            "repeat": {"runs": self.repeat, "rows": spread, "sections": section_spread(spread)},
            "cached_vs_recompute": cache_comparisons(
                first, lambda r: self.final_roof(r.device, r.dtype), baseline
            ),
            "verdicts": summarise(first),
            "latency": self.latency(first, roofs),
        }

    def latency(self, rows: list[Row], roofs: dict[str, DeviceRoof]) -> dict[str, Any] | None:
        """The latency-vs-throughput block (attnspec.reports.curve) when decode steps were timed."""
        if not any(r.record.group == curve.GROUP for r in rows):
            return None
        return curve.bench_block(rows, roofs, self.config.getoption("--shapes", None))


def mark_conformance_failures(config: pytest.Config, records: list[Record]) -> None:
    """Mark rows whose implementation failed the matching clause in this session's conformance run."""
    session = session_of(config)
    failed = {
        (c.clause, c.impl, c.dtype)
        for c in (session.records if session else [])
        if c.outcome == "failed"
    }
    for r in records:
        if not r.failed and (r.clause, r.impl, r.dtype) in failed:
            r.check = f"FAIL {r.clause} (conformance run in this session)"
