"""Imports every area module so the clause registry is complete.

Helpers: append a new area module's name to AREAS; the order is the conformance table's order.
"""

import importlib

AREAS: tuple[str, ...] = (
    "attention",
    "kv_cache",
    "cost_clauses",
    "linear",
    "tiled",
    "decoder",
)

for _area in AREAS:
    importlib.import_module(f"specs.{_area}")
