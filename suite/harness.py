"""What a test in suite/ calls: run one clause on the injected implementation, or skip it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from specs.runner import NotImplementedByImpl, run_clause

REPRODUCE_BLOB: str | None = None  # set by conftest from --reproduce
SPECS: dict[str, str] = {}  # implementation name -> the --impl value that loaded it (conftest)
SHAPES: str | None = None  # set by conftest from --shapes: one model's shapes only


def verify(clause_id: str, impl: Any, dtype: str = "float32") -> None:
    """Check clause `clause_id` on `impl`; a missing op or dtype becomes a skip with the reason."""
    __tracebackhide__ = True
    try:
        with few_threads():
            spec = SPECS.get(getattr(impl, "name", ""))
            run_clause(
                clause_id,
                impl,
                dtype=dtype,
                reproduce_blob=REPRODUCE_BLOB,
                spec=spec,
                shapes=SHAPES,
            )
    except NotImplementedByImpl as exc:
        pytest.skip(str(exc))


@contextmanager
def few_threads() -> Iterator[None]:
    """One torch CPU thread: conformance examples are tiny, and thread start-up dominates them."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
