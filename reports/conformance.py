"""The conformance verdict: one record per clause x implementation x dtype, as table and JSON."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

BLOB = re.compile(r"@reproduce_failure\('[^']*', b'([^']*)'\)")
# Hypothesis's own report (the failing case and its draws, how to replay it): it stays in
# pytest's per-test failure section and is left out of the summary and the JSON message.
HYPOTHESIS_BLOCK = re.compile(r"^(Failing test case:|Falsifying example:|Trying example:)")
HYPOTHESIS_LINE = re.compile(
    r"^(# The test (always|sometimes) failed|You can reproduce this|@reproduce_failure|Explanation:)"
)
REPLAY_NOTE = "replay the failing calls without pytest: "  # suite/plugin.py adds it
CELL = {"passed": "pass", "failed": "FAIL", "skipped": "skip", "xfailed": "xfail (known)"}


@dataclass
class Record:
    """The outcome of one clause test."""

    clause: str
    sentence: str
    impl: str
    dtype: str
    outcome: str  # passed / failed / skipped
    nodeid: str
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    reproduce: str = ""
    replay: str = ""  # the command that runs the failure's replay script
    shape: str = ""  # the failing call's shape in the contract's letters
    limits: str = (
        ""  # what the implementation declares it takes (attnspec.specs.limits), if anything
    )
    left_out: list[str] = field(default_factory=list)  # draws the declaration moved

    @property
    def column(self) -> str:
        if self.impl == "spec" or not self.dtype:  # clauses on the cost model, not an impl
            return self.impl
        return f"{self.impl} [{self.dtype}]"


def first_lines(text: str, n: int = 3) -> str:
    """The first `n` non-empty lines of a failure message."""
    lines = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[:n])


def failure_message(longrepr: str) -> str:
    """The assertion's own message out of pytest's long representation of a failure."""
    lines = [ln[2:].strip() for ln in longrepr.splitlines() if ln.startswith("E ")]
    lines = without_hypothesis([ln for ln in lines if ln and not ln.startswith(REPLAY_NOTE)])
    for i, ln in enumerate(lines):  # skip chained causes: start at the clause's own failure
        if "ClauseFailure: " in ln:
            lines = [ln.split("ClauseFailure: ", 1)[1], *lines[i + 1 :]]
            break
    return "\n".join(lines) or first_lines(longrepr)


def without_hypothesis(lines: list[str]) -> list[str]:
    """`lines` without Hypothesis's report: its failing-case block (up to attnspec's own
    "clause ID: sentence" note) and its one-line remarks."""
    kept, skipping = [], False
    for ln in lines:
        if HYPOTHESIS_BLOCK.match(ln):
            skipping = True
        elif skipping and re.match(r"clause [A-Z0-9-]+: ", ln):
            skipping = False
        if not skipping and not HYPOTHESIS_LINE.match(ln):
            kept.append(ln)
    return kept


def reproduction(
    nodeid: str, locator: str, dtype: str, longrepr: str, device: str, tier: str
) -> str:
    """The command that reruns one failing test, replaying Hypothesis's example when it has one.

    `locator` is what --impl took ("" for clauses on the cost model, which take no --impl).
    """
    cmd = f"pytest '{nodeid}'" + (f" --impl {locator}" if locator else "")
    cmd += f" --device {device} --tier {tier}"
    if dtype:
        cmd += f" --dtype {dtype}"
    blob = BLOB.search(longrepr)
    return cmd + (f" --reproduce '{blob.group(1)}'" if blob else "")


def table(records: list[Record], clause_order: list[str]) -> str:
    """Clauses down, implementation [dtype] across, pass / FAIL / skip in the cells."""
    columns = sorted({r.column for r in records})
    cells: dict[tuple[str, str], str] = {}
    for r in records:
        cells[(r.clause, r.column)] = CELL.get(r.outcome, r.outcome)
    order = [c for c in clause_order if any(r.clause == c for r in records)]
    rows = [[c, *[cells.get((c, col), "-") for col in columns]] for c in order]
    return tabulate(rows, headers=["clause", *columns], tablefmt="github")


def failures(records: list[Record]) -> str:
    """One paragraph per failure: clause, implementation, the message, how to reproduce."""
    out = []
    for r in records:
        if r.outcome != "failed":
            continue
        out.append(
            f"FAIL {r.clause} on {r.column}: {r.sentence}\n"
            f"{_indent(first_lines(r.message, 4))}\n    reproduce: {r.reproduce}"
            + (f"\n    replay: {r.replay}" if r.replay else "")
        )
    return "\n".join(out)


def next_steps(records: list[Record]) -> str:
    """One line per failing clause: what failed, by how much, at which shape, what to run next.

    `ATTN-REF FAIL torch[bfloat16]: 0.62 > 1.5e-06 at B=1 Hq=1 Hkv=1 Tq=2 Tk=2 D=1 — replay:
    python reports/out/failures/ATTN-REF-torch-bfloat16.py`
    """
    lines = []
    for r in records:
        if r.outcome != "failed":
            continue
        where = f"{r.impl}[{r.dtype}]" if r.dtype and r.impl != "spec" else r.impl
        line = f"{r.clause} FAIL {where}: {figure(r)}" + (f" at {r.shape}" if r.shape else "")
        lines.append(
            line + (f" — replay: {r.replay}" if r.replay else f" — reproduce: {r.reproduce}")
        )
    return "\n".join(lines)


def figure(r: Record) -> str:
    """How a failure missed: `error > tolerance`, else the misbehaviour, else its first line."""
    error, tolerance = r.details.get("error"), r.details.get("tolerance")
    if isinstance(error, int | float) and isinstance(tolerance, int | float):
        return f"{error:.2g} > {tolerance:.2g}"
    if r.details.get("misbehaviour"):
        return str(r.details["misbehaviour"])
    first = first_lines(r.message, 1)
    return first if len(first) <= 80 else first[:77] + "..."


def skips(records: list[Record]) -> str:
    """Distinct skip reasons, with how many clauses each covers."""
    reasons: dict[str, int] = {}
    for r in records:
        if r.outcome == "skipped":
            key = f"{r.column}: {r.message}"
            reasons[key] = reasons.get(key, 0) + 1
    return "\n".join(f"skip x{n}  {why}" for why, n in sorted(reasons.items()))


def left_out(records: list[Record]) -> str:
    """Per implementation: its declared limits and what they left out of the draws (each
    left-out value moved to one the implementation takes; the clauses still ran)."""
    by_impl: dict[str, tuple[str, set[str]]] = {}
    for r in records:
        if r.limits or r.left_out:
            declared, moved = by_impl.setdefault(r.impl, (r.limits, set()))
            moved.update(r.left_out)
    lines = []
    for impl, (declared, moved) in sorted(by_impl.items()):
        lines.append(f"limits of {impl}: {declared or 'none declared'}")
        if moved:
            lines.append(f"    left out of the draws: {', '.join(sorted(moved, key=_natural))}")
    return "\n".join(lines)


def _natural(text: str) -> tuple[Any, ...]:
    """Sort key that puts 'block size 3' before 'block size 16'."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def unchecked(records: list[Record]) -> dict[str, str]:
    """Implementations that had clause tests but no clause run (all skipped), with why: a run
    that checked nothing of an implementation is not a pass."""
    ran: dict[str, bool] = {}
    reasons: dict[str, dict[str, int]] = {}
    for r in records:
        if r.impl == "spec":
            continue
        ran[r.impl] = ran.get(r.impl, False) or r.outcome in ("passed", "failed", "xfailed")
        if r.outcome == "skipped":
            counts = reasons.setdefault(r.impl, {})
            counts[r.message] = counts.get(r.message, 0) + 1
    out = {}
    for impl, any_ran in ran.items():
        if not any_ran:
            common = sorted(reasons.get(impl, {}).items(), key=lambda kv: -kv[1])
            out[impl] = "; ".join(why for why, _ in common[:2]) or "every clause was skipped"
    return out


def _indent(text: str) -> str:
    return "\n".join("    " + ln for ln in text.splitlines())


def write_json(records: list[Record], path: Path, meta: dict[str, Any]) -> None:
    """The same content as the table, machine-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = {o: sum(r.outcome == o for r in records) for o in ("passed", "failed", "skipped")}
    payload = {**meta, "counts": counts, "results": [asdict(r) for r in records]}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
