"""KV-cache clauses, one test each, run on every selected implementation and dtype."""

from attnspec.suite.harness import verify


def test_kv_decode_eq_recompute(impl, dtype):
    """Prefill then single-token decode through the cache equals full causal attention."""
    verify("KV-DECODE-EQ-RECOMPUTE", impl, dtype)


def test_kv_chunked_prefill(impl, dtype):
    """A prefill split into any chunks equals full causal attention."""
    verify("KV-CHUNKED-PREFILL", impl, dtype)


def test_kv_append_only(impl, dtype):
    """Appends keep order and never touch earlier entries."""
    verify("KV-APPEND-ONLY", impl, dtype)


def test_kv_capacity(impl, dtype):
    """Appending past max_len raises and leaves the cache as it was."""
    verify("KV-CAPACITY", impl, dtype)


def test_kv_bytes(impl, dtype):
    """cache.nbytes is 2*B*Hkv*max_len*D*E."""
    verify("KV-BYTES", impl, dtype)
