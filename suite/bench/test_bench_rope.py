"""RoPE: rotating Llama-3-8B's queries and keys is an elementwise op, so pure bandwidth.

Two rows per implementation: a prefill chunk (consecutive positions past 8k) and a decode batch
(one token per sequence at scattered positions up to 131,072), both with Llama 3.1's base and
scaling, q and k together (32 + 8 heads of 128). Each row's cost is attnspec.specs.cost_rope.rope_cost
and its limit a contiguous copy of the same bytes; the output is checked against the float64
reference within ROPE-REF's budget.
"""

import numpy as np
import pytest

from attnspec.reports.bench_plugin import BENCH
from attnspec.specs.cost_rope import rope_cost
from attnspec.specs.reference.rope import rope as rope_reference
from attnspec.specs.rope import LLAMA31, RopeCase, budget
from attnspec.specs.tolerance import assert_close
from attnspec.suite.bench.common import Inputs, copy_probe, measure, need

pytestmark = [pytest.mark.bench, pytest.mark.benchmark(group="rope")]

GROUP = "rope"
LLAMA3_8B = {"H": 32 + 8, "D": 128, "base": 500000.0}  # q and k heads rotated in one call
CHUNK_START = 8192  # a prefill chunk past Llama 3's original context
MAX_POSITION = 131072
MAX_ROUNDS = 10
# Tokens per row at each --bench-size: (prefill chunk, decode batch).
TOKENS = {"small": (128, 16), "default": (512, 64), "large": (8192, 256)}


def pytest_generate_tests(metafunc):
    if "rope_case" in metafunc.fixturenames:
        chunk, batch = TOKENS[metafunc.config.stash[BENCH].size]
        cases = [("prefill chunk", chunk), ("decode batch", batch)]
        metafunc.parametrize("rope_case", cases, ids=[f"{w.split()[0]}-T={t}" for w, t in cases])


def test_rope(bench, impl, dtype, rope_case):
    """Rotate Llama-3-8B's q and k for a prefill chunk or a decode batch; equals the reference."""
    need(impl, dtype, "rope")
    what, T = rope_case
    H, D, base = LLAMA3_8B["H"], LLAMA3_8B["D"], LLAMA3_8B["base"]
    inputs = Inputs(impl, dtype)
    if what == "prefill chunk":
        pos = CHUNK_START + np.arange(T)  # (T,)
    else:
        pos = inputs.rng.integers(0, MAX_POSITION, T)  # (T,)
    positions = impl.asarray(pos.astype(np.int64), "int64")
    case = RopeCase(T, H, D, None, "neox", base, LLAMA31)

    def check(timed):
        x = inputs.numpy(timed.args[0])  # (T, H, D)
        out = np.asarray(impl.to_numpy(timed.result), np.float64)
        assert_close(
            out,
            rope_reference(x, pos, **case.options),
            dtype=dtype,
            n=2,
            tol=budget(dtype, x, pos, case),
            what=f"rope {what} x({T},{H},{D}) on {impl.name} [{dtype}]",
        )

    nbytes = 2 * T * H * D * 4  # x read and written, float32
    measure(
        bench,
        impl,
        dtype,
        lambda x, p: impl.rope(x, p, base=base, style="neox", scaling=LLAMA31),
        lambda: (inputs.normal(T, H, D), positions),
        group=GROUP,
        variant=what,
        case=f"Llama-3-8B q+k T={T} H={H} D={D}",
        shape={"T": T, "H": H, "D": D},
        cost=lambda E: rope_cost(T, H, D, E),
        clause="ROPE-SCALING",
        check=check,
        max_rounds=MAX_ROUNDS,
        floor_args=lambda: (inputs.normal(1, 1, 2), impl.asarray(np.zeros(1, np.int64), "int64")),
        # Untimed, no probe: copy_probe allocates its streaming buffer before it asks.
        probe=(lambda: copy_probe(bench, impl, nbytes, "x read and written"))
        if bench.timed
        else None,
    )
