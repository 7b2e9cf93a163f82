"""flex_attention compiled, next to torch SDPA and the tiled kernels (group "tiled attention").

Opt-in: it runs only with `--impl flex`, because torch.compile takes tens of seconds per shape
on a CPU. The compilation happens once per shape, before and outside the timed rounds; its
time is part of the row's variant ("tiled flex, compiled in N s") and of extra_info. The
sdpa-* implementations need no benchmark of their own: with `--impl sdpa-flash` the existing
attention, prefill and tiled benchmarks time them, and their tiled rows carry "x SDPA time".
"""

import time

import pytest

from attnspec.implementations.discovery import last_line
from attnspec.reports.bench_plugin import BENCH
from attnspec.specs.cost import attention_cost
from attnspec.suite.bench.common import Inputs, check_attention, measure, need
from attnspec.suite.bench.grids import cases
from attnspec.suite.bench.test_bench_tiled import case_text
from attnspec.suite.plugin import session_of

pytestmark = [pytest.mark.bench, pytest.mark.benchmark(group="tiled attention")]


def pytest_generate_tests(metafunc):
    if "tiled_case" in metafunc.fixturenames:
        grid, ids = cases(metafunc.config.stash[BENCH].size, "tiled_attention")
        metafunc.parametrize("tiled_case", grid, ids=ids)


def selected(request, name):
    """The implementation named `name` among those the run selected (--impl), else None."""
    session = session_of(request.config)
    subjects = session.subjects if session is not None else []
    return next((s for s in subjects if s.name == name), None)


def test_flex_compiled(bench, request, dtype, tiled_case):
    """torch.compile(flex_attention) with the bottom-right causal mask_mod, on the tiled shapes."""
    flex = selected(request, "flex")
    if flex is None:
        pytest.skip("run with --impl flex (compiling flex_attention takes tens of seconds a shape)")
    need(flex, dtype, "attention")
    compiled = flex.compiled()
    case = tiled_case
    B, Hq, Hkv, D, T = (case[k] for k in ("B", "Hq", "Hkv", "D", "T"))
    inputs = Inputs(compiled, dtype)
    k = inputs.normal(B, Hkv, T, D)  # (B, Hkv, T, D)
    v = inputs.normal(B, Hkv, T, D)  # (B, Hkv, T, D)
    start = time.perf_counter()
    try:
        compiled.attention(inputs.normal(B, Hq, T, D), k, v, causal=True)  # compiles this shape
    except Exception as exc:  # e.g. no C++ compiler for inductor on this CPU machine
        pytest.skip(f"torch.compile(flex_attention) cannot compile here: {last_line(exc)}")
    compile_s = time.perf_counter() - start

    def check(timed):
        check_attention(inputs, timed.result, *timed.args, causal=True, what=f"flex {case}")

    measure(
        bench,
        compiled,
        dtype,
        lambda q, k, v: compiled.attention(q, k, v, causal=True),
        lambda: (inputs.normal(B, Hq, T, D), k, v),
        group="tiled attention",
        variant=f"tiled flex, compiled in {compile_s:.0f} s",
        case=case_text(case),
        shape=case,
        cost=lambda E: attention_cost(B, Hq, Hkv, T, T, D, D, E, causal=True),
        clause="ATTN-REF",
        check=check,
        extras={"compile_seconds": compile_s},
    )
