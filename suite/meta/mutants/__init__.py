"""Mutants: deliberately broken implementations, each naming the clauses that must reject it.

Helpers: append a new area module's name to AREAS; it must define `MUTANTS: list[Mutant]`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

AREAS: tuple[str, ...] = (
    "attention",
    "kv_cache",
    "cost",
    "linear",
    "tiled",
    "decoder",
    "serving",
    "rope",
    "merge",
    "quant",
)


@dataclass(frozen=True)
class Mutant:
    """A broken subject (`impl`), the bug in one sentence, and the clauses that must kill it."""

    name: str
    bug: str
    impl: Any
    kills: tuple[str, ...]
    dtype: str = (
        "float32"  # the working dtype the kill runs in (a bug that lives in half precision)
    )


def derive(base: Any, name: str, **ops: Any) -> SimpleNamespace:
    """An implementation called `name` that converts arrays like `base` and provides only `ops`."""
    return SimpleNamespace(
        name=name,
        asarray=base.asarray,
        to_numpy=base.to_numpy,
        dtypes=getattr(base, "dtypes", None),
        **ops,
    )


def all_mutants() -> list[Mutant]:
    """Every shipped mutant, area by area."""
    found: list[Mutant] = []
    for area in AREAS:
        found.extend(importlib.import_module(f"attnspec.suite.meta.mutants.{area}").MUTANTS)
    return found
