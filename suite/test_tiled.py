"""Tiled (FlashAttention-style) attention clauses, one test each, per implementation and dtype."""

from attnspec.suite.harness import verify


def test_flash_eq_attn(impl, dtype):
    """Tiled attention equals plain attention for any block sizes, causal or not."""
    verify("FLASH-EQ-ATTN", impl, dtype)


def test_flash_lse(impl, dtype):
    """The returned log-sum-exp equals the reference; skipped when return_lse is unsupported."""
    verify("FLASH-LSE", impl, dtype)


def test_flash_stable(impl, dtype):
    """Logits in the thousands over many key blocks stay finite and correct."""
    verify("FLASH-STABLE", impl, dtype)
