"""The benchmark plugin's options: a bad value is a one-line usage error, never a traceback."""

import types

import pytest

from attnspec.reports import bench_state
from attnspec.suite.meta import background

BAD = [
    (bench_state.size_option, bench_state.OPT_BENCH_SIZE, "huge"),
    (bench_state.threads_option, bench_state.OPT_THREADS, "0"),
    (bench_state.threads_option, bench_state.OPT_THREADS, "-3"),
    (bench_state.threads_option, bench_state.OPT_THREADS, "two"),
    (bench_state.threads_option, bench_state.OPT_THREADS, "1.5"),
    (
        lambda c: bench_state.rate_option(c, bench_state.OPT_PEAK_FLOPS, "peak FLOP/s"),
        bench_state.OPT_PEAK_FLOPS,
        "abc",
    ),
    (
        lambda c: bench_state.rate_option(c, bench_state.OPT_BANDWIDTH, "bandwidth"),
        bench_state.OPT_BANDWIDTH,
        "0",
    ),
    (
        lambda c: bench_state.rate_option(c, bench_state.OPT_BANDWIDTH, "bandwidth"),
        bench_state.OPT_BANDWIDTH,
        "inf",
    ),
]


def config(**values):
    """A stand-in for pytest.Config that answers getoption from `values`."""
    return types.SimpleNamespace(getoption=lambda name: values.get(name))


@pytest.mark.parametrize(("parse", "option", "value"), BAD, ids=[f"{o}={v}" for _, o, v in BAD])
def test_bad_value_is_a_usage_error(parse, option, value):
    """Each bad option value raises pytest.UsageError naming the option and the value."""
    with pytest.raises(pytest.UsageError) as err:
        parse(config(**{option: value}))
    message = str(err.value)
    assert option in message and repr(value) in message and "\n" not in message


def test_good_values_parse():
    """Good values come back as the size, a thread count and rates in plain numbers."""
    assert bench_state.size_option(config(**{bench_state.OPT_BENCH_SIZE: "small"})) == "small"
    assert bench_state.threads_option(config(**{bench_state.OPT_THREADS: "2"})) == 2
    assert bench_state.threads_option(config()) is None
    got = bench_state.rate_option(
        config(**{bench_state.OPT_PEAK_FLOPS: "989T"}), "--peak-flops", "peak"
    )
    assert got == 989e12


THREADS_ZERO = background.register(
    "bench-threads-zero",
    lambda folder: ["--benchmark-only", "--bench-threads", "0", "--collect-only", "-q"],
)


def test_bench_threads_zero_is_reported_by_pytest():
    """`pytest --benchmark-only --bench-threads 0` exits with a usage error, not an INTERNALERROR."""
    done = background.result(THREADS_ZERO)
    out = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, out[-2000:]
    assert "INTERNALERROR" not in out and "Traceback" not in out
    assert "ERROR: --bench-threads '0'" in out
