"""Causal linear attention: token-by-token recurrence vs the chunked form, and one decode step."""

import numpy as np
import pytest

from attnspec.specs.cost import (
    linear_attention_chunked_traffic,
    linear_attention_recurrent_step_cost,
    linear_attention_recurrent_traffic,
)
from attnspec.specs.reference.linear import linear_attention_ref, linear_state_ref
from attnspec.specs.tolerance import assert_close, floor
from attnspec.suite.bench.common import Inputs, matmul_probe, measure, need, output

pytestmark = [pytest.mark.bench, pytest.mark.benchmark(group="linear attention")]

PREFIX = 256  # tokens summarised by the state the decode-step benchmark starts from
STEP_WHY = "a few small ops (state update, two products) on a {kib:.0f} KiB state: per-op cost"


def state_bytes(dtype):
    """The implementations keep the state in float32 (float64 for float64 inputs)."""
    return 8 if dtype == "float64" else 4


def case_text(case):
    return f"B={case['B']} H={case['H']} T={case['T']} D={case['D']}"


def check_linear(inputs, y, q, k, v, *, state=None, what):
    """The output equals the float64 prefix-accumulator definition (LIN-REF)."""
    qn, kn, vn = inputs.numpy(q), inputs.numpy(k), inputs.numpy(v)
    out = output(inputs.impl, y, vn.shape, what)
    expected = linear_attention_ref(qn, kn, vn, causal=True, state=state)
    n = qn.shape[2] + (PREFIX if state is not None else 0)
    assert_close(out, expected, dtype=inputs.dtype, n=n, tol=floor(inputs.dtype, n), what=what)


def run_form(bench, impl, dtype, case, op, fn, variant, cost, probe=None, extras=None):
    need(impl, dtype, op)
    B, H, T, D = (case[k] for k in ("B", "H", "T", "D"))
    inputs = Inputs(impl, dtype)
    k = inputs.normal(B, H, T, D)  # (B, H, T, D)
    v = inputs.normal(B, H, T, D)  # (B, H, T, D)

    def check(timed):
        check_linear(inputs, timed.result[0], *timed.args, what=f"{op} {case}")

    measure(
        bench,
        impl,
        dtype,
        fn,
        lambda: (inputs.normal(B, H, T, D), k, v),
        group="linear attention",
        variant=variant,
        case=case_text(case),
        shape=case,
        cost=cost,
        clause="LIN-REF",
        check=check,
        floor_args=inputs.minimal(3),
        probe=probe,
        extras=extras,
    )


def test_linear_recurrent(bench, impl, dtype, case):
    """The recurrent form over T tokens, one state update per token."""
    B, H, T, D = (case[k] for k in ("B", "H", "T", "D"))
    op = "linear_attention_recurrent"
    run_form(
        bench,
        impl,
        dtype,
        case,
        op,
        lambda q, k, v: getattr(impl, op)(q, k, v),
        "recurrent",
        lambda E: linear_attention_recurrent_traffic(B, H, T, D, D, E, state_bytes(dtype)),
        extras={"why": "one Python step per token: the recurrent form is the lesson"},
    )


def test_linear_chunked(bench, impl, dtype, case):
    """The chunked form: masked intra-chunk products plus the carried state, as matmuls."""
    B, H, T, D, C = (case[k] for k in ("B", "H", "T", "D", "chunk"))
    op = "linear_attention_chunked"
    run_form(
        bench,
        impl,
        dtype,
        case,
        op,
        lambda q, k, v: getattr(impl, op)(q, k, v, chunk_size=C),
        f"chunked C={C}",
        lambda E: linear_attention_chunked_traffic(B, H, T, D, D, C, E, state_bytes(dtype)),
        probe=lambda: matmul_probe(bench, impl, dtype, B * H * -(-T // C), C, D, C, "φ(Q)φ(K)ᵀ"),
    )


def test_linear_step(bench, impl, dtype, case):
    """One recurrent decode step from a carried state: O(1) work per token, whatever the context."""
    op = "linear_attention_recurrent"
    need(impl, dtype, op)
    B, H, D = (case[k] for k in ("B", "H", "D"))
    inputs = Inputs(impl, dtype)
    rng = np.random.default_rng(1)
    s, z = linear_state_ref(
        rng.standard_normal((B, H, PREFIX, D)), rng.standard_normal((B, H, PREFIX, D))
    )  # (B, H, D, D), (B, H, D)
    state_dtype = "float64" if dtype == "float64" else "float32"
    state = (impl.asarray(s, state_dtype), impl.asarray(z, state_dtype))
    exact = (
        np.asarray(impl.to_numpy(state[0]), np.float64),
        np.asarray(impl.to_numpy(state[1]), np.float64),
    )

    tiny = (
        impl.asarray(np.zeros((1, 1, 1, 1)), state_dtype),
        impl.asarray(np.zeros((1, 1, 1)), state_dtype),
    )

    def check(timed):
        q, k, v, _ = timed.args
        check_linear(inputs, timed.result[0], q, k, v, state=exact, what=f"decode step {case}")

    measure(
        bench,
        impl,
        dtype,
        lambda q, k, v, s: getattr(impl, op)(q, k, v, state=s),
        lambda: (*(inputs.normal(B, H, 1, D) for _ in range(3)), state),
        group="linear attention",
        variant="step",
        case=f"B={B} H={H} D={D} (state of {PREFIX} tokens)",
        shape=case,
        cost=lambda E: linear_attention_recurrent_step_cost(B, H, D, D, E, state_bytes(dtype)),
        clause="LIN-REF",
        check=check,
        floor_args=lambda: (*inputs.minimal(3)(), tiny),
        extras={"why": STEP_WHY.format(kib=B * H * D * D * state_bytes(dtype) / 2**10)},
    )
