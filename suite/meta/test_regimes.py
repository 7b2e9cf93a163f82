"""Meta-tests: the default tier reaches the regimes where real kernels break.

Each clause runs on the numpy implementation under the default tier's settings, through a
recorder that notes what every call received (suite/meta/regimes.py); the drawn examples are
those of numpy's own conformance run. A clause that never reaches a regime it lists fails.
"""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import settings

import attnspec.implementations.numpy_impl as numpy_impl
from attnspec.specs.profiles import KILL
from attnspec.specs.runner import run_clause
from attnspec.specs.threads import one_blas_thread
from attnspec.specs.tolerance import ClauseFailure
from attnspec.suite.meta.mutants import derive
from attnspec.suite.meta.regimes import (
    FAMILIES,
    REQUIRED,
    Seen,
    missing_by_clause,
    missing_by_family,
    reached,
    record,
)


@cache
def seen(clause_id: str) -> Seen:
    """What the default tier's run of `clause_id` on numpy handed the implementation."""
    with one_blas_thread():
        return record(clause_id, numpy_impl, "default")


@pytest.mark.parametrize("clause_id", list(REQUIRED))
def test_clause_reaches_its_regimes(clause_id):
    """Every regime the clause lists (lengths, head groups, head dims, magnitudes) is drawn."""
    lacks = missing_by_clause({clause_id: seen(clause_id)})[clause_id]
    assert not lacks, f"{clause_id} never reached {lacks}; it reached {reached(seen(clause_id))}"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_reaches_its_regimes(family):
    """Each regime of a family (4096 keys, groups of 8+, head dims 192+, Hq >= 32, batches of
    long caches, ...) is reached by at least one of its clauses."""
    clauses, _ = FAMILIES[family]
    lacks = missing_by_family({c: seen(c) for c in clauses})[family]
    assert not lacks, f"no {family} clause reached {lacks}"


# Half precision reaches the same regimes: the first example of a run (all the smoke tier runs)
# is a realistic case with its long contexts, or a decoder past 512 positions, in every dtype.
HALF_REACH = {
    "ATTN-REF": ["keys > 32768 (long context)", "group >= 8, Hkv >= 2", "Hq >= 32"],
    "DEC-CACHED-EQ-FULL": ["positions > 512"],
}


@pytest.mark.parametrize("clause_id", list(HALF_REACH))
@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_dtypes_reach_the_regimes(clause_id, half):
    """In float16 (numpy) and bfloat16 (torch) the first example still reaches the long
    contexts, a whole wide layer and a decoder past 512 positions."""
    impl = numpy_impl
    if half == "bfloat16":
        impl = pytest.importorskip("attnspec.implementations.torch_impl").impl
    with one_blas_thread():
        got = reached(record(clause_id, impl, "smoke", half))
    lacks = [r for r in HALF_REACH[clause_id] if r not in got]
    assert not lacks, f"{clause_id} in {half} never reached {lacks}; it reached {got}"


def test_native_dtype_is_checked_before_to_numpy():
    """A bfloat16 call answered in float32 fails ATTN-REF, though to_numpy of a bfloat16 tensor
    and of a float32 one look alike (both come back as float32 numpy arrays)."""
    torch_impl = pytest.importorskip("attnspec.implementations.torch_impl").impl

    def upcast(q, k, v, **kw):
        return torch_impl.attention(q, k, v, **kw).float()

    mutant = derive(torch_impl, "mutant-bf16-answered-in-fp32", attention=upcast)
    with pytest.raises(ClauseFailure) as failure:
        run_clause("ATTN-REF", mutant, dtype="bfloat16", settings_=settings(KILL, max_examples=2))
    assert failure.value.details["misbehaviour"] == "wrong dtype", failure.value
    run_clause("ATTN-REF", torch_impl, dtype="bfloat16", settings_=settings(KILL, max_examples=2))
