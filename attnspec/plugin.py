"""attnspec's pytest entry point (group `pytest11`): its options, and the suite when asked.

pytest loads this module into every session of an environment attnspec is installed in, a
kernel repository's own test suite included, so it stays cheap: it registers the `attnspec`
option group and nothing else. Only a session that asks for attnspec — an attnspec option on
the command line, $ATTNSPEC_IMPL, or a test path inside attnspec's suite (`pytest suite` in a
checkout, `--pyargs attnspec.suite`, the `attnspec` command) — imports the contract and the
plugins that run it (attnspec.suite.plugin, attnspec.reports.bench_plugin).

The help texts name the choices literally (dtypes, tiers, model shapes) so that `pytest --help`
imports nothing; suite/meta/test_plugin_entry.py checks them against the contract.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# --- Conformance options (resolved in attnspec.suite.plugin_options) ---------------------------
OPT_IMPL = "--impl"
OPT_DEVICE = "--device"
OPT_DTYPE = "--dtype"
OPT_TIER = "--tier"
OPT_REPORT_DIR = "--report-dir"
OPT_CALL_TIMEOUT = "--call-timeout"
OPT_KNOWN = "--known-failures"
OPT_REPRODUCE = "--reproduce"
OPT_SELF_TEST = "--self-test"
OPT_SHAPES = "--shapes"
# --- Benchmark options (resolved in attnspec.reports.bench_state) ------------------------------
OPT_BENCH_SIZE = "--bench-size"
OPT_PEAK_FLOPS = "--peak-flops"
OPT_BANDWIDTH = "--bandwidth"
OPT_RECALIBRATE = "--recalibrate"
OPT_THREADS = "--bench-threads"
OPT_REPEAT = "--repeat-report"

ENV_IMPL = "ATTNSPEC_IMPL"  # comma-separated, same forms as --impl
DTYPES = ("float32", "float16", "bfloat16", "float64")
TIERS = ("smoke", "default", "thorough")
SHAPES = "Llama-3-8B, Llama-3-70B, Mistral-7B, Qwen2-7B, Gemma-2-9B, Phi-3-mini, GPT-2, Falcon-7B"
DEFAULT_CALL_TIMEOUT_S = 60.0
REPORT_DIR_HELP = "reports/out in a checkout of attnspec, else attnspec-report in the rootdir"
SUITE_PLUGINS = ("attnspec.suite.plugin", "attnspec.reports.bench_plugin")
DEFAULTS: dict[str, object] = {}  # option -> its default: another value means "run attnspec"


def add(group: pytest.OptionGroup, name: str, **kwargs: object) -> None:
    """One option of the group, remembering its default."""
    DEFAULTS[name] = kwargs.get("default", False if kwargs.get("action") == "store_true" else None)
    group.addoption(name, **kwargs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """The attnspec option group: conformance and benchmark options."""
    group = parser.getgroup("attnspec", "attnspec conformance and benchmarks")
    add(
        group,
        OPT_IMPL,
        action="append",
        default=[],
        metavar="LOCATOR",
        help="implementation to test (repeatable): a shipped name (numpy, torch), "
        "module:attr, path/to/file.py[:attr], or an entry-point name. "
        f"Default: ${ENV_IMPL}, else every shipped and registered one that imports.",
    )
    add(
        group,
        OPT_DEVICE,
        default=None,
        help="torch device for implementations that support one (default: cuda if available, else cpu)",
    )
    add(
        group,
        OPT_DTYPE,
        action="append",
        default=[],
        metavar="DTYPE",
        help=f"working dtype (repeatable): {', '.join(DTYPES)}. Default: every dtype an "
        f"implementation named by {OPT_IMPL} declares (at --tier smoke its first half-precision "
        "one); float32 for the default implementations and the benchmarks.",
    )
    add(
        group,
        OPT_TIER,
        default=None,
        help=f"run tier: {', '.join(TIERS)} (default: $ATTNSPEC_TIER, else default)",
    )
    add(
        group,
        OPT_CALL_TIMEOUT,
        type=float,
        default=DEFAULT_CALL_TIMEOUT_S,
        metavar="SECONDS",
        help="time limit for one call into an implementation; a hang fails that clause "
        f"(default {DEFAULT_CALL_TIMEOUT_S:g}; 0 disables)",
    )
    add(
        group,
        OPT_KNOWN,
        default=None,
        metavar="FILE",
        help="file of known failures (one 'SELECTOR  # reason' per line); listed tests are "
        "xfail(strict), entries that match nothing warn",
    )
    add(
        group,
        OPT_REPRODUCE,
        default=None,
        metavar="BLOB",
        help="replay one failing example: the blob from the @reproduce_failure line of a failure "
        "(run it with that failure's test id)",
    )
    add(
        group,
        OPT_SHAPES,
        default=None,
        metavar="MODEL",
        help=f"draw only one real model's attention shapes (a slice of its KV head groups): {SHAPES}",
    )
    add(
        group,
        OPT_REPORT_DIR,
        default=None,
        help=f"folder for generated reports (default: {REPORT_DIR_HELP})",
    )
    add(
        group,
        OPT_SELF_TEST,
        action="store_true",
        help="also run the suite's self-tests (mutants, gallery, registry, plugin runs) when "
        f"{OPT_IMPL} or ${ENV_IMPL} names implementations (a plain run includes them)",
    )
    add(
        group,
        OPT_BENCH_SIZE,
        default="default",
        metavar="SIZE",
        help="benchmark sizes: small (seconds, for CI), default (a few minutes on a 2-core "
        "CPU; GPU runs get the large grid), large",
    )
    add(
        group,
        OPT_PEAK_FLOPS,
        default=None,
        metavar="RATE",
        help="override the device's peak FLOP/s",
    )
    add(
        group,
        OPT_BANDWIDTH,
        default=None,
        metavar="RATE",
        help="override the device's bandwidth (B/s)",
    )
    add(
        group, OPT_RECALIBRATE, action="store_true", help="measure the device roof again (no cache)"
    )
    add(
        group,
        OPT_THREADS,
        default=None,
        metavar="N",
        help="CPU threads for torch during benchmarks",
    )
    add(
        group,
        OPT_REPEAT,
        default=None,
        metavar="N",
        help="run every benchmark N times (pass after pass) and report, per row, the spread "
        "of the %% of roof and whether the verdict changed",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Load the suite's plugins when this session asks for attnspec; else stay inert."""
    if not asked(config):
        return
    for name in SUITE_PLUGINS:
        if name.endswith("bench_plugin") and not hasattr(
            config.hook, "pytest_benchmark_update_json"
        ):
            continue  # pytest-benchmark is not loaded (plugin autoloading off): no benchmarks
        if config.pluginmanager.get_plugin(name) is None:
            config.pluginmanager.import_plugin(name)


def suite_dir() -> Path | None:
    """Where attnspec's test suite lives (found without importing it)."""
    spec = importlib.util.find_spec("attnspec.suite")
    return Path(spec.origin).resolve().parent if spec is not None and spec.origin else None


def asked(config: pytest.Config) -> bool:
    """Whether this session runs attnspec: an attnspec option given, $ATTNSPEC_IMPL set, or a
    test path (or --pyargs module) inside attnspec's suite, or the folder that holds it."""
    if os.environ.get(ENV_IMPL):
        return True
    if any(config.getoption(name) != default for name, default in DEFAULTS.items()):
        return True
    home = suite_dir()
    here = Path(config.invocation_params.dir)
    for arg in config.args:
        target = arg.split("::")[0]
        if config.getoption("pyargs", False) and target.split(".")[0] == "attnspec":
            return True
        path = (here / target).resolve()
        # Inside the suite, or the folder that holds it (`pytest .` in a checkout); not any
        # folder above it: a project's own venv may hold an installed attnspec.
        if home is not None and (path.is_relative_to(home) or path == home.parent):
            return True
    return False
