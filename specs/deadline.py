"""A time limit on one call into an implementation, so a hang fails one clause, not the run.

Uses SIGALRM (main thread, POSIX). An outer alarm, such as pytest-timeout's, is saved and put
back with its remaining time. Elsewhere (a worker thread, Windows) the call runs unlimited and
pytest-timeout remains the backstop.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class CallTimeout(Exception):
    """The call did not return within its limit."""


def _usable() -> bool:
    return hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise CallTimeout inside the block if it runs longer than `seconds` (None: no limit)."""
    if not seconds or seconds <= 0 or not _usable():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise CallTimeout(f"no result after {seconds:g} s")

    outer_handler = signal.getsignal(signal.SIGALRM)
    outer_delay, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    if 0 < outer_delay <= seconds:  # the outer alarm fires first anyway
        yield
        return
    start = time.monotonic()
    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_delay > 0:
            left = max(outer_delay - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)
