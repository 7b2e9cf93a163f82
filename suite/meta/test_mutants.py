"""Meta-tests: every clause rejects the mutants written for it, and every clause has one."""

from __future__ import annotations

import pytest

from attnspec.implementations.discovery import flop_counter
from attnspec.specs.catalog import all_clauses
from attnspec.specs.clauses import ClauseFailure
from attnspec.specs.profiles import KILL
from attnspec.specs.runner import run_clause
from attnspec.suite.meta.mutants import all_mutants

MUTANTS = all_mutants()
PAIRS = [(m, c) for m in MUTANTS for c in m.kills]


@pytest.mark.parametrize(("mutant", "clause_id"), PAIRS, ids=[f"{c}<-{m.name}" for m, c in PAIRS])
def test_clause_kills_mutant(mutant, clause_id):
    """The clause fails on the mutant written for it: the check sees the bug (not a crash)."""
    with pytest.raises(ClauseFailure) as failure:
        run_clause(clause_id, mutant.impl, dtype=mutant.dtype, settings_=KILL)
    assert failure.value.details.get("misbehaviour") != "raised", (
        f"{mutant.name} only crashed under {clause_id}: {failure.value}"
    )


def test_every_clause_has_a_mutant():
    """No clause ships without a mutant that proves it can fail."""
    targeted = {c for m in MUTANTS for c in m.kills}
    # These count with torch's FlopCounterMode: without torch their mutants can't run.
    needs_torch = {"COST-COUNTED", "COST-RAGGED-COUNTED"} if flop_counter() is None else set()
    untested = [c.id for c in all_clauses() if c.id not in targeted | needs_torch]
    assert not untested, f"clauses without a mutant: {untested}"


def test_mutants_name_known_clauses():
    """Every clause a mutant names exists (a typo would silently test nothing)."""
    known = {c.id for c in all_clauses()}
    unknown = sorted({c for m in MUTANTS for c in m.kills} - known)
    assert not unknown, f"mutants name unknown clauses: {unknown}"


def test_mutant_names_are_unique():
    """Each mutant has its own name (the kill matrix and test ids are keyed by it)."""
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
