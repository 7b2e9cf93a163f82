"""Start the self-tests' pytest subprocesses as soon as collection ends (suite/meta/background.py),
and run the tests that read them last, so the in-process tests overlap with the subprocesses."""

import pytest

from attnspec.suite.meta import background


def waits(item: pytest.Item) -> bool:
    """Whether the item's module registered a background run."""
    module = getattr(item, "module", None)
    return module is not None and any(r.module == module.__name__ for r in background.RUNS.values())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=waits)  # stable: the others keep their order, the waiting ones go last


def pytest_collection_finish(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput"):  # xdist: each worker would start them all
        return
    background.start(item.module.__name__ for item in session.items if waits(item))


def pytest_sessionfinish(session: pytest.Session) -> None:
    background.stop()
