"""The `attnspec` command: attnspec's suite on your implementation, from your own repository.

    attnspec [check] --impl=mykernel/impl.py [pytest options]   # conformance
    attnspec bench --impl=mykernel/impl.py [pytest options]     # benchmarks, roofline report

It runs pytest on the installed suite (`--pyargs attnspec.suite`) with attnspec's own pytest
settings (attnspec/pytest.ini), not the current folder's, and the current folder as rootdir:
reports land in ./attnspec-report (or --report-dir), Hypothesis's database in ./.hypothesis.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MODES = {"check": [], "bench": ["--benchmark-only"]}


def pytest_args(argv: list[str], cwd: str) -> list[str]:
    """The pytest command line `attnspec argv...` runs."""
    args = list(argv)
    mode = args.pop(0) if args and args[0] in MODES else "check"
    ini = Path(__file__).with_name("pytest.ini")
    return ["--pyargs", "attnspec.suite", "-c", str(ini), "--rootdir", cwd, *MODES[mode], *args]


def main(argv: list[str] | None = None) -> int:
    """Run the suite in a fresh `python -m pytest` (so pytest, not this command, imports
    attnspec first and rewrites its asserts); pytest's exit status."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help") and len(args) == 1:
        print(__doc__)
        return 0
    command = [sys.executable, "-m", "pytest", *pytest_args(args, os.getcwd())]
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
