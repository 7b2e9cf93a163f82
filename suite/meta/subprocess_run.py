"""pytest in a subprocess, as a user would run it, untouched by the caller's ATTNSPEC_* settings."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240.0  # below pytest-timeout's 300 s, so a stuck run fails here with its output
ENV_PREFIX = "ATTNSPEC_"
SHIPPED = ("numpy", "torch") if importlib.util.find_spec("torch") else ("numpy",)


def clean_env() -> dict[str, str]:
    """This process's environment without any ATTNSPEC_* variable (impl, tier, device figures)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}


def impl_args(*specs: str) -> list[str]:
    """`--impl SPEC` for each spec; no specs means every shipped implementation that imports."""
    return [arg for spec in specs or SHIPPED for arg in ("--impl", str(spec))]


def run_pytest(*args: str, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run pytest from the project root in a subprocess with a clean environment."""
    return run_module("pytest", "-p", "no:cacheprovider", *args, timeout=timeout)


def run_module(
    module: str, *args: str, timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run `python -m module args` from the project root with a clean environment."""
    if timeout >= 300:
        raise ValueError(f"timeout must stay below pytest-timeout's 300 s, got {timeout}")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
