"""The clause registry: every invariant attnspec checks, with its ID, one sentence and its check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Check = Callable[[Any, Any], None]  # check(target, hypothesis_data) raises on violation


@dataclass(frozen=True)
class Clause:
    """One invariant: `id` names it, `sentence` states it, `check` tests it on one drawn example."""

    id: str
    sentence: str
    needs: tuple[str, ...]  # attributes the subject must provide, else the clause is skipped
    check: Check
    area: str
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
        area = check.__module__.rsplit(".", 1)[-1]
        REGISTRY[id] = Clause(id, sentence, tuple(needs), check, area, examples)
        return REGISTRY[id]

    return register


def get(id: str) -> Clause:
    """The registered clause `id` (all area modules are imported first)."""
    import specs.catalog  # noqa: F401  (fills REGISTRY)

    try:
        return REGISTRY[id]
    except KeyError:
        raise KeyError(f"no clause {id!r}; known: {', '.join(sorted(REGISTRY))}") from None


def all_clauses() -> list[Clause]:
    """Every registered clause, in registration order."""
    import specs.catalog  # noqa: F401

    return list(REGISTRY.values())
