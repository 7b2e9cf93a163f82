"""Every clause: imports each area module so the registry is complete, looks clauses up, and
prints the clause table.

    python -m attnspec.specs.catalog        # README's clause index and docs/clauses.md's table, in Markdown

The order of AREAS is the order of the conformance table.
"""

from __future__ import annotations

from collections import Counter

from attnspec.specs import (
    attention,
    attention_options,
    cascade,
    cost_cascade,
    cost_clauses,
    cost_serving,
    decoder,
    kv_cache,
    linear,
    merge,
    paged,
    quant,
    rope,
    tiled,
    varlen,
)
from attnspec.specs.clauses import REGISTRY, Clause, get

AREAS = (
    attention,
    kv_cache,
    tiled,
    linear,
    cost_clauses,
    decoder,
    *(varlen, paged, attention_options, cost_serving),
    rope,
    *(merge, cascade, cost_cascade),
    quant,
)
__all__ = [
    "AREAS",
    "all_clauses",
    "clauses_page",
    "get",
    "markdown_index",
    "markdown_table",
    "needs_legend",
]


def all_clauses() -> list[Clause]:
    """Every registered clause, area by area in the order of AREAS, each area's in its order."""
    areas = [area.__name__ for area in AREAS]
    return sorted(REGISTRY.values(), key=lambda c: areas.index(c.check.__module__))


def needs_text(needs: tuple[str, ...]) -> str:
    """`a`, `b` or `c` for needs ("b|c": either op will do)."""
    return ", ".join(" or ".join(f"`{a}`" for a in op.split("|")) for op in needs) or "nothing"


def needs_legend(clauses: list[Clause]) -> str:
    """What each family of clauses needs (the most common needs of its ID prefix, then the
    clauses that need something else), so the table itself can stay two columns wide."""
    families: dict[str, list[Clause]] = {}
    for c in clauses:
        families.setdefault(c.id.split("-")[0], []).append(c)
    lines = []
    for prefix, members in families.items():
        counts = Counter(c.needs for c in members)
        common = max(counts, key=lambda n: (counts[n], -len(n)))
        others = "; ".join(f"{c.id} {needs_text(c.needs)}" for c in members if c.needs != common)
        lines.append(f"- {prefix}-\\*: {needs_text(common)}" + (f" ({others})" if others else ""))
    return "Each clause needs these ops of an implementation (else it is skipped):\n\n" + "\n".join(
        lines
    )


def markdown_table() -> str:
    """| ID | sentence | for every registered clause (docs/clauses.md)."""
    rows = ["| clause | it checks that |", "|---|---|"]
    rows += [f"| {c.id} | {c.sentence} |" for c in all_clauses()]
    return "\n".join(rows)


def markdown_index() -> str:
    """| family | its clauses | : README's short index of the clauses, one row per ID prefix."""
    families: dict[str, list[str]] = {}
    for c in all_clauses():
        families.setdefault(c.id.split("-")[0], []).append(c.id)
    rows = ["| family | clauses |", "|---|---|"]
    rows += [f"| {name} | {', '.join(ids)} |" for name, ids in families.items()]
    return "\n".join(rows)


def clauses_page() -> str:
    """docs/clauses.md's generated part: what each family needs, then every clause's sentence."""
    return needs_legend(all_clauses()) + "\n\n" + markdown_table()


if __name__ == "__main__":
    print("README.md, the clause index:\n")
    print(markdown_index())
    print("\ndocs/clauses.md, what each clause needs and every clause:\n")
    print(clauses_page())
