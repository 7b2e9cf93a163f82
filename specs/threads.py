"""One BLAS thread while clauses run: their examples are small, and on a busy machine the
spinning worker threads of numpy's OpenBLAS make a millisecond matmul take a tenth of a second."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

ThreadCount = tuple[Callable[[], int], Callable[[int], None]]


@cache
def openblas() -> ThreadCount | None:
    """(get, set) the thread count of the OpenBLAS numpy loaded, or None if none is found."""
    try:
        with open("/proc/self/maps") as maps:  # Linux; elsewhere the thread count stays as it is
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_{}_num_threads64_", "openblas_{}_num_threads"):
            get = getattr(lib, name.format("get"), None)
            put = getattr(lib, name.format("set"), None)
            if get is not None and put is not None:
                return get, put
    return None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the body with numpy's BLAS on one thread, then restore the previous count."""
    blas = openblas()
    if blas is None:
        yield
        return
    get, put = blas
    before = int(get())
    put(1)
    try:
        yield
    finally:
        put(before)
