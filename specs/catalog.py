"""Imports every area module so the clause registry is complete.

Helpers: append a new area module's name to AREAS; the order is the conformance table's order.
"""

import importlib

AREAS: tuple[str, ...] = (
    "attention",
    "kv_cache",
)

for _area in AREAS:
    importlib.import_module(f"specs.{_area}")
