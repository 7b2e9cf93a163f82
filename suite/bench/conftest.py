"""Parametrises each benchmark's `case` from the grid --bench-size selects (suite/bench/grids.py)."""

from __future__ import annotations

import pytest

from attnspec.reports.bench_plugin import BENCH
from attnspec.suite.bench.grids import cases


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        size = metafunc.config.stash[BENCH].size
        grid, ids = cases(size, metafunc.function.__name__.removeprefix("test_"))
        metafunc.parametrize("case", grid, ids=ids)
