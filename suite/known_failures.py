"""Known failures: a file that lists an implementation's expected failures, each with a reason.

One entry per line, `SELECTOR  # reason` (the reason is required); blank lines and lines
starting with `#` are ignored. SELECTOR is a clause ID (`ATTN-STABLE`: every implementation and
dtype), a clause ID with an implementation (`ATTN-STABLE[mykernel]`), or a test id
(`suite/test_attention.py::test_attn_stable[mykernel-float16]`). A listed test is marked
xfail(strict): if it passes, the run reports it; an entry that matches no test warns.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest


class KnownFailuresError(Exception):
    """The file is malformed; the message names the line."""


class UnmatchedKnownFailure(pytest.PytestWarning):
    """A known-failures entry matched no collected test."""


@dataclass(frozen=True)
class Entry:
    selector: str
    reason: str
    line: int

    def matches(self, nodeid: str, clause: str | None, impl: str | None) -> bool:
        if "::" in self.selector:
            return nodeid == self.selector or nodeid.endswith("/" + self.selector)
        if "[" in self.selector:
            return self.selector == f"{clause}[{impl}]"
        return self.selector == clause


def parse(path: Path) -> list[Entry]:
    """Read the entries of `path`; a missing file or a line without a reason is an error."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise KnownFailuresError(f"cannot read {path}: {exc.strerror}") from None
    entries = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        selector, _, reason = line.partition("#")
        if not reason.strip():
            raise KnownFailuresError(f"{path}:{n}: entry {selector.strip()!r} needs '# reason'")
        entries.append(Entry(selector.strip(), reason.strip(), n))
    return entries


def apply(
    items: list[pytest.Item],
    entries: list[Entry],
    describe: Callable[[pytest.Item], tuple[str | None, str | None]],
) -> None:
    """Mark matching items xfail(strict=True); warn for entries that match nothing."""
    used: set[Entry] = set()
    for item in items:
        clause, impl = describe(item)
        for e in entries:
            if e.matches(item.nodeid, clause, impl):
                item.add_marker(pytest.mark.xfail(reason=f"known failure: {e.reason}", strict=True))
                used.add(e)
                break
    for e in entries:
        if e not in used:
            warnings.warn(
                UnmatchedKnownFailure(
                    f"known-failures line {e.line}: {e.selector!r} matches no collected test"
                ),
                stacklevel=1,
            )
