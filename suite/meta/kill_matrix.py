"""The mutation kill matrix: every shipped mutant against every clause it can run.

    python -m attnspec.suite.meta.kill_matrix [--markdown FILE]

Prints mutant x clause (killed / survived; blank where the mutant lacks the clause's ops),
then the kill rate, and exits 1 if any mutant survives the clauses written for it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from attnspec.specs.catalog import all_clauses
from attnspec.specs.clauses import ClauseFailure
from attnspec.specs.profiles import KILL
from attnspec.specs.runner import NotImplementedByImpl, run_clause
from attnspec.suite.meta.mutants import Mutant, all_mutants


def verdict(mutant: Mutant, clause_id: str) -> str | None:
    """'killed', 'crashed' (the mutant raised), 'survived', or None when it cannot run it."""
    try:
        run_clause(clause_id, mutant.impl, dtype=mutant.dtype, settings_=KILL)
    except NotImplementedByImpl:
        return None
    except ClauseFailure as failure:
        return "crashed" if failure.details.get("misbehaviour") == "raised" else "killed"
    return "survived"


def matrix(mutants: list[Mutant]) -> tuple[list[str], dict[str, dict[str, str | None]]]:
    """The clause IDs that any mutant can run, and each mutant's verdict per clause."""
    clauses = [c.id for c in all_clauses()]
    cells = {}
    for i, m in enumerate(mutants, 1):
        print(f"[{i}/{len(mutants)}] {m.name}", file=sys.stderr, flush=True)
        cells[m.name] = {c: verdict(m, c) for c in clauses}
    used = [c for c in clauses if any(cells[m.name][c] for m in mutants)]
    return used, cells


def render(mutants: list[Mutant], clauses: list[str], cells: dict) -> tuple[str, list[str]]:
    """The table (targeted cells marked with *) and the list of targeted survivals."""
    rows, escaped = [], []
    for m in mutants:
        row = [m.name]
        for c in clauses:
            v = cells[m.name][c]
            mark = "*" if c in m.kills else ""
            row.append(f"{v}{mark}" if v else "")
            if c in m.kills and v != "killed":
                escaped.append(f"{m.name} was not killed by {c} ({v or 'not run'})")
        rows.append(row)
    short = [c.replace("-", "-\n", 1) for c in clauses]
    return tabulate(rows, headers=["mutant", *short], tablefmt="simple"), escaped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path, help="also write the matrix as Markdown here")
    args = parser.parse_args(argv)
    mutants = all_mutants()
    clauses, cells = matrix(mutants)
    text, escaped = render(mutants, clauses, cells)
    print(text)
    killed = sum(any(v == "killed" for v in cells[m.name].values()) for m in mutants)
    print(
        f"\n* = a clause the mutant was written for. Mutants killed: {killed}/{len(mutants)} "
        f"({100 * killed / len(mutants):.0f}%)"
    )
    for line in escaped:
        print("SURVIVED:", line)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 1 if escaped or killed < len(mutants) else 0


if __name__ == "__main__":
    sys.exit(main())
