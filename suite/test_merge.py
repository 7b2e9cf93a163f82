"""Partial attention states (LSE, empty rows, merging, cascade) and the cascade cost, one test each."""

import attnspec.specs.cost_cascade as cost_cascade
from attnspec.specs.cost_clauses import CostSubject
from attnspec.suite.harness import verify

MODEL = CostSubject(cost_cascade)


def test_lse_ref(impl, dtype):
    """Every attention op's log-sum-exp equals the float64 reference."""
    verify("LSE-REF", impl, dtype)


def test_attn_empty_rows(impl, dtype):
    """A query that sees no key gets output 0 and lse -inf, never NaN."""
    verify("ATTN-EMPTY-ROWS", impl, dtype)


def test_merge_eq_union(impl, dtype):
    """Merging the states of disjoint key parts equals attention over their union."""
    verify("MERGE-EQ-UNION", impl, dtype)


def test_merge_empty(impl, dtype):
    """An empty state is neutral in a merge, and two empty states give 0 and -inf."""
    verify("MERGE-EMPTY", impl, dtype)


def test_cascade_eq_dense(impl, dtype):
    """Cascade attention over a shared prefix equals each sequence's dense attention."""
    verify("CASCADE-EQ-DENSE", impl, dtype)


def test_cost_cascade():
    """cascade_decode_cost reproduces the hand-derived shared-prompt batch."""
    verify("COST-CASCADE", MODEL)
