"""Several pytest command lines in one process, each one's exit code and output, as JSON.

    python -m attnspec.suite.meta.invocations '[["--tier", "ultra"], ...]'

The bad-invocation self-tests (suite/meta/test_gallery.py) each end at a usage error: one
process that runs them in turn pays Python's, pytest's and torch's start-up once instead of
once per command line.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

import pytest


def run(args: list[str]) -> dict[str, object]:
    """pytest.main(args) with its stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = pytest.main(["-p", "no:cacheprovider", "--capture=sys", *args])
    return {"code": int(code), "stdout": out.getvalue(), "stderr": err.getvalue()}


def main(argv: list[str]) -> int:
    print(json.dumps([run(list(args)) for args in json.loads(argv[0])]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
