"""KV-cache clauses: decoding through the cache equals recomputing attention from scratch."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs.attention import compare_with_reference
from attnspec.specs.clauses import clause
from attnspec.specs.dtypes import BYTES_PER_ELEMENT
from attnspec.specs.runner import Target
from attnspec.specs.strategies import (
    CHUNK_QUERIES,
    AttnShape,
    Sequence,
    normal,
    seeds,
    sequence_cases,
    splits,
)
from attnspec.specs.tolerance import ClauseFailure


def draw_sequence(
    t: Target, data: st.DataObject, s: Sequence, rows: list[int] | None = None, stream: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q, k, v for the whole sequence, rounded onto the working dtype.

    With `rows`, only those positions get queries (the others stay 0): a long sequence checks a
    few queries against its whole cache, and its query array would dwarf the cache. `stream`
    tells two sequences of one example apart (the first example draws every seed as 0).
    """
    rng = np.random.default_rng((data.draw(seeds(), label="seed"), stream))
    k = normal(rng, (s.B, s.Hkv, s.T, s.D))  # (B, Hkv, T, D)
    v = normal(rng, (s.B, s.Hkv, s.T, s.D))  # (B, Hkv, T, D)
    k, v = t.inputs(k, v)
    if rows is None:
        (q,) = t.inputs(normal(rng, (s.B, s.Hq, s.T, s.D)))  # (B, Hq, T, D)
    else:
        q = np.zeros((s.B, s.Hq, s.T, s.D))  # (B, Hq, T, D)
        (q[:, :, rows],) = t.inputs(normal(rng, (s.B, s.Hq, len(rows), s.D)))
    return q, k, v


def checked_rows(s: Sequence, stops: list[int]) -> list[int] | None:
    """The query positions check_rows reads for chunks ending at `stops` (None: all)."""
    if not s.long:
        return None
    return sorted({i for stop in stops for i in range(max(0, stop - CHUNK_QUERIES[1]), stop)})


def new_cache(t: Target, s: Sequence) -> Any:
    """The implementation's cache for `s`, built through a guarded call."""
    text = f"kv_cache({s.B}, {s.Hkv}, {s.D}, {s.max_len}, {t.dtype!r})"
    return t.guard(text, t.impl.kv_cache, s.B, s.Hkv, s.D, s.max_len, t.dtype)


def append(t: Target, cache: Any, k: np.ndarray, v: np.ndarray) -> tuple[Any, Any, str]:
    """Append k, v (B, Hkv, t, D); return the native keys and values it hands back, and the call."""
    text = f"cache.append(k{k.shape}, v{v.shape}) at length {len_of(t, cache)}"
    keys, values = t.call_pair(text, "keys, values", cache.append, t.native(k), t.native(v))
    return keys, values, text


def len_of(t: Target, cache: Any) -> int:
    """len(cache), guarded."""
    return int(t.guard("len(cache)", len, cache))


def check_rows(
    t: Target, s: Sequence, q, k, v, cache: Any, start: int, stop: int, what: str
) -> None:
    """Append tokens start..stop-1, attend with their queries, compare with full attention rows.

    Over a long sequence only the chunk's last CHUNK_QUERIES[1] queries attend (decode-shaped:
    a few queries against the whole cache), so the check stays cheap at thousands of tokens.
    """
    keys, values, text = append(t, cache, k[:, :, start:stop], v[:, :, start:stop])
    first = max(start, stop - CHUNK_QUERIES[1]) if s.long else start
    out = t.call_native(
        "attention",
        t.native(q[:, :, first:stop]),
        keys,
        values,
        causal=True,
        expect_shape=(s.B, s.Hq, stop - first, s.D),
    )
    shape = AttnShape(s.B, s.Hq, s.Hkv, stop - first, stop, s.D, s.D)
    qs, ks, vs = q[:, :, first:stop], k[:, :, :stop], v[:, :, :stop]
    rows = f" (queries {first}..{stop - 1})" if first > start else ""
    what = t.where(f"{what}: {text}{rows}")
    compare_with_reference(t, shape, out, qs, ks, vs, causal=True, scale=None, what=what)
    if len_of(t, cache) != stop:
        raise ClauseFailure(f"len(cache) is {len_of(t, cache)} after {stop} tokens\n  in {text}")


@clause(
    "KV-DECODE-EQ-RECOMPUTE",
    "prefilling P tokens and then decoding N tokens one at a time through the cache gives, "
    "at every step, the output of full causal attention over the sequence so far",
    needs=("kv_cache", "attention"),
)
def kv_decode_eq_recompute(t: Target, data: st.DataObject) -> None:
    cases = sequence_cases(min_T=2, preset=t.preset, longest=True)
    for s in data.draw(cases, label="sequences"):
        if s.long:  # a long prefix, then a few decode steps over it
            P = s.T - data.draw(st.integers(1, 4), label="decode steps N")
        else:
            P = data.draw(st.integers(1, s.T - 1), label="prefill length P")
        q, k, v = draw_sequence(t, data, s, checked_rows(s, list(range(P, s.T + 1))))
        cache = new_cache(t, s)
        check_rows(t, s, q, k, v, cache, 0, P, f"prefill of {P} tokens")
        for pos in range(P, s.T):
            step = f"decode step {pos - P + 1} of {s.T - P}"
            check_rows(t, s, q, k, v, cache, pos, pos + 1, step)


@clause(
    "KV-CHUNKED-PREFILL",
    "prefilling a sequence through the cache in chunks of any sizes equals full causal attention",
    needs=("kv_cache", "attention"),
)
def kv_chunked_prefill(t: Target, data: st.DataObject) -> None:
    for s in data.draw(sequence_cases(preset=t.preset), label="sequences"):
        chunks = data.draw(splits(s.T), label="chunk lengths")
        stops = [sum(chunks[: n + 1]) for n in range(len(chunks))]
        q, k, v = draw_sequence(t, data, s, checked_rows(s, stops))
        cache = new_cache(t, s)
        start = 0
        for n, size in enumerate(chunks):
            check_rows(t, s, q, k, v, cache, start, start + size, f"chunk {n} of {chunks}")
            start += size


def check_contents(
    t: Target, got: Any, want: np.ndarray, name: str, text: str, context: str
) -> None:
    """The native cached `name` (B, Hkv, T, D) must equal `want`, the tokens appended, exactly."""
    got = t.result(got, text, expect_shape=want.shape)
    wrong = got != want  # (B, Hkv, T, D)
    if wrong.any():
        b, h, pos, d = (int(i) for i in np.argwhere(wrong)[0])
        raise ClauseFailure(
            f"cached {name}[{b}, {h}, {pos}, {d}] is {got[b, h, pos, d]:.6g}, but token "
            f"{pos} was appended as {want[b, h, pos, d]:.6g} ({context})\n"
            f"  in {t.where(text)}",
            index=[b, h, pos, d],
        )


@clause(
    "KV-APPEND-ONLY",
    "after every append the whole cache holds exactly the tokens appended so far, in order: "
    "earlier entries are never touched, not even by appends to another cache of the same shape "
    "used in turn with it",
    needs=("kv_cache",),
)
def kv_append_only(t: Target, data: st.DataObject) -> None:
    for s in data.draw(sequence_cases(preset=t.preset, longest=True), label="sequences"):
        check_two_caches(t, data, s)


def check_two_caches(t: Target, data: st.DataObject, s: Sequence) -> None:
    """Two caches of one shape filled in turn, chunk by chunk; each always holds its own tokens."""
    chunks = data.draw(splits(s.T), label="chunk lengths")
    _, k, v = draw_sequence(t, data, s, rows=[])
    _, k2, v2 = draw_sequence(t, data, s, rows=[], stream=1)  # a second one, in a second cache
    caches = (new_cache(t, s), new_cache(t, s))
    start = 0
    for size in chunks:
        stop = start + size
        returned = []
        for n, (cache, kk, vv) in enumerate(zip(caches, (k, k2), (v, v2), strict=True)):
            keys, values, text = append(t, cache, kk[:, :, start:stop], vv[:, :, start:stop])
            returned.append((keys, values, text, kk, vv))
            context = f"cache {n + 1} of 2 used in turn, chunks {chunks}"
            for name, got, want in (("keys", keys, kk), ("values", values, vv)):
                check_contents(t, got, want[:, :, :stop], name, text, context)
        keys, values, text, kk, vv = returned[0]  # cache 1's result, after cache 2's append
        context = f"cache 1's result after an append to cache 2, chunks {chunks}"
        for name, got, want in (("keys", keys, kk), ("values", values, vv)):
            check_contents(t, got, want[:, :, :stop], name, text, context)
        start = stop


def append_overflows(t: Target, cache: Any, k: np.ndarray, v: np.ndarray, text: str) -> None:
    """The append of k, v (B, Hkv, t, D) must raise, within the per-call time limit.

    Any exception counts as the capacity error except AttributeError and TypeError, which say
    the cache is broken (no append, or an append that fails on its own arguments), not full.
    """
    if not callable(getattr(cache, "append", None)):
        raise ClauseFailure(
            f"the cache has no append method\n  in {t.where(text)}", misbehaviour="no append"
        )
    native_k, native_v = t.native(k), t.native(v)
    try:
        t.guard(text, cache.append, native_k, native_v)
    except ClauseFailure as exc:
        cause = exc.__cause__
        if exc.details.get("misbehaviour") != "raised":
            raise
        if isinstance(cause, AttributeError | TypeError):
            raise ClauseFailure(
                f"raised {type(cause).__name__}: {cause}, a broken cache rather than a capacity "
                f"error (raise e.g. ValueError or OverflowError)\n  in {t.where(text)}",
                misbehaviour="wrong error",
                call=t.where(text),
            ) from cause
        return
    raise ClauseFailure(f"no error was raised\n  in {t.where(text)}", misbehaviour="overflow")


@clause(
    "KV-CAPACITY",
    "an append that would pass max_len raises an error and leaves the cache as it was; "
    "it never wraps around or drops tokens silently",
    needs=("kv_cache",),
)
def kv_capacity(t: Target, data: st.DataObject) -> None:
    for s in data.draw(sequence_cases(max_T=12, preset=t.preset), label="sequences"):
        check_overflow(t, data, s)


def check_overflow(t: Target, data: st.DataObject, s: Sequence) -> None:
    """Fill, overflow, check nothing moved, append one more."""
    fill = data.draw(st.integers(0, s.max_len), label="tokens appended first")
    extra = data.draw(st.integers(s.max_len - fill + 1, s.max_len - fill + 3), label="overflow")
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    cache = new_cache(t, s)
    k0 = normal(rng, (s.B, s.Hkv, fill, s.D))  # (B, Hkv, fill, D)
    v0 = normal(rng, (s.B, s.Hkv, fill, s.D))  # (B, Hkv, fill, D)
    k0, v0 = t.inputs(k0, v0)
    if fill:
        append(t, cache, k0, v0)
    k = normal(rng, (s.B, s.Hkv, extra, s.D))  # (B, Hkv, extra, D)
    v = normal(rng, (s.B, s.Hkv, extra, s.D))  # (B, Hkv, extra, D)
    k, v = t.inputs(k, v)
    text = f"cache.append of {extra} tokens to a cache holding {fill} of max_len {s.max_len}"
    append_overflows(t, cache, k, v, text)
    if len_of(t, cache) != fill:
        raise ClauseFailure(
            f"len(cache) became {len_of(t, cache)} after the failed append (was {fill})\n"
            f"  in {t.where(text)}"
        )
    if fill == s.max_len:
        return
    k1 = normal(rng, (s.B, s.Hkv, 1, s.D))  # (B, Hkv, 1, D)
    v1 = normal(rng, (s.B, s.Hkv, 1, s.D))  # (B, Hkv, 1, D)
    k1, v1 = t.inputs(k1, v1)
    keys, values, after = append(t, cache, k1, v1)
    context = f"{fill} tokens, then a failed append of {extra}, then 1 more"
    for name, got, first, new in (("keys", keys, k0, k1), ("values", values, v0, v1)):
        want = np.concatenate([first, new], axis=2)  # (B, Hkv, fill + 1, D)
        check_contents(t, got, want, name, f"{after} after the failed {text}", context)


@clause(
    "KV-BYTES",
    "cache.nbytes equals 2 (K and V) x B x Hkv x max_len x D x bytes per element",
    needs=("kv_cache",),
)
def kv_bytes(t: Target, data: st.DataObject) -> None:
    for s in data.draw(sequence_cases(preset=t.preset), label="sequences"):
        cache = new_cache(t, s)
        got = t.guard("cache.nbytes", getattr, cache, "nbytes")
        want = 2 * s.B * s.Hkv * s.max_len * s.D * BYTES_PER_ELEMENT[t.dtype]
        if got != want:
            raise ClauseFailure(
                f"nbytes is {got}, expected 2*{s.B}*{s.Hkv}*{s.max_len}*{s.D}*"
                f"{BYTES_PER_ELEMENT[t.dtype]} = {want}\n  in "
                + t.where(f"kv_cache({s.B}, {s.Hkv}, {s.D}, {s.max_len}, {t.dtype!r})"),
                misbehaviour="wrong nbytes",
            )
