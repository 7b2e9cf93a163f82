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
from typing import Any

import pytest

from attnspec.reports import curve, render, timing
from attnspec.reports.bench_state import (
    BenchState,
)
from attnspec.reports.hardware import cpu_name, h100_baseline
from attnspec.reports.timing import Bench
from attnspec.suite.plugin import (
    session_of,  # the attnspec session: implementations, device, report dir
)

SKIP_REASON = "benchmark: run with `pytest --benchmark-only` (a plain run checks conformance only)"

BENCH = pytest.StashKey["BenchState"]()


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
    """Time, check and record one benchmark (see attnspec.reports.timing.Bench)."""
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
    latency = payload["latency"]
    if latency:
        text += "\n\n" + curve.section_text(latency)
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
    if latency:
        md += "\n\n" + curve.section_text(latency, fmt="github")
    if repeat["rows"]:
        md += "\n\n" + render.repeat_text(repeat["rows"], repeat["sections"], fmt="github")
    paths = [
        render.write_text(out / "roofline.md", md),
        render.write_json(out / "roofline.json", payload),
    ]
    png = render.plot(out / "roofline.png", rows, roofs, baseline)
    if png is not None:
        paths.append(png)
    if latency:
        paths.append(curve.plot(out / latency["plot"], latency))
    tr.write_line("")
    for path in paths:
        tr.write_line(f"roofline report: {path}")
