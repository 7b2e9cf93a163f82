"""Cascade decode: B requests sharing a P-token prompt, each with its own suffix, two ways.

- dense: `varlen_attention` with one query per request over its whole cache (the shared prompt
  stored and read once per request, as an engine without prefix sharing does).
- cascade: the prompt attended once by all B queries (`varlen_attention`, one non-causal
  sequence, return_lse=True), the suffixes attended per request (causal, return_lse=True), and
  the two states merged (`merge_attention_states`): FlashInfer's cascade / vLLM's
  cascade_attention. Needs the "lse" option.

Each row's cost comes from attnspec.specs.cost_cascade.cascade_decode_cost (dense and cascade); the
cascade row names its measured speedup over the dense run beside the predicted one (dense
bytes / cascade bytes: decode is memory-bound).
"""

import numpy as np
import pytest

from attnspec.specs.cost_cascade import cascade_decode_cost
from attnspec.specs.reference.serving import sequence_attention
from attnspec.specs.tolerance import assert_close
from attnspec.suite.bench.common import Inputs, measure, need

pytestmark = [pytest.mark.bench, pytest.mark.benchmark(group="cascade decode")]

GROUP = "cascade decode"
MAX_ROUNDS = 3
WAYS = {"dense": ("varlen_attention",), "cascade": ("varlen_attention", "merge_attention_states")}


@pytest.mark.parametrize("way", list(WAYS))
def test_cascade_decode(bench, impl, dtype, case, way):
    """Decode over a shared prompt: dense reads the prompt once per request, cascade once."""
    need(impl, dtype, *WAYS[way])
    if way == "cascade" and "lse" not in (getattr(impl, "options", None) or ()):
        pytest.skip(f"{impl.name} does not declare the 'lse' option")
    B, P, S = case["B"], case["P"], case["suffix"]
    Hq, Hkv, D = case["Hq"], case["Hkv"], case["D"]
    inputs = Inputs(impl, dtype)
    k_pre, v_pre = (inputs.normal(P, Hkv, D) for _ in range(2))  # (P, Hkv, D)
    k_own, v_own = (inputs.normal(B * S, Hkv, D) for _ in range(2))  # (B*S, Hkv, D)
    kp, vp, ko, vo = (inputs.numpy(x) for x in (k_pre, v_pre, k_own, v_own))
    keys = [np.concatenate([kp, ko[b * S : (b + 1) * S]]) for b in range(B)]  # (P+S, Hkv, D)
    values = [np.concatenate([vp, vo[b * S : (b + 1) * S]]) for b in range(B)]
    ints = lambda x: impl.asarray(np.asarray(x), "int32")  # noqa: E731
    one_each = ints(np.arange(B + 1))
    text = f"B={B} P={P} suffix={S} H={Hq}/{Hkv} D={D}"
    model = cascade_decode_cost(P, [S] * B, Hq, Hkv, D, 2)

    def queries():
        return (inputs.normal(B, Hq, D),)  # (B, Hq, D) one decode token per request

    if way == "dense":
        k_all = impl.asarray(np.concatenate(keys), dtype)  # (B*(P+S), Hkv, D)
        v_all = impl.asarray(np.concatenate(values), dtype)
        cu_k = ints(np.arange(B + 1) * (P + S))

        def run(q):
            return impl.varlen_attention(
                q, k_all, v_all, cu_seqlens_q=one_each, cu_seqlens_k=cu_k, causal=True
            )

        cost = lambda E: cascade_decode_cost(P, [S] * B, Hq, Hkv, D, E).dense  # noqa: E731
    else:
        shared_q, shared_k = ints([0, B]), ints([0, P])
        cu_own = ints(np.arange(B + 1) * S)

        def run(q):
            o_pre, lse_pre = impl.varlen_attention(
                q, k_pre, v_pre, cu_seqlens_q=shared_q, cu_seqlens_k=shared_k, causal=False,
                return_lse=True,
            )  # fmt: skip
            o_own, lse_own = impl.varlen_attention(
                q, k_own, v_own, cu_seqlens_q=one_each, cu_seqlens_k=cu_own, causal=True,
                return_lse=True,
            )  # fmt: skip
            return impl.merge_attention_states(o_pre, lse_pre, o_own, lse_own)[0]

        cost = lambda E: cascade_decode_cost(P, [S] * B, Hq, Hkv, D, E).cascade  # noqa: E731

    def check(timed):
        q = inputs.numpy(timed.args[0])  # (B, Hq, D)
        out = np.asarray(impl.to_numpy(timed.result), np.float64)  # (B, Hq, D)
        for b in range(B):
            qb = q[b : b + 1]
            assert_close(
                out[b : b + 1],
                sequence_attention(qb, keys[b], values[b], causal=True),
                dtype=dtype,
                n=max(D, P + S),
                baseline=sequence_attention(qb, keys[b], values[b], causal=True, precision=dtype),
                what=f"{way} cascade decode {text}: request {b}",
            )

    measure(
        bench, impl, dtype, run, queries, group=GROUP, variant=way, case=text,
        shape={**case}, cost=cost, clause="CASCADE-EQ-DENSE" if way == "cascade" else "VARLEN-EQ-PER-SEQ",
        check=check, extras={"options": sorted(supported_of(impl))}, max_rounds=MAX_ROUNDS,
    )  # fmt: skip
    compare_with_dense(bench, model.byte_ratio)


def supported_of(impl):
    """The options the implementation declares."""
    return frozenset(getattr(impl, "options", None) or ())


def compare_with_dense(bench, predicted):
    """Name the cascade run's measured speedup over the dense run of the same case, impl and
    dtype beside the predicted one (whichever of the two runs last does it)."""
    last = bench.state.records[-1]
    mine = {
        r.variant.split()[0]: r
        for r in bench.state.records
        if (r.group, r.case, r.impl, r.dtype) == (GROUP, last.case, last.impl, last.dtype)
    }
    dense, cascade = mine.get("dense"), mine.get("cascade")
    if cascade is None:
        return
    cascade.extras["predicted_dense_over_cascade"] = predicted
    if dense is None or dense.seconds is None or cascade.seconds is None:
        return
    measured = dense.seconds / cascade.seconds
    cascade.extras["measured_dense_over_cascade"] = measured
    cascade.variant = f"cascade ({measured:.1f}x dense's speed; predicted {predicted:.1f}x)"
