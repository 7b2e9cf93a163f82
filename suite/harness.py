"""What a test in suite/ calls: run one clause on the injected implementation, or skip it."""

from __future__ import annotations

from typing import Any

import pytest

from specs.runner import NotImplementedByImpl, run_clause


def verify(clause_id: str, impl: Any, dtype: str = "float32") -> None:
    """Check clause `clause_id` on `impl`; a missing op or dtype becomes a skip with the reason."""
    __tracebackhide__ = True
    try:
        run_clause(clause_id, impl, dtype=dtype)
    except NotImplementedByImpl as exc:
        pytest.skip(str(exc))
