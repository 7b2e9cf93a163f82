"""Meta-tests: every command the README and docs/ show still parses, and every page is linked.

Commands are the lines of plain (or bash/sh) code fences that start with `pytest`, `python -m`
or `pip install`. Each pytest option must be one this session's pytest knows (the same plugins a
user's run loads); each `python -m` module must import and list the options used in its
`--help`; each pip extra must exist in pyproject.toml; each repository path must exist.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from attnspec.suite.meta.subprocess_run import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
REPO_DIRS = ("suite/", "specs/", "implementations/", "reports/", "docs/")
README_LIMIT = 15 * 1024  # a front door: depth (every clause sentence included) lives in docs/


def commands(page: Path) -> list[str]:
    """The command lines in `page`'s shell code fences (comments stripped)."""
    found, fence = [], None
    for line in page.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = stripped[3:].strip() if fence is None else None
            continue
        if fence in SHELL_FENCES:
            text = stripped.removeprefix("$ ").split("  #")[0].split(" # ")[0].strip()
            if text.startswith(("pytest", "python -m", "pip install")):
                found.append(text)
    return found


ALL = [(page, cmd) for page in PAGES for cmd in commands(page)]


def module_help(module: str) -> str:
    """`python -m module --help`, run in-process: its argparse help text ('' without one)."""
    found = importlib.import_module(module)
    main = getattr(found, "main", None)
    if main is None and hasattr(found, "__path__"):  # a package: `python -m` runs its __main__
        main = getattr(importlib.import_module(f"{module}.__main__"), "main", None)
    if main is None:
        return ""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0, f"python -m {module} --help exited {done.value.code}"
    return out.getvalue()


def options(words: list[str]) -> list[str]:
    """The long options among `words` (`--opt=value` gives `--opt`)."""
    return [w.split("=", 1)[0] for w in words if w.startswith("--")]


def check_paths(words: list[str], where: str) -> None:
    for w in words:
        path = w.split("=", 1)[-1].split("::")[0].split(":")[0]
        if path.startswith(REPO_DIRS):
            assert (ROOT / path).exists(), f"{where}: no such path {path!r}"


@pytest.mark.parametrize(
    ("page", "command"), ALL, ids=[f"{p.name}:{c[:60]}" for p, c in ALL] or None
)
def test_command_parses(page, command, pytestconfig):
    """A documented command names options, modules, extras and paths that exist."""
    where = f"{page.relative_to(ROOT)}: {command}"
    words = shlex.split(command)
    if words[0] == "pytest":
        for opt in options(words):
            try:
                pytestconfig.getoption(opt)
            except ValueError:
                pytest.fail(f"{where}: pytest has no option {opt}")
        check_paths(words[1:], where)
    elif words[:2] == ["python", "-m"]:
        help_text = module_help(words[2])
        for opt in options(words[3:]):
            assert opt in help_text, f"{where}: python -m {words[2]} has no option {opt}"
    else:
        extras = set(
            tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get(
                "optional-dependencies", {}
            )
        )
        for group in re.findall(r"\[([\w,\-]+)\]", command):
            missing = set(group.split(",")) - extras
            assert not missing, f"{where}: pyproject.toml has no extra {sorted(missing)}"


def test_docs_found_commands():
    """The scan finds the README's run commands (a broken scan would test nothing)."""
    readme = commands(ROOT / "README.md")
    assert any(c.startswith("pytest suite") for c in readme), readme
    assert any(c.startswith("pytest --benchmark-only") for c in readme), readme


def test_readme_is_a_front_door():
    """README.md stays short and links every page under docs/, and every link resolves."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= README_LIMIT, f"README.md is {len(readme.encode())} bytes"
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links a missing {target}"
