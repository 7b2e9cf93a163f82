"""The clause registry: every invariant attnspec checks, with its ID, one sentence and its check.

Area modules (specs/attention.py, ...) register their clauses here with `@clause`; a clause
that does not hold raises ClauseFailure. `attnspec.specs.catalog` imports every area and looks
clauses up (`all_clauses`), so this module imports no area and no area imports it back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Check = Callable[[Any, Any], None]  # check(target, hypothesis_data) raises on violation


class ClauseFailure(AssertionError):
    """A clause does not hold; `details` carries the figures for the conformance report."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class Clause:
    """One invariant: `id` names it, `sentence` states it, `check` tests it on one drawn example."""

    id: str
    sentence: str
    needs: tuple[str, ...]  # attributes the subject must provide, else the clause is skipped
    check: Check
    examples: float = 1.0  # multiplier on the profile's max_examples for costly checks

    @property
    def test_name(self) -> str:
        """The name of the test function in suite/ that runs this clause."""
        return "test_" + self.id.lower().replace("-", "_")


REGISTRY: dict[str, Clause] = {}


def clause(
    id: str, sentence: str, *, needs: tuple[str, ...] = (), examples: float = 1.0
) -> Callable[[Check], Clause]:
    """Register the decorated check function as clause `id`."""

    def register(check: Check) -> Clause:
        if id in REGISTRY:
            raise ValueError(f"clause {id} is registered twice")
        REGISTRY[id] = Clause(id, sentence, tuple(needs), check, examples)
        return REGISTRY[id]

    return register


def get(id: str) -> Clause:
    """The registered clause `id` (import attnspec.specs.catalog first: it registers every area's clauses)."""
    try:
        return REGISTRY[id]
    except KeyError:
        raise KeyError(f"no clause {id!r}; known: {', '.join(sorted(REGISTRY))}") from None
