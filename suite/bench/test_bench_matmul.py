"""Matmul X(B×D) @ W(D×F): the batching "carpool": intensity and throughput rise with B."""

import pytest

from attnspec.specs.cost import matmul_cost
from attnspec.suite.bench.common import Inputs, check_matmul, matmul_probe, measure, need

pytestmark = [pytest.mark.bench, pytest.mark.benchmark(group="matmul")]


def test_matmul(bench, impl, dtype, case):
    """X @ W with fresh X each round; intensity about B while B << D, F."""
    need(impl, dtype, "matmul")
    B, D, F = case["B"], case["D"], case["F"]
    inputs = Inputs(impl, dtype)
    w = inputs.shared(D, F)  # (D, F), the same in every case

    def check(timed):
        check_matmul(inputs, timed.result, *timed.args, what=f"matmul(x({B},{D}), w({D},{F}))")

    measure(
        bench,
        impl,
        dtype,
        impl.matmul,
        lambda: (inputs.normal(B, D), w),
        group="matmul",
        variant="X@W",
        case=f"B={B} D={D} F={F}",
        shape=case,
        cost=lambda E: matmul_cost(B, D, F, E),
        clause="",
        check=check,
        floor_args=lambda: (inputs.normal(1, 1), inputs.normal(1, 1)),
        probe=lambda: matmul_probe(bench, impl, dtype, 1, B, D, F, "X@W", right_transposed=False),
    )
