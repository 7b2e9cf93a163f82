"""Self-test pytest runs, started in the background as soon as collection ends.

A meta-test that runs pytest in a subprocess registers that run at import (`register`) and
reads it with `result`. suite/meta/conftest.py starts every registered run whose tests were
collected, one at a time on a worker thread, while the in-process clause tests use the other
core; a test whose run has not finished waits for it. A run nobody started (its module run
alone, or under xdist, where every worker would start them all) runs when first asked for.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from attnspec.suite.meta.subprocess_run import TIMEOUT_S, run_module, run_pytest

Build = Callable[[Path], Sequence[str]]  # the pytest arguments, given a fresh folder
# One at a time, beside the in-process tests on the other core (two at a time measured slower:
# 73 s against 68 s for the default run on the 2-core machine).
WORKERS = 1


@dataclass
class Finished:
    """A finished run: pytest's exit code and output, and the folder its arguments used."""

    process: subprocess.CompletedProcess[str]
    folder: Path

    @property
    def returncode(self) -> int:
        return self.process.returncode

    @property
    def stdout(self) -> str:
        return self.process.stdout

    @property
    def stderr(self) -> str:
        return self.process.stderr


@dataclass
class Run:
    key: str
    module: str
    build: Build
    timeout: float
    enabled: bool  # False: never started in the background (its test skips first)
    module_run: str = ""  # run `python -m module_run ARGS` instead of pytest
    future: Future[Finished] | None = field(default=None, repr=False)


RUNS: dict[str, Run] = {}
_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None


def register(
    key: str,
    build: Build,
    *,
    timeout: float = TIMEOUT_S,
    enabled: bool = True,
    module_run: str = "",
) -> str:
    """Declare the run `key` of the calling test module (pytest with `build`'s arguments, or
    `python -m module_run` with them); return the key."""
    module = sys._getframe(1).f_globals["__name__"]
    RUNS[key] = Run(key, module, build, timeout, enabled, module_run=module_run)
    return key


def execute(run: Run) -> Finished:
    folder = Path(tempfile.mkdtemp(prefix=f"attnspec-{run.key}-"))
    args = run.build(folder)
    if run.module_run:
        return Finished(run_module(run.module_run, *args, timeout=run.timeout), folder)
    return Finished(run_pytest(*args, timeout=run.timeout), folder)


def start(modules: Iterable[str]) -> None:
    """Queue, in order, the registered runs of the test modules named (collection order)."""
    global _POOL
    wanted = list(dict.fromkeys(modules))
    with _LOCK:
        for module in wanted:
            for run in RUNS.values():
                if run.module == module and run.enabled and run.future is None:
                    if _POOL is None:
                        _POOL = ThreadPoolExecutor(WORKERS, thread_name_prefix="attnspec-self-test")
                    run.future = _POOL.submit(execute, run)


def result(key: str) -> Finished:
    """The finished run `key`: waits for it, or runs it now when nothing started it."""
    run = RUNS[key]
    with _LOCK:
        if run.future is None:
            run.future = Future()
            run.future.set_result(execute(run))
    return run.future.result()


def stop() -> None:
    """Cancel the runs not started yet (the session is over; one already running finishes)."""
    with _LOCK:
        if _POOL is not None:
            _POOL.shutdown(wait=False, cancel_futures=True)
