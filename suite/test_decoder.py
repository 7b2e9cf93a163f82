"""Decoder clauses, one test each: a tiny model generates the same logits with and without its cache."""

from attnspec.suite.harness import verify


def test_dec_cached_eq_full(impl, dtype):
    """Prefill then single-token decodes give the logits of a full forward pass."""
    verify("DEC-CACHED-EQ-FULL", impl, dtype)


def test_dec_chunked_prefill(impl, dtype):
    """Prefill then multi-token decode chunks of any sizes give the logits of a full forward pass."""
    verify("DEC-CHUNKED-PREFILL", impl, dtype)


def test_dec_greedy_eq(impl, dtype):
    """Greedy generation with the cache picks the tokens greedy recompute picks, up to near-ties."""
    verify("DEC-GREEDY-EQ", impl, dtype)


def test_dec_cross_impl(impl, dtype):
    """Forward logits equal the float64 reference decoder's for the same seeded weights."""
    verify("DEC-CROSS-IMPL", impl, dtype)


def test_dec_batch_indep(impl, dtype):
    """A batch row's logits do not depend on the other rows, with or without the cache."""
    verify("DEC-BATCH-INDEP", impl, dtype)
