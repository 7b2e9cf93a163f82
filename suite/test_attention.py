"""Attention clauses, one test each, run on every selected implementation and dtype."""

from attnspec.suite.harness import verify


def test_attn_ref(impl, dtype):
    """Attention equals the float64 reference over causal/non-causal, GQA, odd dims and scales."""
    verify("ATTN-REF", impl, dtype)


def test_attn_causal_no_future(impl, dtype):
    """Causal outputs do not change when keys and values in their future do."""
    verify("ATTN-CAUSAL-NO-FUTURE", impl, dtype)


def test_attn_stable(impl, dtype):
    """Logits in the thousands stay finite and correct."""
    verify("ATTN-STABLE", impl, dtype)


def test_attn_convex(impl, dtype):
    """Each output row lies within the range of the value rows it can see."""
    verify("ATTN-CONVEX", impl, dtype)


def test_attn_permute(impl, dtype):
    """Non-causal attention is invariant to permuting key/value pairs."""
    verify("ATTN-PERMUTE", impl, dtype)


def test_attn_batch_indep(impl, dtype):
    """A batch row's output does not depend on the other rows."""
    verify("ATTN-BATCH-INDEP", impl, dtype)
