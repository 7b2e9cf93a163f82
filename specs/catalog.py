"""Imports every area module so the clause registry is complete; prints the clause table.

    python -m specs.catalog        # the README's clause table, in Markdown

The order of AREAS is the order of the conformance table.
"""

import importlib

AREAS: tuple[str, ...] = (
    "attention",
    "kv_cache",
    "tiled",
    "linear",
    "cost_clauses",
    "decoder",
    *("varlen", "paged", "attention_options", "cost_serving"),
)

for _area in AREAS:
    importlib.import_module(f"specs.{_area}")


def markdown_table() -> str:
    """| ID | needs | sentence | for every registered clause."""
    from specs.clauses import REGISTRY

    rows = ["| clause | needs | it checks that |", "|---|---|---|"]
    for c in REGISTRY.values():
        needs = ", ".join(" or ".join(f"`{a}`" for a in op.split("|")) for op in c.needs) or "—"
        rows.append(f"| {c.id} | {needs} | {c.sentence} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
