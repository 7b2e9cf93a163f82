"""The generation bookkeeping both shipped decoders share: forward, prefill and decode.

Subclasses supply the array work: `new_cache(batch)`, `_check_tokens(tokens, start)` and
`_run(tokens, cache, start)`, which computes logits for tokens at positions start.. and writes
their K/V into `cache` (None for a full recompute).
"""

from __future__ import annotations

from typing import Any

from attnspec.implementations.kv_base import DecoderCache


class CachedDecoder:
    """forward (full recompute), prefill (a new cache) and decode (append to a cache)."""

    def new_cache(self, batch: int) -> DecoderCache:
        raise NotImplementedError

    def _check_tokens(self, tokens: Any, start: int) -> None:
        raise NotImplementedError

    def _run(self, tokens: Any, cache: DecoderCache | None, start: int) -> Any:
        raise NotImplementedError

    def forward(self, tokens: Any) -> Any:
        """Logits (B, T, vocab) of tokens (B, T) at positions 0..T-1, no cache."""
        self._check_tokens(tokens, 0)
        return self._run(tokens, None, 0)

    def prefill(self, tokens: Any) -> tuple[Any, DecoderCache]:
        """Logits of the prompt and a new cache holding its K/V."""
        self._check_tokens(tokens, 0)
        cache = self.new_cache(tokens.shape[0])
        logits = self._run(tokens, cache, 0)  # (B, T, vocab)
        cache.length = int(tokens.shape[1])
        return logits, cache

    def decode(self, tokens: Any, cache: DecoderCache) -> tuple[Any, DecoderCache]:
        """Logits of T >= 1 new tokens following the cached ones; the cache grows in place."""
        if not isinstance(cache, DecoderCache):
            raise ValueError(
                f"cache must come from this model's prefill, got {type(cache).__name__}"
            )
        start = len(cache)
        self._check_tokens(tokens, start)
        if tokens.shape[0] != cache.batch:
            raise ValueError(
                f"tokens batch {tokens.shape[0]} does not match the cache's batch {cache.batch}"
            )
        logits = self._run(tokens, cache, start)  # (B, T, vocab)
        cache.length = start + int(tokens.shape[1])
        return logits, cache
