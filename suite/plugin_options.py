"""The attnspec plugin's options, and their resolution into the session's state.

Each option is an OPT_* constant and one addoption call in `add_options`; a value that can't
be used is a one-line pytest.UsageError. A new option goes into `add_options` (and, when it
needs resolving, a resolve_* function here read by AttnspecSession in suite/plugin.py).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

import suite
from implementations import discovery
from implementations.discovery import UnderTest
from specs import presets, profiles
from specs.dtypes import DTYPES
from specs.runner import DEFAULT_CALL_TIMEOUT_S
from suite import known_failures

CHECKOUT = Path(suite.__file__).resolve().parents[1]
REPORT_DIR_DEFAULT = CHECKOUT / "reports" / "out"

# --- Options: one OPT_* constant and one addoption each, all in the "attnspec" group. ----------
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


def add_options(parser: pytest.Parser) -> None:
    """The attnspec option group (the benchmark plugin adds its own options to it)."""
    group = parser.getgroup("attnspec", "attnspec conformance and benchmarks")
    group.addoption(
        OPT_IMPL,
        action="append",
        default=[],
        metavar="LOCATOR",
        help="implementation to test (repeatable): a shipped name (numpy, torch), "
        "module:attr, path/to/file.py[:attr], or an entry-point name. "
        f"Default: ${discovery.ENV_VAR}, else every shipped and registered one that imports.",
    )
    group.addoption(
        OPT_DEVICE,
        default=None,
        help="torch device for implementations that support one (default: cuda if available, else cpu)",
    )
    group.addoption(
        OPT_DTYPE,
        action="append",
        default=[],
        metavar="DTYPE",
        help=f"working dtype (repeatable): {', '.join(DTYPES)}. Default: every dtype an "
        f"implementation named by {OPT_IMPL} declares (at --tier smoke its first half-precision "
        "one); float32 for the default implementations and the benchmarks.",
    )
    group.addoption(
        OPT_TIER,
        default=None,
        help=f"run tier: {', '.join(profiles.TIERS)} (default: ${profiles.TIER_ENV}, else default)",
    )
    group.addoption(
        OPT_CALL_TIMEOUT,
        type=float,
        default=DEFAULT_CALL_TIMEOUT_S,
        metavar="SECONDS",
        help="time limit for one call into an implementation; a hang fails that clause "
        f"(default {DEFAULT_CALL_TIMEOUT_S:g}; 0 disables)",
    )
    group.addoption(
        OPT_KNOWN,
        default=None,
        metavar="FILE",
        help="file of known failures (one 'SELECTOR  # reason' per line); listed tests are "
        "xfail(strict), entries that match nothing warn",
    )
    group.addoption(
        OPT_REPRODUCE,
        default=None,
        metavar="BLOB",
        help="replay one failing example: the blob from the @reproduce_failure line of a failure "
        "(run it with that failure's test id)",
    )
    group.addoption(
        OPT_SHAPES,
        default=None,
        metavar="MODEL",
        help="draw only one real model's attention shapes (a slice of its KV head groups): "
        + ", ".join(p.name for p in presets.PRESETS),
    )
    group.addoption(
        OPT_REPORT_DIR,
        default=None,
        help=f"folder for generated reports (default: {REPORT_DIR_DEFAULT})",
    )
    group.addoption(
        OPT_SELF_TEST,
        action="store_true",
        help="also run the suite's self-tests (mutants, gallery, registry, plugin runs) when "
        f"{OPT_IMPL} or ${discovery.ENV_VAR} names implementations (a plain run includes them)",
    )


# --- Resolving the options into the session's state. -------------------------------------------
def resolve_device(requested: str | None) -> str:
    """The torch device to use; a device torch cannot use is a usage error."""
    try:
        import torch
    except ImportError:
        if requested not in (None, "cpu"):
            raise pytest.UsageError(f"{OPT_DEVICE} {requested}: torch is not installed") from None
        return "cpu"
    device = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise pytest.UsageError(f"{OPT_DEVICE} {device}: {exc}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"{OPT_DEVICE} {device}: CUDA is not available (torch sees no GPU)")
    return device


def resolve_shapes(config: pytest.Config) -> str | None:
    """The preset --shapes names (its canonical name), or None; an unknown one is a usage error."""
    name = config.getoption(OPT_SHAPES)
    if name is None:
        return None
    try:
        return presets.get(name).name
    except ValueError as exc:
        raise pytest.UsageError(f"{OPT_SHAPES}: {exc}") from None


def resolve_tier(config: pytest.Config) -> str:
    """--tier, else $ATTNSPEC_TIER, else default; an unknown tier is a usage error."""
    tier = config.getoption(OPT_TIER) or os.environ.get(profiles.TIER_ENV) or "default"
    if tier not in profiles.TIERS:
        raise pytest.UsageError(
            f"{OPT_TIER} {tier}: unknown tier; choose from {', '.join(profiles.TIERS)}"
        )
    return str(tier)


def resolve_dtypes(config: pytest.Config) -> list[str]:
    """The --dtype values (float32 when none); an unknown one is a usage error."""
    dtypes = list(config.getoption(OPT_DTYPE) or ["float32"])
    for d in dtypes:
        if d not in DTYPES:
            raise pytest.UsageError(
                f"{OPT_DTYPE} {d}: unknown dtype; choose from {', '.join(DTYPES)}"
            )
    return dtypes


HALF = ("bfloat16", "float16")


def subject_dtypes(subject: UnderTest, tier: str) -> list[str]:
    """The dtypes an implementation named by --impl is checked in when --dtype is not given:
    every dtype it declares (`dtypes`), or at the smoke tier the first half-precision one
    (bugs live there), else its first; float32 when it declares none."""
    declared = [d for d in (getattr(subject, "dtypes", None) or ()) if d in DTYPES]
    if not declared:
        return ["float32"]
    if tier == "smoke":
        return [next((d for d in declared if d in HALF), declared[0])]
    return declared


def resolve_pairs(
    config: pytest.Config, subjects: list[UnderTest], named: bool, tier: str
) -> list[tuple[UnderTest, str]]:
    """(implementation, dtype) for every clause test: --dtype for all when given; else, for
    implementations that --impl named, the dtypes they declare (`subject_dtypes`); else float32."""
    explicit = config.getoption(OPT_DTYPE)
    if explicit or not named:
        return [(s, d) for s in subjects for d in resolve_dtypes(config)]
    return [(s, d) for s in subjects for d in subject_dtypes(s, tier)]


def resolve_subjects(locators: list[str], device: str) -> list[UnderTest]:
    """The implementations under test: those `locators` name, else the default set."""
    try:
        if locators:
            subjects = [discovery.under_test(loc, device) for loc in locators]
        else:
            subjects = discovery.default_under_test(device)
    except discovery.ImplError as exc:
        raise pytest.UsageError(f"{OPT_IMPL}: {exc}") from None
    names = [s.name for s in subjects]
    if len(set(names)) != len(names):
        raise pytest.UsageError(f"{OPT_IMPL}: two implementations share a name: {names}")
    return subjects


def check_rootdir(config: pytest.Config) -> None:
    """A usage error when pytest took an `--impl PATH` value for a test path.

    pytest picks its rootdir (and so pyproject.toml's settings) from the command line's path
    arguments before any plugin runs, and `--impl /elsewhere/impl.py` looks like one: run
    from the checkout, the rootdir moves up to a common ancestor and the settings are lost.
    """
    params = config.invocation_params
    if config.rootpath == CHECKOUT or not is_within(Path(params.dir).resolve(), CHECKOUT):
        return
    args = list(params.args)
    for flag, value in itertools.pairwise(args):
        if flag == OPT_IMPL and Path(value.split(":")[0]).exists():
            raise pytest.UsageError(
                f"{OPT_IMPL} {value}: pytest read this path as a test path and moved its rootdir "
                f"to {config.rootpath}, leaving attnspec's settings behind; write "
                f"{OPT_IMPL}={value} (with '=')"
            )


def resolve_known(config: pytest.Config) -> list[known_failures.Entry]:
    """The entries of the --known-failures file (none without one)."""
    path = config.getoption(OPT_KNOWN)
    try:
        return known_failures.parse(Path(path)) if path else []
    except known_failures.KnownFailuresError as exc:
        raise pytest.UsageError(f"{OPT_KNOWN}: {exc}") from None


def is_within(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies inside it."""
    return path == folder or folder in path.parents
