"""Meta-tests: the clause registry, the test modules and the README say the same thing."""

from __future__ import annotations

import importlib
import pkgutil

from attnspec import suite
from attnspec.specs.catalog import all_clauses, clauses_page, markdown_index
from attnspec.suite.meta.subprocess_run import ROOT


def suite_test_names() -> set[str]:
    """Names of the test functions in suite/test_*.py (the clause tests live there)."""
    names: set[str] = set()
    for info in pkgutil.iter_modules(suite.__path__):
        if info.name.startswith("test_"):
            module = importlib.import_module(f"suite.{info.name}")
            names |= {n for n in vars(module) if n.startswith("test_")}
    return names


def test_every_clause_has_its_test():
    """Each registered clause has exactly the test function its ID names."""
    missing = [c.id for c in all_clauses() if c.test_name not in suite_test_names()]
    assert not missing, f"clauses without a test_<id> in suite/: {missing}"


def test_readme_clause_index_matches_registry():
    """README's clause index is the registry's (regenerate with `python -m attnspec.specs.catalog`)."""
    readme = (ROOT / "README.md").read_text()
    assert markdown_index() in readme, (
        "README clause index is stale: run python -m attnspec.specs.catalog"
    )


def test_clauses_page_matches_registry():
    """docs/clauses.md lists what each clause family needs and every clause's sentence, as the
    registry says."""
    page = (ROOT / "docs" / "clauses.md").read_text()
    assert clauses_page() in page, "docs/clauses.md is stale: run python -m attnspec.specs.catalog"
