"""Mutants by locator, so a replay script can load one: `attnspec.suite.meta.replay_subjects:<name>`,
where <name> is the mutant's name with "-" written "_" (`scale_1_over_d`)."""

from __future__ import annotations

from typing import Any

from attnspec.suite.meta.mutants import all_mutants


def locator(mutant_name: str) -> str:
    """The --impl / discovery.load locator of the mutant `mutant_name`."""
    return f"{__name__}:{mutant_name.replace('-', '_')}"


def __getattr__(attr: str) -> Any:
    for m in all_mutants():
        if m.name.replace("-", "_") == attr:
            return m.impl
    raise AttributeError(attr)
