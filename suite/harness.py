"""What a test in suite/ calls: run one clause on the injected implementation, or skip it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import attnspec.specs.catalog  # noqa: F401  (registers every clause, so verify can take an ID)
from attnspec.implementations.discovery import UnderTest
from attnspec.specs.runner import NotImplementedByImpl, run_clause


def verify(clause_id: str, impl: Any, dtype: str = "float32") -> None:
    """Check clause `clause_id` on `impl`; a missing op or dtype becomes a skip with the reason.

    `impl` is the test's `impl` argument (an UnderTest, which knows its --impl locator) or any
    subject a clause can run on (the cost model). The run's options (--call-timeout,
    --reproduce) come from the plugin, which wraps each test in `attnspec.specs.runner.run_options`.
    """
    __tracebackhide__ = True
    subject, locator = (impl.impl, impl.locator) if isinstance(impl, UnderTest) else (impl, None)
    try:
        with few_threads():
            run_clause(clause_id, subject, dtype=dtype, locator=locator)
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
