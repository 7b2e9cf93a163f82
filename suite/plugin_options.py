"""The attnspec plugin's options resolved into the session's state.

The options are registered by the cheap entry point, attnspec/plugin.py (one OPT_* constant
and one addoption call each, re-exported here); a value that can't be used is a one-line
pytest.UsageError. A new option goes there, and, when it needs resolving, a resolve_* function
here read by AttnspecSession in suite/plugin.py.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from attnspec import suite
from attnspec.implementations import discovery
from attnspec.implementations.discovery import UnderTest
from attnspec.plugin import (
    OPT_DEVICE,
    OPT_DTYPE,
    OPT_IMPL,
    OPT_KNOWN,
    OPT_REPORT_DIR,
    OPT_SHAPES,
    OPT_TIER,
)
from attnspec.specs import presets, profiles
from attnspec.specs.dtypes import DTYPES
from attnspec.suite import known_failures

CHECKOUT = Path(suite.__file__).resolve().parents[1]
IN_CHECKOUT = (CHECKOUT / "pyproject.toml").is_file()  # else installed from a wheel
REPORT_DIR_CHECKOUT = CHECKOUT / "reports" / "out"
REPORT_DIR_NAME = "attnspec-report"  # under the rootdir, when attnspec runs installed


# --- Resolving the options into the session's state. -------------------------------------------
def report_dir(config: pytest.Config) -> Path:
    """--report-dir, else reports/out in a checkout of attnspec, else attnspec-report in the
    rootdir (a user's repository: never inside the installed package)."""
    given = config.getoption(OPT_REPORT_DIR)
    if given:
        return Path(given)
    return REPORT_DIR_CHECKOUT if IN_CHECKOUT else config.rootpath / REPORT_DIR_NAME


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
