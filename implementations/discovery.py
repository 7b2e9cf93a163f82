"""Finding implementations: shipped names, `module:attr`, a `.py` path, or an entry point.

Every way of naming an implementation ends in `load`, which either returns a usable object or
raises ImplError with a one-line message that says what is available.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from attnspec.specs.contract import Implementation
from attnspec.specs.limits import LimitsError
from attnspec.specs.limits import of as limits_of

SHIPPED: dict[str, str] = {
    "numpy": "attnspec.implementations.numpy_impl",
    "torch": "attnspec.implementations.torch_impl:impl",
}
# Library baselines: shipped, but run only when named (--impl sdpa-flash), so the default run
# stays numpy + torch. docs/libraries.md describes them.
LIBRARIES: dict[str, str] = {
    "sdpa-math": "attnspec.implementations.sdpa_impl:math_impl",
    "sdpa-flash": "attnspec.implementations.sdpa_impl:flash",
    "sdpa-efficient": "attnspec.implementations.sdpa_impl:efficient",
    "sdpa-cudnn": "attnspec.implementations.sdpa_impl:cudnn",
    "flex": "attnspec.implementations.flex_impl:impl",
    "hf": "attnspec.implementations.hf_impl:impl",
    "vllm-cpu": "attnspec.implementations.vllm_cpu_impl:impl",
}
ENTRY_POINT_GROUP = "attnspec.implementations"
ENV_VAR = "ATTNSPEC_IMPL"  # comma-separated, same forms as --impl
REQUIRED = ("name", "asarray", "to_numpy")


class ImplError(Exception):
    """An implementation could not be loaded; the message is one line for the user."""


@dataclass(frozen=True)
class UnderTest:
    """One implementation under test: the loaded object and the locator that loads it again.

    It stands in for the implementation: what it lacks (ops, `asarray`, `dtypes`, ...) is
    read from `impl`, so it goes wherever an implementation goes.
    """

    locator: str  # what --impl took: a shipped name, module:attr, path.py[:attr], entry point
    impl: Implementation

    @property
    def name(self) -> str:
        """The implementation's name (test ids, table columns)."""
        return str(self.impl.name)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr in ("locator", "impl"):
            raise AttributeError(attr)
        return getattr(self.impl, attr)


def registered() -> dict[str, Any]:
    """Entry points in the attnspec.implementations group, by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> str:
    """What --impl accepts, for error messages."""
    names = [*SHIPPED, *registered()]
    names += [*LIBRARIES]
    return f"available: {', '.join(names)} (or module:attr, or path/to/file.py[:attr])"


def last_line(exc: BaseException) -> str:
    """`ErrorType: message` on one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")


def import_target(target: str) -> Any:
    """Import `module[:attr]`, or `path/file.py[:attr]`; return the module or attribute."""
    module_name, _, attr = target.partition(":")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ImplError(f"no file {module_name!r}; {available()}")
        spec = importlib.util.spec_from_file_location(f"attnspec_user_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ImplError(f"cannot import {module_name!r}: {last_line(exc)}") from exc
    else:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ImplError(f"cannot import {module_name!r}: {last_line(exc)}") from exc
    if not attr:
        return module
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImplError(f"module {module_name!r} has no attribute {attr!r}") from None


def validate(obj: Any, label: str) -> Implementation:
    """Fail with a one-line message unless `obj` has a name and the array-exchange functions."""
    absent = [a for a in REQUIRED if not hasattr(obj, a)]
    if absent:
        raise ImplError(
            f"{label} is not an implementation: it lacks {', '.join(absent)} "
            f"(an implementation needs {', '.join(REQUIRED)} and some ops)"
        )
    if not isinstance(obj.name, str) or not obj.name:
        raise ImplError(f"{label}.name must be a non-empty string, got {obj.name!r}")
    try:
        limits_of(obj)
    except LimitsError as exc:
        raise ImplError(f"{label}: {exc}") from None
    return obj


def load(locator: str, device: str | None = None) -> Any:
    """The implementation `locator` names, moved to `device` when it supports that."""
    locator = locator.strip()
    eps = registered()
    if locator in SHIPPED:
        obj = import_target(SHIPPED[locator])
    elif locator in LIBRARIES:
        obj = import_target(LIBRARIES[locator])
    elif locator in eps:
        try:
            obj = eps[locator].load()
        except Exception as exc:
            raise ImplError(f"cannot load entry point {locator!r}: {last_line(exc)}") from exc
    elif ":" in locator or locator.endswith(".py") or "." in locator:
        obj = import_target(locator)
    elif importlib.util.find_spec(locator) is not None:
        obj = import_target(locator)
    else:
        raise ImplError(f"unknown implementation {locator!r}; {available()}")
    obj = validate(obj, locator)
    on_device = getattr(obj, "on_device", None)
    if device is not None and callable(on_device):
        obj = on_device(device)
    return obj


def under_test(locator: str, device: str | None = None) -> UnderTest:
    """The implementation `locator` names, with its locator, ready to parametrize tests."""
    return UnderTest(locator.strip(), load(locator, device))


def flop_counter() -> Any | None:
    """What COST-COUNTED counts FLOPs with (attnspec.implementations.torch_impl.counted), or None
    when torch is not installed."""
    try:
        from attnspec.implementations.torch_impl.counted import counter
    except ImportError:
        return None
    return counter


def requested(options: list[str]) -> list[str]:
    """The --impl values, else the ATTNSPEC_IMPL variable's, else empty (meaning: the default)."""
    if options:
        return [s for opt in options for s in opt.split(",") if s.strip()]
    env = os.environ.get(ENV_VAR, "")
    return [s for s in env.split(",") if s.strip()]


def default_under_test(device: str | None = None) -> list[UnderTest]:
    """Every shipped implementation that imports, plus every registered one."""
    found = []
    for locator in [*SHIPPED, *registered()]:
        try:
            found.append(under_test(locator, device))
        except ImplError:
            continue
    return found
