"""Meta-tests: misbehaving implementations get a named FAIL in a real pytest run that goes on."""

from __future__ import annotations

import json
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

from attnspec.suite.meta import background, gallery
from attnspec.suite.meta.gallery import EXPECTED
from attnspec.suite.meta.subprocess_run import ROOT, impl_args

GALLERY = ROOT / "suite" / "meta" / "gallery.py"


def gallery_args(folder: Path) -> list[str]:
    """Every gallery member on one single-call and one two-call clause (they show every
    misbehaviour), smoke tier, 1 s per call, with a JUnit report (its own report folder)."""
    impls = impl_args(*(f"{GALLERY}:{attr}" for attr in EXPECTED if hasattr(gallery, attr)))
    return [
        "suite/test_attention.py",
        "-k",
        "attn_ref or attn_causal_no_future",
        "--tier",
        "smoke",
        "--dtype",
        "float32",
        "--call-timeout",
        "1",
        "-p",
        "no:xdist",
        "--report-dir",
        str(folder),
        "--junitxml",
        str(folder / "junit.xml"),
        *impls,
    ]


GALLERY_RUN = background.register("gallery", gallery_args)


@pytest.fixture(scope="module")
def gallery_run() -> background.Finished:
    return background.result(GALLERY_RUN)


@pytest.mark.parametrize("attr", list(EXPECTED))
def test_misbehaviour_is_named(gallery_run, attr):
    """Each misbehaving implementation FAILs a clause with a message naming what it did."""
    if not hasattr(gallery, attr):
        pytest.skip(f"torch is not installed: the gallery has no {attr} without it")
    name = getattr(gallery, attr).name
    pattern = (
        rf"FAIL ATTN-[A-Z-]+ on {re.escape(name)} \[float32\]:.*\n.*{re.escape(EXPECTED[attr])}"
    )
    assert re.search(pattern, gallery_run.stdout), (
        f"no FAIL naming {EXPECTED[attr]!r} for {name}\n{gallery_run.stdout[-3000:]}"
    )


def test_run_completes(gallery_run):
    """The run over the whole gallery finishes with a summary line: nothing took it down."""
    assert gallery_run.returncode == 1, gallery_run.stdout[-2000:] + gallery_run.stderr[-2000:]
    assert re.search(r"\d+ failed.* in [\d.]+s", gallery_run.stdout.splitlines()[-1])


BAD_INVOCATIONS = [
    (["--impl", "nope"], "ERROR: --impl: unknown implementation 'nope'; available: numpy"),
    (["--impl", "nosuchpkg.attn:impl"], "No module named 'nosuchpkg'"),
    (["--impl", f"{GALLERY}:EXPECTED"], "lacks name, asarray, to_numpy"),
    (["--dtype", "float8"], "ERROR: --dtype float8: unknown dtype"),
    (["--tier", "ultra"], "ERROR: --tier ultra: unknown tier"),
    (["--device", "nodevice"], "ERROR: --device nodevice"),
]


def bad_args(args: list[str]) -> list[str]:
    """A bad invocation's pytest arguments (numpy as the implementation unless it names one)."""
    impls = [] if "--impl" in args else impl_args("numpy")
    return ["suite/test_attention.py", *impls, *args]


BAD_RUN = background.register(
    "bad-invocations",
    lambda folder: [json.dumps([bad_args(args) for args, _ in BAD_INVOCATIONS])],
    timeout=120,
    module_run="attnspec.suite.meta.invocations",
)


@pytest.mark.parametrize(("i", "message"), list(enumerate(m for _, m in BAD_INVOCATIONS)))
def test_bad_invocation_is_one_line(i, message):
    """A bad option stops the run with a one-line usage error, not a traceback."""
    done = background.result(BAD_RUN)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])[i]
    out = (result["stdout"] + result["stderr"]).strip()
    assert result["code"] == 4 and message in out, out[-2000:]
    assert "Traceback" not in out and len(out.splitlines()) <= 2, out[-2000:]


def test_summary_ends_with_one_line_per_failure(gallery_run):
    """The run ends with one line per failing clause: figure, shape in the contract's letters,
    and the replay command, whose script exists (a hung call gets the pytest command instead)."""
    lines = re.findall(
        r"^(ATTN-[A-Z-]+) FAIL (gallery-[\w-]+)\[float32\]: (.+?)(?: at (B=\d+ Hq=\d+ .*D=\d+))?"
        r" — (?:replay: python (\S+\.py)|reproduce: pytest .*)$",
        gallery_run.stdout,
        re.MULTILINE,
    )
    failed = int(re.search(r"(\d+) failed", gallery_run.stdout.splitlines()[-1]).group(1))
    assert len(lines) == failed, gallery_run.stdout[-3000:]
    for _, name, _, shape, script in lines:
        if "hang" not in name and "spins" not in name:
            assert shape and script, (name, shape, script)
            assert (ROOT / script).is_file() or Path(script).is_file(), script


def test_junit_report_names_the_clauses(gallery_run):
    """--junitxml still works: each clause test is a testcase named test_<clause>[impl-dtype]
    with a `clause` property holding the clause ID."""
    cases = ElementTree.parse(gallery_run.folder / "junit.xml").getroot().iter("testcase")
    found = {
        (case.get("name"), prop.get("value"))
        for case in cases
        for prop in case.iter("property")
        if prop.get("name") == "clause"
    }
    assert ("test_attn_ref[gallery-nan-float32]", "ATTN-REF") in found, sorted(found)[:5]
    assert all(name.startswith(f"test_{cid.lower().replace('-', '_')}[") for name, cid in found)
