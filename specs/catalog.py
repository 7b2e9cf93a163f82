"""Every clause: imports each area module so the registry is complete, looks clauses up, and
prints the clause table.

    python -m specs.catalog        # the README's clause table, in Markdown

The order of AREAS is the order of the conformance table.
"""

from __future__ import annotations

from specs import (
    attention,
    attention_options,
    cost_clauses,
    cost_serving,
    decoder,
    kv_cache,
    linear,
    paged,
    tiled,
    varlen,
)
from specs.clauses import REGISTRY, Clause, get

AREAS = (
    attention,
    kv_cache,
    tiled,
    linear,
    cost_clauses,
    decoder,
    *(varlen, paged, attention_options, cost_serving),
)
__all__ = ["AREAS", "all_clauses", "get", "markdown_table"]


def all_clauses() -> list[Clause]:
    """Every registered clause, area by area in the order of AREAS, each area's in its order."""
    areas = [area.__name__ for area in AREAS]
    return sorted(REGISTRY.values(), key=lambda c: areas.index(c.check.__module__))


def markdown_table() -> str:
    """| ID | needs | sentence | for every registered clause."""
    rows = ["| clause | needs | it checks that |", "|---|---|---|"]
    for c in all_clauses():
        needs = ", ".join(" or ".join(f"`{a}`" for a in op.split("|")) for op in c.needs) or "—"
        rows.append(f"| {c.id} | {needs} | {c.sentence} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
