"""Causal linear attention clauses: every form equals the prefix-accumulator definition.

The forms (parallel `linear_attention`, token-by-token `linear_attention_recurrent`, and
`linear_attention_chunked`) are cheaper or differently ordered computations of one function;
the clauses check each against the float64 reference, against each other, across a split of
the sequence, and across a prefill-then-decode, on awkward lengths (63, 500) that chunk sizes
do not divide (the flash-linear-attention test habit).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from attnspec.specs.clauses import clause
from attnspec.specs.reference import linear as ref
from attnspec.specs.runner import NotImplementedByImpl, Target, call_text
from attnspec.specs.strategies import (
    LinShape,
    Options,
    chunk_sizes,
    cut_points,
    lin_cases,
    normal,
    options,
    seeds,
)
from attnspec.specs.tolerance import assert_close, budget

LEAK_SCALE = 1e3  # perturbed values: a leaked weight of 1e-3 moves an output by about 1
STATEFUL_FORMS = ("linear_attention_recurrent", "linear_attention_chunked")  # return (o, state)
FORMS = ("linear_attention", *STATEFUL_FORMS)
BASELINE_ROWS = 256  # past 512 tokens the plain baseline runs on the last rows only
LONG_T = 4097  # the longest sequence the chunked-only clauses draw
PARALLEL_T = 1025  # the longest sequence clauses that run the parallel (T x T) form draw


def draw_qkv(
    t: Target, data: st.DataObject, shape: LinShape, stream: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q, k, v for `shape`, rounded onto the working dtype; `stream` tells repeated calls apart
    (the first example draws every seed as 0)."""
    rng = np.random.default_rng((data.draw(seeds(), label="seed"), stream))
    q = normal(rng, shape.qk)  # (B, H, T, Dk)
    k = normal(rng, shape.qk)  # (B, H, T, Dk)
    v = normal(rng, shape.v)  # (B, H, T, Dv)
    q, k, v = t.inputs(q, k, v)
    return q, k, v


def reduction(shape: LinShape) -> int:
    """The longest reduction: the prefix sums over T, or the feature dot products over Dk."""
    return max(shape.T, shape.Dk)


def ref_budget(
    t: Target,
    shape: LinShape,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    opts: Options,
    *,
    causal: bool = True,
) -> tuple[np.ndarray, float]:
    """The float64 reference output and the error budget for an output compared to it.

    Over a long sequence the plain same-precision baseline runs on its last BASELINE_ROWS
    positions (the longest sums): the budget without a T x T product.
    """
    expected = ref.linear_attention_ref(q, k, v, causal=causal, **opts.kwargs)
    rows = BASELINE_ROWS if shape.T > 2 * BASELINE_ROWS else None
    baseline = ref.linear_attention_plain(
        q, k, v, causal=causal, precision=t.dtype, rows=rows, **opts.kwargs
    )
    tail = expected[:, :, -baseline.shape[2] :]  # (B, H, rows, Dv)
    return expected, budget(t.dtype, reduction(shape), tail, baseline)


def parallel(
    t: Target, q: np.ndarray, k: np.ndarray, v: np.ndarray, opts: Options, *, causal: bool = True
) -> np.ndarray:
    """The parallel form's output, checked for shape and dtype."""
    shape = (*q.shape[:3], v.shape[-1])
    return t.call("linear_attention", q, k, v, causal=causal, expect_shape=shape, **opts.kwargs)


def stateful(
    t: Target,
    op: str,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    opts: Options,
    *,
    state: Any = None,
    **kwargs: Any,
) -> tuple[np.ndarray, Any]:
    """Run a form that returns (o, state); the state stays native, to be passed back as is."""
    __tracebackhide__ = True
    natives = tuple(t.native(x) for x in (q, k, v))
    shown = {**kwargs, **opts.kwargs, "state": None if state is None else "<carried>"}
    text = call_text(op, natives, shown)
    before = [t.numpy(x) for x in natives]
    fn = getattr(t.impl, op)
    out = t.call_pair(text, "o, state", fn, *natives, state=state, **kwargs, **opts.kwargs)
    t.unchanged(natives, before, text)
    return t.result(out[0], text, (*q.shape[:3], v.shape[-1])), out[1]


def run_form(
    t: Target, op: str, q: np.ndarray, k: np.ndarray, v: np.ndarray, opts: Options, chunk_size: int
) -> np.ndarray:
    """The causal output of form `op` on the whole sequence from an empty state."""
    if op == "linear_attention":
        return parallel(t, q, k, v, opts)
    extra = {"chunk_size": chunk_size} if op == "linear_attention_chunked" else {}
    return stateful(t, op, q, k, v, opts, **extra)[0]


@clause(
    "LIN-REF",
    "the parallel form equals the float64 prefix-accumulator definition, causal or not, "
    "for the ReLU and elu+1 feature maps",
    needs=("linear_attention",),
)
def lin_ref(t: Target, data: st.DataObject) -> None:
    causal = data.draw(st.booleans(), label="causal")
    shapes = data.draw(lin_cases(max_long_T=PARALLEL_T), label="shapes")
    opts = data.draw(options(), label="options")
    calls = shapes * 2  # each shape twice, interleaved, fresh inputs every call
    for n, shape in enumerate(calls):
        q, k, v = draw_qkv(t, data, shape, stream=n)
        out = parallel(t, q, k, v, opts, causal=causal)
        expected, tol = ref_budget(t, shape, q, k, v, opts, causal=causal)
        what = t.where(
            f"call {n + 1} of {len(calls)} (fresh inputs each): linear_attention(q{shape.qk}, "
            f"k{shape.qk}, v{shape.v}, causal={causal}, feature_map={opts.feature_map!r}, "
            f"eps={opts.eps})"
        )
        assert_close(out, expected, dtype=t.dtype, n=reduction(shape), tol=tol, what=what)


@clause(
    "LIN-NO-FUTURE",
    "replacing q, k, v at positions after i leaves every output at positions up to i "
    "unchanged, in every form provided (a leaked weight of 1e-3 is caught)",
    needs=("linear_attention",),
)
def lin_no_future(t: Target, data: st.DataObject) -> None:
    for shape in data.draw(lin_cases(min_T=2, max_long_T=PARALLEL_T), label="shapes"):
        lin_no_future_case(t, data, shape)


def lin_no_future_case(t: Target, data: st.DataObject, shape: LinShape) -> None:
    """One shape of the clause."""
    opts = data.draw(options(), label="options")
    kept = data.draw(st.integers(1, shape.T - 1), label="positions kept")
    chunk = data.draw(chunk_sizes(shape.T), label="chunk_size")
    q, k, v = draw_qkv(t, data, shape)
    rng = np.random.default_rng(data.draw(seeds(), label="perturbation seed"))
    q2, k2, v2 = q.copy(), k.copy(), v.copy()
    future = q2[:, :, kept:].shape  # (B, H, T - kept, Dk)
    q2[:, :, kept:] = normal(rng, future, 10.0)
    # Positive keys: a ReLU feature map cannot zero out the leaked weight.
    k2[:, :, kept:] = np.abs(normal(rng, future, 10.0))
    v2[:, :, kept:] = normal(rng, v2[:, :, kept:].shape, LEAK_SCALE)
    q2, k2, v2 = t.inputs(q2, k2, v2)
    forms = [f for f in FORMS if t.has(f) and not (shape.long and f.endswith("recurrent"))]
    for op in forms:
        before = run_form(t, op, q, k, v, opts, chunk)[:, :, :kept]  # (B, H, kept, Dv)
        after = run_form(t, op, q2, k2, v2, opts, chunk)[:, :, :kept]  # (B, H, kept, Dv)
        what = t.where(
            f"{op}(q{shape.qk}, k{shape.qk}, v{shape.v}, feature_map={opts.feature_map!r}"
            + (f", chunk_size={chunk}" if op.endswith("chunked") else "")
            + f"): positions 0..{kept - 1} changed when positions {kept}..{shape.T - 1} "
            "(their future) were replaced"
        )
        assert_close(after, before, dtype=t.dtype, n=reduction(shape), what=what)


@clause(
    "LIN-FORMS-AGREE",
    "the recurrent and chunked forms (whichever are provided) equal the parallel form, for "
    "chunk sizes that do and do not divide T",
    needs=("linear_attention",),
)
def lin_forms_agree(t: Target, data: st.DataObject) -> None:
    provided = [op for op in STATEFUL_FORMS if t.has(op)]
    if not provided:
        raise NotImplementedByImpl(
            f"not implemented by {t.name}: {' or '.join(STATEFUL_FORMS)} "
            "(a form to compare with the parallel one)"
        )
    for shape in data.draw(lin_cases(max_long_T=PARALLEL_T), label="shapes"):
        lin_forms_agree_case(t, data, shape)


def lin_forms_agree_case(t: Target, data: st.DataObject, shape: LinShape) -> None:
    """One shape of the clause."""
    provided = [op for op in STATEFUL_FORMS if t.has(op)]
    opts = data.draw(options(), label="options")
    runs: list[tuple[str, dict[str, int]]] = []
    if "linear_attention_recurrent" in provided and not shape.long:
        runs.append(("linear_attention_recurrent", {}))
    if "linear_attention_chunked" in provided:
        T = shape.T
        low, high = (16, 128) if shape.long else (1, T + 3)  # kernel chunk sizes when long
        dividing = data.draw(
            st.sampled_from([c for c in range(low, min(high, T) + 1) if T % c == 0] or [T]),
            label="chunk size dividing T",
        )
        other = data.draw(
            st.sampled_from([c for c in range(max(low, 2), high + 1) if T % c]),
            label="chunk size not dividing T",
        )
        runs += [("linear_attention_chunked", {"chunk_size": c}) for c in (dividing, other)]
    q, k, v = draw_qkv(t, data, shape)
    want = parallel(t, q, k, v, opts)
    _, tol = ref_budget(t, shape, q, k, v, opts)
    for op, extra in runs:
        got, _ = stateful(t, op, q, k, v, opts, **extra)
        what = t.where(
            f"{op}(q{shape.qk}, k{shape.qk}, v{shape.v}, feature_map={opts.feature_map!r}"
            + "".join(f", {key}={val}" for key, val in extra.items())
            + f", eps={opts.eps}) vs linear_attention (the parallel form)"
        )
        assert_close(got, want, dtype=t.dtype, n=reduction(shape), tol=2 * tol, what=what)


@clause(
    "LIN-SPLIT-RESUME",
    "running the chunked form over positions [0, s) and then [s, T) from the carried state "
    "equals one pass from an empty state, for any s (and a call without a state starts empty)",
    needs=("linear_attention_chunked",),
)
def lin_split_resume(t: Target, data: st.DataObject) -> None:
    for shape in data.draw(lin_cases(min_T=2, max_long_T=LONG_T), label="shapes"):
        lin_split_resume_case(t, data, shape)


def lin_split_resume_case(t: Target, data: st.DataObject, shape: LinShape) -> None:
    """One shape of the clause."""
    opts = data.draw(options(), label="options")
    chunk = data.draw(chunk_sizes(shape.T), label="chunk_size")
    cuts = data.draw(cut_points(shape.T), label="split at")
    q, k, v = draw_qkv(t, data, shape)
    op = "linear_attention_chunked"
    whole, _ = stateful(t, op, q, k, v, opts, chunk_size=chunk)
    pieces, state = [], None
    for a, b in zip([0, *cuts], [*cuts, shape.T], strict=True):
        qa, ka, va = q[:, :, a:b], k[:, :, a:b], v[:, :, a:b]  # (B, H, b - a, D*)
        o, state = stateful(t, op, qa, ka, va, opts, state=state, chunk_size=chunk)
        pieces.append(o)
    _, tol = ref_budget(t, shape, q, k, v, opts)
    what = t.where(
        f"{op}(q{shape.qk}, k{shape.qk}, v{shape.v}, chunk_size={chunk}, "
        f"feature_map={opts.feature_map!r}, eps={opts.eps}) split at {cuts} with the state "
        "carried, vs one pass"
    )
    got = np.concatenate(pieces, axis=2)  # (B, H, T, Dv)
    assert_close(got, whole, dtype=t.dtype, n=reduction(shape), tol=2 * tol, what=what)


@clause(
    "LIN-DECODE-EQ-PREFILL",
    "after a chunked prefill of P tokens, recurrent steps of one token each from the carried "
    "state give the same outputs as running all P+N tokens at once",
    needs=("linear_attention_chunked", "linear_attention_recurrent"),
)
def lin_decode_eq_prefill(t: Target, data: st.DataObject) -> None:
    for shape in data.draw(lin_cases(min_T=2, max_long_T=LONG_T), label="shapes"):
        lin_decode_eq_prefill_case(t, data, shape)


def lin_decode_eq_prefill_case(t: Target, data: st.DataObject, shape: LinShape) -> None:
    """One shape of the clause."""
    opts = data.draw(options(), label="options")
    N = data.draw(st.integers(1, min(8, shape.T - 1)), label="decode steps N")
    P = shape.T - N
    chunk = data.draw(chunk_sizes(shape.T), label="chunk_size")
    q, k, v = draw_qkv(t, data, shape)
    chunked, recurrent = "linear_attention_chunked", "linear_attention_recurrent"
    whole, _ = stateful(t, chunked, q, k, v, opts, chunk_size=chunk)
    o, state = stateful(t, chunked, q[:, :, :P], k[:, :, :P], v[:, :, :P], opts, chunk_size=chunk)
    steps = [o]
    for i in range(P, shape.T):
        qi, ki, vi = q[:, :, i : i + 1], k[:, :, i : i + 1], v[:, :, i : i + 1]  # (B, H, 1, D*)
        o, state = stateful(t, recurrent, qi, ki, vi, opts, state=state)
        steps.append(o)
    _, tol = ref_budget(t, shape, q, k, v, opts)
    what = t.where(
        f"linear_attention_chunked(chunk_size={chunk}) prefill of {P} tokens then {N} "
        f"linear_attention_recurrent steps, q{shape.qk}, v{shape.v}, "
        f"feature_map={opts.feature_map!r}, eps={opts.eps}, vs all {shape.T} tokens at once"
    )
    got = np.concatenate(steps, axis=2)  # (B, H, T, Dv)
    assert_close(got, whole, dtype=t.dtype, n=reduction(shape), tol=2 * tol, what=what)
