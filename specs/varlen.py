"""Varlen clauses: a packed (ragged) batch in the flash-attn layout is each sequence's own attention.

q is packed (total_q, Hq, D), k and v (total_k, Hkv, D); cu_seqlens_q and cu_seqlens_k (B+1,)
int32 offsets say where each sequence's rows start. Sequence b's queries sit at the end of its
keys (bottom-right causal alignment). Batches mix sequences with no queries, one query, a few
dozen, and (often) one long sequence past 1024 keys, where the window and softcap options an
implementation declares are drawn first (a long path that forgets an option is a real bug).
Draws stay inside the implementation's declared limits (attnspec.specs.limits: head dims, causal-only
ops, the non-causal window convention). The helpers here (ragged shapes, options, the guarded
call with index arguments, per-sequence comparison) serve attnspec.specs.paged too.

A query that sees no key (under a symmetric non-causal window, a query far enough before its
sequence's keys) is compared only where the implementation declares "empty_rows" (then it must be
exactly 0, attnspec.specs.merge); elsewhere it is outside the contract and left out of the
comparison, never out of the draws: the other rows of such a call are still compared.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs import limits
from attnspec.specs.attention import LEAK_SCALE, logit_error
from attnspec.specs.clauses import ClauseFailure, clause
from attnspec.specs.reference.attention import visible_mask
from attnspec.specs.reference.serving import dense, sequence_attention, sequence_magnitude
from attnspec.specs.runner import NotImplementedByImpl, Target
from attnspec.specs.strategies import normal, scales, seeds
from attnspec.specs.tolerance import assert_close, budget

LONG = (1025, 2049, 1024, 1500)  # a long sequence in a ragged batch: past 1024 keys mostly
PAST = 1024  # a sequence longer than this takes a kernel's long path: options drawn first
LONG_PREFILL = 1025  # longest whole prefill (Tq = Tk) of a long sequence; past it, few queries
SMALL_HEAD_DIMS = (1, 8, 16, 17, 32)  # with a long sequence (keeps the float64 reference cheap)
HEAD_DIMS = (*SMALL_HEAD_DIMS, 63, 64, 80, 128)
MLA_DIMS = (192, 128)  # DeepSeek-V2/V3: D = 192 (128 + 64 RoPE dims) over values of Dv = 128
FAR_LOGITS = 30.0  # q, k scale for other sequences in VARLEN-NO-CROSS: logits in the hundreds


@dataclass(frozen=True)
class Ragged:
    """A packed batch: per-sequence query and key counts, heads and head dims."""

    q_lens: tuple[int, ...]
    k_lens: tuple[int, ...]
    Hq: int
    Hkv: int
    D: int
    Dv: int

    @property
    def cu_q(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.q_lens)]).astype(np.int32)  # (B+1,)

    @property
    def cu_k(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.k_lens)]).astype(np.int32)  # (B+1,)

    @property
    def out(self) -> tuple[int, int, int]:
        return (sum(self.q_lens), self.Hq, self.Dv)


@st.composite
def ragged_batches(
    draw: st.DrawFn, *, causal: bool, max_B: int = 5, max_T: int = 40, long: bool = True
) -> Ragged:
    """1..max_B sequences of 0, 1 or a few dozen queries (at least one sequence has some) over
    1..max_T keys, and often one long sequence (decode, 7 queries or a whole prefill past 1024
    keys); head dims (D and Dv, DeepSeek's 192/128 among them) inside the declared limits."""
    B = draw(st.integers(1, max_B), label="sequences")
    q_lens, k_lens = [], []
    for _ in range(B):
        k_len = draw(st.integers(1, max_T), label="keys")
        most = k_len if causal else max_T
        q_len = draw(st.one_of(st.just(0), st.just(1), st.integers(0, most)), label="queries")
        q_lens.append(q_len)
        k_lens.append(k_len)
    with_long = long and draw(st.integers(0, 2), label="one long sequence (if 0)") == 0
    if with_long:
        b = draw(st.integers(0, B - 1), label="long sequence")
        k_lens[b] = draw(st.sampled_from(LONG), label="its keys")
        whole = [k_lens[b]] if k_lens[b] <= LONG_PREFILL else []
        q_lens[b] = draw(st.sampled_from([1, 7, *whole]), label="its queries")
    if not any(q_lens):
        q_lens[draw(st.integers(0, B - 1), label="sequence given a query")] = 1
    prefill = with_long and max(q_lens) > PAST // 2  # a long whole prefill: one head (cost)
    Hkv = draw(st.integers(1, 1 if prefill else 2 if with_long else 3), label="Hkv")
    G = draw(st.integers(1, 1 if prefill else 2 if with_long else 5), label="Hq/Hkv")
    D = draw(st.sampled_from(SMALL_HEAD_DIMS if with_long else HEAD_DIMS), label="D")
    Dv = draw(st.one_of(st.just(D), st.sampled_from(SMALL_HEAD_DIMS)), label="Dv")
    if not with_long and draw(st.integers(0, 3), label="DeepSeek's 192/128 (if 0)") == 0:
        D, Dv = MLA_DIMS
    lim = limits.current()
    return Ragged(tuple(q_lens), tuple(k_lens), Hkv * G, Hkv, lim.head_dim(D), lim.head_dim(Dv))


def supported(t: Target) -> frozenset[str]:
    """The options (window, softcap) the implementation declares in its `options` attribute."""
    return frozenset(getattr(t.impl, "options", None) or ())


def require_option(t: Target, option: str) -> None:
    """Skip the clause unless the implementation declares `option`."""
    if option not in supported(t):
        raise NotImplementedByImpl(
            f"{t.name} does not declare the {option!r} option (options = {sorted(supported(t))})"
        )


def windows(longest: int) -> st.SearchStrategy[int]:
    """Windows of 1, inside the sequence, and at or past its length."""
    return st.one_of(st.just(1), st.integers(1, max(longest, 1)), st.just(longest + 3))


def softcaps() -> st.SearchStrategy[float]:
    """Caps as models use them (Gemma 2: 50 on attention logits) and tight ones."""
    return st.one_of(st.sampled_from([50.0, 30.0]), st.floats(0.5, 20.0))


def draw_options(
    t: Target, data: st.DataObject, longest: int, *, causal: bool, prefer: bool = False
) -> dict[str, Any]:
    """scale, and window / softcap where the implementation declares them (else None); with
    `prefer` (a long path) an option is drawn before None. A non-causal window is drawn only
    where the declared window convention takes one."""
    opts: dict[str, Any] = {"scale": data.draw(scales(), label="scale")}
    for option, strategy in (("window", windows(longest)), ("softcap", softcaps())):
        if option in supported(t):
            either = (strategy, st.none()) if prefer else (st.none(), strategy)
            opts[option] = data.draw(st.one_of(*either), label=option)
    if opts.get("window") is not None and not causal and not limits.current().noncausal_window():
        opts["window"] = None
    return opts


def convention(opts: dict[str, Any], *, causal: bool) -> dict[str, Any]:
    """The reference's options for a call made with `opts`: a non-causal window follows the
    convention the implementation declares (left, or symmetric |j - p| < w as in vLLM)."""
    if causal or opts.get("window") is None or limits.current().window != "symmetric":
        return opts
    return {**opts, "window_kind": "symmetric"}


def serve(
    t: Target,
    op: str,
    *positional: Any,
    arrays: dict[str, Any],
    plain: dict[str, Any],
    expect_shape: tuple[int, ...],
    watch: tuple[Any, ...] = (),
) -> np.ndarray:
    """A guarded call of a serving op with native positional arguments and native index arrays
    (`arrays`, as keywords); the arrays and `watch` (e.g. the pool's pages) must come back
    unchanged, and the result has the working dtype and `expect_shape`."""
    __tracebackhide__ = True
    return t.call_native(
        op,
        *positional,
        expect_shape=expect_shape,
        watch=(*arrays.values(), *watch),
        **arrays,
        **plain,
    )


def index(t: Target, x: np.ndarray) -> Any:
    """An int32 index array (offsets, lengths, block table, slots) in the implementation's arrays."""
    return t.native(np.asarray(x, np.int32), "int32")


def seen_rows(
    t: Target, out: np.ndarray, Tk: int, *, causal: bool, opts: dict[str, Any], what: str
) -> np.ndarray:
    """(Tq,) the queries of one sequence that see a key, for output rows `out` (Tq, ...) over Tk
    keys under the reference's options. The others must be exactly 0 where the implementation
    declares "empty_rows"; elsewhere they are outside the contract and left out."""
    __tracebackhide__ = True
    window, kind = opts.get("window"), opts.get("window_kind", "left")
    seen = visible_mask(len(out), Tk, causal=causal, window=window, window_kind=kind).any(axis=1)
    zero = (out == 0).reshape(len(out), -1).all(axis=1)  # (Tq,) NaN is not 0
    bad = np.flatnonzero(~seen & ~zero)
    if "empty_rows" in supported(t) and bad.size:
        i = int(bad[0])
        raise ClauseFailure(
            f"query {i} sees no key, yet its output is {out[i].ravel()[:4]}..., not 0 "
            f"(the implementation declares 'empty_rows')\n  in {what}",
            misbehaviour="NaN/Inf" if not np.isfinite(out[bad]).all() else "wrong result",
            call=what,
        )
    return np.asarray(seen, bool)


def compare_sequences(
    t: Target,
    out: np.ndarray,
    q: np.ndarray,
    cu_q: np.ndarray,
    keys: list[np.ndarray],
    values: list[np.ndarray],
    *,
    causal: bool,
    opts: dict[str, Any],
    what: str,
) -> None:
    """Each sequence's rows of a packed output (total_q, Hq, Dv) against float64 dense attention
    over its own keys[b] (Tk, Hkv, D), within the budget of a plain same-precision run; rows
    that see no key as seen_rows says."""
    __tracebackhide__ = True
    opts = convention(opts, causal=causal)
    for b, (kb, vb) in enumerate(zip(keys, values, strict=True)):
        rows = slice(int(cu_q[b]), int(cu_q[b + 1]))
        if rows.stop == rows.start:
            continue
        where = t.where(
            f"{what}: sequence {b} (rows {rows.start}..{rows.stop - 1}, {kb.shape[0]} keys)"
        )
        seen = seen_rows(t, out[rows], kb.shape[0], causal=causal, opts=opts, what=where)
        if not seen.any():
            continue
        args = (q[rows], kb, vb)
        expected = sequence_attention(*args, causal=causal, **opts)  # (Tq, Hq, Dv)
        assert_close(
            np.where(seen[:, None, None], out[rows], expected),  # left-out rows: as expected
            expected,
            dtype=t.dtype,
            n=max(q.shape[2], kb.shape[0]),
            baseline=sequence_attention(*args, causal=causal, precision=t.dtype, **opts),
            magnitude=sequence_magnitude(*args, causal=causal, **opts),
            typical=logit_error(t.dtype, *map(dense, args), causal=causal, **opts),
            what=where,
        )


def draw_packed(
    t: Target, data: st.DataObject, r: Ragged
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Packed q (total_q, Hq, D), k (total_k, Hkv, D), v (total_k, Hkv, Dv) in the working dtype."""
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    q = normal(rng, (sum(r.q_lens), r.Hq, r.D))  # (total_q, Hq, D)
    k = normal(rng, (sum(r.k_lens), r.Hkv, r.D))  # (total_k, Hkv, D)
    v = normal(rng, (sum(r.k_lens), r.Hkv, r.Dv))  # (total_k, Hkv, Dv)
    q, k, v = t.inputs(q, k, v)
    return q, k, v


def varlen(t: Target, r: Ragged, q, k, v, *, causal: bool, opts: dict[str, Any]) -> np.ndarray:
    """The implementation's varlen_attention output (total_q, Hq, Dv)."""
    return serve(
        t,
        "varlen_attention",
        t.native(q),
        t.native(k),
        t.native(v),
        arrays={"cu_seqlens_q": index(t, r.cu_q), "cu_seqlens_k": index(t, r.cu_k)},
        plain={"causal": causal, **opts},
        expect_shape=r.out,
    )


def split(x: np.ndarray, cu: np.ndarray) -> list[np.ndarray]:
    """A packed array's rows per sequence."""
    return [x[int(a) : int(b)] for a, b in itertools.pairwise(cu)]


@clause(
    "VARLEN-EQ-PER-SEQ",
    "packed varlen attention equals each sequence's own dense attention (bottom-right causal "
    "or not, GQA, Dv != D, and the window and softcap options an implementation declares), for "
    "batches mixing sequences of 0, 1, a few dozen and over 1000 queries",
    needs=("varlen_attention",),
    examples=0.6,  # a third of the batches carry a long sequence
)
def varlen_eq_per_seq(t: Target, data: st.DataObject) -> None:
    causal = limits.current().causal("varlen_attention", data.draw(st.booleans(), label="causal"))
    r = data.draw(ragged_batches(causal=causal), label="batch")
    long = max(r.k_lens) > PAST
    opts = draw_options(t, data, max(r.k_lens), causal=causal, prefer=long)
    q, k, v = draw_packed(t, data, r)
    out = varlen(t, r, q, k, v, causal=causal, opts=opts)
    what = f"varlen_attention(q_lens={list(r.q_lens)}, k_lens={list(r.k_lens)}, causal={causal}, {opts})"
    compare_sequences(
        t, out, q, r.cu_q, split(k, r.cu_k), split(v, r.cu_k), causal=causal, opts=opts, what=what
    )


@clause(
    "VARLEN-NO-CROSS",
    "replacing every other sequence's q, k and v (with logits in the hundreds) leaves a "
    "sequence's varlen outputs unchanged (a leaked weight of 1e-3 across a boundary is caught)",
    needs=("varlen_attention",),
)
def varlen_no_cross(t: Target, data: st.DataObject) -> None:
    causal = limits.current().causal("varlen_attention", data.draw(st.booleans(), label="causal"))
    r = data.draw(ragged_batches(causal=causal, long=False), label="batch")
    b = data.draw(st.sampled_from([i for i, n in enumerate(r.q_lens) if n]), label="sequence kept")
    q, k, v = draw_packed(t, data, r)
    rng = np.random.default_rng(data.draw(seeds(), label="replacement seed"))
    q2, k2, v2 = q.copy(), k.copy(), v.copy()
    qs, ks = split(np.arange(len(q)), r.cu_q), split(np.arange(len(k)), r.cu_k)
    for other in (i for i in range(len(r.q_lens)) if i != b):
        q2[qs[other]] = normal(rng, q2[qs[other]].shape, FAR_LOGITS)
        k2[ks[other]] = normal(rng, k2[ks[other]].shape, FAR_LOGITS)
        v2[ks[other]] = normal(rng, v2[ks[other]].shape, LEAK_SCALE)
    q2, k2, v2 = t.inputs(q2, k2, v2)
    rows = qs[b]
    before = varlen(t, r, q, k, v, causal=causal, opts={})[rows]  # (q_len, Hq, Dv)
    after = varlen(t, r, q2, k2, v2, causal=causal, opts={})[rows]  # (q_len, Hq, Dv)
    args = (q[rows], k[ks[b]], v[ks[b]])
    expected = sequence_attention(*args, causal=causal)
    baseline = sequence_attention(*args, causal=causal, precision=t.dtype)
    magnitude = sequence_magnitude(*args, causal=causal)
    n = max(r.D, r.k_lens[b])
    assert_close(
        after,
        before,
        dtype=t.dtype,
        n=n,
        tol=2 * budget(t.dtype, n, expected, baseline, magnitude),
        magnitude=magnitude,
        what=t.where(
            f"varlen_attention(q_lens={list(r.q_lens)}, k_lens={list(r.k_lens)}, causal={causal}):"
            f" sequence {b}'s outputs changed when every other sequence's q, k, v were replaced"
        ),
    )
