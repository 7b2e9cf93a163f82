"""pytest-benchmark wiring: attnspec's benchmark options, the `bench` fixture and the roofline report.

Benchmarks are the tests that use pytest-benchmark's `benchmark` fixture (through `bench`).
A plain `pytest suite` skips them, so it stays a conformance run; they run under
`--benchmark-only` (which then deselects everything else), or when `--benchmark-enable` or
`--benchmark-disable` (run each once, untimed: the fast CI mode) is given explicitly.
This plugin talks to pytest-benchmark only through its fixture (`pedantic`, `stats`,
`extra_info`) and its hooks; after pytest-benchmark's own table it prints a roofline table
per op group and writes roofline.md, roofline.json and roofline.png to the report folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reports import render, timing
from reports.ceiling import SessionCeiling
from reports.hardware import DeviceRoof, OverrideError, cpu_name, h100_baseline, parse_rate
from reports.roofline import (
    Record,
    Row,
    analyse,
    annotate,
    cache_comparisons,
    repeatability,
    section_spread,
    summarise,
)
from reports.timing import Bench
from suite.plugin import session_of  # the attnspec session: implementations, device, report dir

OPT_BENCH_SIZE = "--bench-size"
OPT_PEAK_FLOPS = "--peak-flops"
OPT_BANDWIDTH = "--bandwidth"
OPT_RECALIBRATE = "--recalibrate"
OPT_THREADS = "--bench-threads"
OPT_REPEAT = "--repeat-report"
BENCH_SIZES = ("small", "default", "large")
SKIP_REASON = "benchmark: run with `pytest --benchmark-only` (a plain run checks conformance only)"

BENCH = pytest.StashKey["BenchState"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attnspec", "attnspec conformance and benchmarks")
    group.addoption(
        OPT_BENCH_SIZE,
        default="default",
        metavar="SIZE",
        help="benchmark sizes: small (seconds, for CI), default (a few minutes on a 2-core "
        "CPU; GPU runs get the large grid), large",
    )
    group.addoption(
        OPT_PEAK_FLOPS, default=None, metavar="RATE", help="override the device's peak FLOP/s"
    )
    group.addoption(
        OPT_BANDWIDTH, default=None, metavar="RATE", help="override the device's bandwidth (B/s)"
    )
    group.addoption(
        OPT_RECALIBRATE, action="store_true", help="measure the device roof again (no cache)"
    )
    group.addoption(
        OPT_THREADS, default=None, metavar="N", help="CPU threads for torch during benchmarks"
    )
    group.addoption(
        OPT_REPEAT,
        default=None,
        metavar="N",
        help="run every benchmark N times (pass after pass) and report, per row, the spread "
        "of the %% of roof and whether the verdict changed",
    )


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
    value = config.getoption(OPT_THREADS)
    if value is None:
        return None
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise pytest.UsageError(
            f"{OPT_THREADS} {value!r}: the thread count must be a whole number >= 1"
        )
    return threads


def repeat_option(config: pytest.Config) -> int:
    """The --repeat-report value as a whole number >= 1 (1 when not given)."""
    value = config.getoption(OPT_REPEAT)
    if value is None:
        return 1
    try:
        runs = int(value)
    except ValueError:
        runs = 0
    if runs < 1:
        raise pytest.UsageError(
            f"{OPT_REPEAT} {value!r}: the pass count must be a whole number >= 1"
        )
    return runs


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
        self._flushers: dict[str, Callable[[], None]] = {}
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
        return Path(
            self.config.getoption("--report-dir", None) or self.config.rootpath / "reports" / "out"
        )

    def flusher(self, device: str) -> Callable[[], None]:
        if device not in self._flushers:
            self._flushers[device] = timing.flusher(device)
        return self._flushers[device]

    def roof(self, device: str, dtype: str) -> DeviceRoof:
        """The device's roof for `dtype` (CPU: always the measured float32 roof)."""
        roof_dtype = dtype if timing.is_cuda(device) else "float32"
        key = (device, roof_dtype)
        if key in self._roofs:
            return self._roofs[key]
        try:
            from reports.detect import resolve_device
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
        }


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Keep this session's ceiling samples in the calibration file for the next session."""
    state = session.config.stash.get(BENCH, None)
    if state is None or hasattr(session.config, "workerinput"):
        return
    try:
        state.ceiling.persist()
    except (OSError, ValueError) as err:  # CalibrationError is a ValueError
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"attnspec: the ceiling samples were not saved ({err})", yellow=True)


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


def benchmarks_active(config: pytest.Config) -> bool:
    """Whether this run asked for benchmarks (plain runs skip them)."""
    return bool(
        config.getoption("benchmark_only", False)
        or config.getoption("benchmark_enable", False)
        or config.getoption("benchmark_disable", False)
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[BENCH] = BenchState(config)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def is_bench(item: pytest.Item) -> bool:
        return "benchmark" in getattr(item, "fixturenames", ())

    if config.stash[BENCH].repeat > 1:  # pass after pass: every benchmark once, then again
        items.sort(key=run_of)
    if config.getoption("benchmark_only", False):
        keep = [i for i in items if is_bench(i)]
        dropped = [i for i in items if not is_bench(i)]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep
    elif not benchmarks_active(config):
        for item in items:
            if is_bench(item):
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Settle the roofs before timing starts, so a calibration never runs between benchmarks."""
    config = session.config
    if not benchmarks_active(config) or config.getoption("benchmark_disable", False):
        return
    if not any("benchmark" in getattr(i, "fixturenames", ()) for i in session.items):
        return
    state = config.stash[BENCH]
    attnspec = session_of(config)
    subjects = attnspec.subjects if attnspec else []
    devices = {timing.device_of(impl) for impl in subjects} or {"cpu"}
    for device in sorted(devices):
        for dtype in attnspec.dtypes if attnspec else ["float32"]:
            state.roof(device, dtype)


def run_of(item: pytest.Item) -> int:
    """The --repeat-report pass an item belongs to (1 without the option)."""
    callspec = getattr(item, "callspec", None)
    return int(callspec.params.get("bench_run", 1)) if callspec is not None else 1


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    runs = metafunc.config.stash[BENCH].repeat
    if runs > 1 and "bench_run" in metafunc.fixturenames:
        ids = [f"run{i}" for i in range(1, runs + 1)]
        metafunc.parametrize("bench_run", range(1, runs + 1), ids=ids, indirect=True)


@pytest.fixture
def bench_run(request: pytest.FixtureRequest) -> int:
    """Which pass of --repeat-report this is (1 without the option)."""
    return int(getattr(request, "param", 1))


@pytest.fixture
def bench(request: pytest.FixtureRequest, benchmark: Any, bench_run: int) -> Bench:
    """Time, check and record one benchmark (see reports.timing.Bench)."""
    return Bench(request.config.stash[BENCH], benchmark, request.node.nodeid, bench_run)


def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    """Carry the device name so pytest-benchmark warns when comparing runs across devices."""
    state = config.stash[BENCH]
    device = state.device
    info: dict[str, Any] = {"device": device, "cpu": cpu_name(), "torch_threads": state.threads}
    if timing.is_cuda(device):
        import torch

        info["gpu"] = torch.cuda.get_device_name(device)
    machine_info["attnspec"] = info


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]
) -> None:
    """Add the top-level roofline block to pytest-benchmark's JSON."""
    state = config.stash[BENCH]
    if state.records:
        output_json["attnspec"] = state.payload()


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash[BENCH]
    if not state.records or hasattr(config, "workerinput"):
        return
    tr = terminalreporter
    payload = state.payload()
    every, roofs = state.analysed()
    rows = [r for r in every if r.record.run == 1]
    baseline = h100_baseline()
    comparisons = payload["cached_vs_recompute"]
    timed = any(r.seconds is not None for r in state.records)
    heading = f"bench size {state.size}; torch threads {state.threads}" + (
        "" if timed else "; benchmarks ran once, untimed (--benchmark-disable)"
    )
    if state.repeat > 1:
        heading += f"; {state.repeat} passes (tables show pass 1, then the spread over passes)"
    load = payload["load_average"]
    if load["start"] is not None:
        heading += (
            f"; load average {load['start']:.1f} at start, {load['end']:.1f} at end "
            f"on {os.cpu_count()} CPUs"
        )
        if load["start"] > 0.75 * (os.cpu_count() or 1):
            heading += " (busy machine: CPU timings are disturbed by other processes)"
    tr.section("attnspec roofline")
    text = render.report_text(
        rows, roofs, baseline, comparisons, payload["verdicts"], heading=heading
    )
    repeat = payload["repeat"]
    if repeat["rows"]:
        text += "\n\n" + render.repeat_text(repeat["rows"], repeat["sections"])
    tr.write_line(text)
    out = state.report_dir
    md = render.report_text(
        rows,
        roofs,
        baseline,
        comparisons,
        payload["verdicts"],
        fmt="github",
        heading=f"# attnspec roofline report\n\n{heading}\n",
    )
    if repeat["rows"]:
        md += "\n\n" + render.repeat_text(repeat["rows"], repeat["sections"], fmt="github")
    paths = [
        render.write_text(out / "roofline.md", md),
        render.write_json(out / "roofline.json", payload),
    ]
    png = render.plot(out / "roofline.png", rows, roofs, baseline)
    if png is not None:
        paths.append(png)
    tr.write_line("")
    for path in paths:
        tr.write_line(f"roofline report: {path}")
