"""Meta-tests: attnspec is a good citizen among pytest plugins.

Installed, its entry point (attnspec/plugin.py) loads into every pytest session of the
environment: it must import neither torch nor the contract there, and the wheel must own one
top-level name, `attnspec`, so a project with its own `specs/` or `reports/` package is left alone.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import tomllib
import zipfile

import pytest

from attnspec import cli
from attnspec import plugin as entry
from attnspec.implementations import discovery
from attnspec.specs import presets, profiles
from attnspec.specs.dtypes import DTYPES
from attnspec.specs.runner import DEFAULT_CALL_TIMEOUT_S
from attnspec.suite.meta import background
from attnspec.suite.meta.subprocess_run import ROOT

HEAVY = re.compile(r"^(torch|hypothesis|attnspec\.(specs|suite|reports|implementations))\b")


def test_help_names_the_contracts_choices():
    """The entry point's literal help lists (it imports nothing) are the contract's."""
    assert entry.DTYPES == DTYPES
    assert entry.TIERS == tuple(profiles.TIERS)
    assert entry.SHAPES == ", ".join(p.name for p in presets.PRESETS)
    assert entry.DEFAULT_CALL_TIMEOUT_S == DEFAULT_CALL_TIMEOUT_S
    assert entry.ENV_IMPL == discovery.ENV_VAR


def test_packaged_ini_is_the_projects():
    """attnspec/pytest.ini (the `attnspec` command's settings) equals pyproject.toml's pytest
    settings but the test paths."""
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    ini = configparser.ConfigParser()
    ini.read(ROOT / "attnspec" / "pytest.ini")
    packaged = dict(ini["pytest"])
    assert set(packaged) == set(ours) - {"testpaths"}
    assert packaged["addopts"].split() == ours["addopts"]
    assert packaged["markers"].strip().splitlines() == ours["markers"]
    assert packaged["filterwarnings"].split() == ours["filterwarnings"]
    assert packaged["norecursedirs"].split() == ours["norecursedirs"]
    for key in ("strict", "xfail_strict", "timeout"):
        assert packaged[key] == str(ours[key]).lower()


def test_command_runs_the_installed_suite_from_here():
    """`attnspec bench --impl=x.py` is pytest on the installed suite with attnspec's settings,
    the current folder as rootdir, and --benchmark-only."""
    args = cli.pytest_args(["bench", "--impl=x.py"], "/work/repo")
    assert args[:2] == ["--pyargs", "attnspec.suite"]
    assert args[args.index("-c") + 1].endswith("attnspec/pytest.ini")
    assert args[args.index("--rootdir") + 1] == "/work/repo"
    assert args[-2:] == ["--benchmark-only", "--impl=x.py"]
    assert "--benchmark-only" not in cli.pytest_args(["--impl=x.py"], "/r")


# The probe's own package chain (light: docstrings only), which `python -m` imports.
PROBE_ITSELF = {"attnspec.suite", "attnspec.suite.meta", "attnspec.suite.meta.entry_probe"}
INERT = background.register(
    "entry-inert", lambda folder: [str(folder)], module_run="attnspec.suite.meta.entry_probe"
)
ASKED = background.register(
    "entry-asked",
    lambda folder: [str(folder), "--tier", "smoke"],
    module_run="attnspec.suite.meta.entry_probe",
)


def imported_modules(key: str) -> tuple[background.Finished, set[str]]:
    """The probe run `key` (suite/meta/entry_probe.py) and the modules it had loaded."""
    done = background.result(key)
    out = done.folder / "modules.txt"
    return done, set(out.read_text().split()) if out.exists() else set()


def test_entry_point_is_inert_in_another_project():
    """In a project that does not run attnspec, the entry point registers its options and imports
    neither torch, Hypothesis nor any of attnspec's contract, suite or reports."""
    done, names = imported_modules(INERT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "attnspec.plugin" in names
    heavy = sorted(n for n in names if HEAVY.match(n) and n not in PROBE_ITSELF)
    assert not heavy, f"the entry point imported {heavy[:10]}"


def test_entry_point_loads_the_suite_when_asked():
    """An attnspec option (here --tier) makes the same session load the suite's plugins."""
    done, names = imported_modules(ASKED)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert {"attnspec.suite.plugin", "attnspec.reports.bench_plugin"} <= names


PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w"]


@pytest.mark.skipif(os.environ.get("CI") is None, reason="builds the wheel: CI only (about 5 s)")
def test_wheel_has_one_top_level_name(tmp_path):
    """The wheel installs a single top-level package, attnspec (plus its metadata)."""
    subprocess.run(
        [*PIP_WHEEL, str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    (wheel,) = tmp_path.glob("attnspec-*.whl")
    top = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"attnspec"}, sorted(top)
