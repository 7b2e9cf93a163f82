"""What an implementation declares it supports, beyond its ops, dtypes and options.

Real kernels accept only some block sizes and head dims, express a non-causal sliding window
their own way, and offer some ops for causal calls only. An implementation says so in an
optional `limits` attribute (a dict, or any object with these attributes):

    limits = {
        "block_sizes": 16,                  # int: any multiple of it; or a tuple of the sizes taken
        "head_dims": (32, 64, 80, 128),     # head dims taken (D and Dv); others are never drawn
        "window": "symmetric",              # non-causal window: "left" (attnspec's), "symmetric"
                                            # (|j - p| < w: vLLM, flex), or "none" (not taken)
        "causal_only": ("paged_attention",),  # ops that take no non-causal call
        "kv_dtypes": ("float8_e4m3fn",),    # quantized cache storage types taken (else all)
    }

A limit narrows what the strategies draw; it never skips a clause. A drawn value the
implementation does not take is moved to the nearest one it does (a head dim up to the next
declared one, a block size up to the next multiple, a non-causal call made causal), so every
clause still runs at every regime the kernel accepts. Each move is noted (`note`): the
verdict table and the JSON report say what the declaration left out.

`current()` is the declaration of the implementation whose clause is running (the runner sets
it around each clause run), so the strategies need no extra argument.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

WINDOWS = ("left", "symmetric", "none")  # non-causal window conventions
KEYS = ("block_sizes", "head_dims", "window", "causal_only", "kv_dtypes")


class LimitsError(ValueError):
    """A `limits` declaration that cannot be read; the message is one line for the user."""


@dataclass(frozen=True)
class Limits:
    """One implementation's declared limits; the default takes everything."""

    block_multiple: int | None = None  # block sizes must be multiples of this
    block_sizes: tuple[int, ...] | None = None  # or exactly one of these
    head_dims: tuple[int, ...] | None = None
    window: str = "left"  # the non-causal window convention
    causal_only: frozenset[str] = frozenset()
    kv_dtypes: tuple[str, ...] | None = None  # quantized-cache storage types (attnspec.specs.quant)
    left_out: set[str] = field(default_factory=set, compare=False)  # what the draws moved

    @property
    def declared(self) -> bool:
        """Whether anything is limited at all."""
        return bool(
            self.block_multiple
            or self.block_sizes
            or self.head_dims
            or self.window != "left"
            or self.causal_only
            or self.kv_dtypes
        )

    def describe(self) -> str:
        """The declaration on one line, for reports."""
        parts = []
        if self.block_multiple:
            parts.append(f"block sizes multiples of {self.block_multiple}")
        if self.block_sizes:
            parts.append(f"block sizes {', '.join(map(str, self.block_sizes))}")
        if self.head_dims:
            parts.append(f"head dims {', '.join(map(str, self.head_dims))}")
        if self.window != "left":
            parts.append(f"non-causal window {self.window}")
        if self.causal_only:
            parts.append(f"causal only: {', '.join(sorted(self.causal_only))}")
        if self.kv_dtypes:
            parts.append(f"kv cache in {', '.join(self.kv_dtypes)}")
        return "; ".join(parts)

    def note(self, text: str) -> None:
        """Record that the declaration moved a draw (`text` says what was left out)."""
        self.left_out.add(text)

    def head_dim(self, D: int) -> int:
        """D, or the smallest declared head dim above it (the largest when none is)."""
        if not self.head_dims or D in self.head_dims:
            return D
        above = [d for d in self.head_dims if d >= D]
        moved = min(above) if above else max(self.head_dims)
        self.note(f"head dim {D}")
        return moved

    def block_size(self, b: int) -> int:
        """b, or the next block size the implementation takes."""
        if self.block_multiple and b % self.block_multiple:
            self.note(f"block size {b}")
            return (b // self.block_multiple + 1) * self.block_multiple
        if self.block_sizes and b not in self.block_sizes:
            above = [s for s in self.block_sizes if s >= b]
            self.note(f"block size {b}")
            return min(above) if above else max(self.block_sizes)
        return b

    def causal(self, op: str, causal: bool) -> bool:
        """The causal flag `op` is called with: True when `op` is causal-only."""
        if not causal and op in self.causal_only:
            self.note(f"non-causal {op}")
            return True
        return causal

    def noncausal_window(self) -> bool:
        """Whether a non-causal call may carry a window (noting it when it may not)."""
        if self.window == "none":
            self.note("non-causal window")
            return False
        return True


NONE = Limits()


def of(impl: Any) -> Limits:
    """The limits `impl` declares (a `limits` dict or object), or NONE; a malformed one raises
    LimitsError naming the entry."""
    raw = getattr(impl, "limits", None)
    if raw is None:
        return Limits()
    get = raw.get if isinstance(raw, dict) else lambda key, default=None: getattr(raw, key, default)
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - set(KEYS))
        if unknown:
            raise LimitsError(f"limits: unknown entries {unknown}; known: {', '.join(KEYS)}")
    blocks = get("block_sizes", None)
    multiple, sizes = None, None
    if isinstance(blocks, int) and not isinstance(blocks, bool):
        multiple = blocks
    elif blocks is not None:
        sizes = ints(blocks, "block_sizes")
    if multiple is not None and multiple < 1:
        raise LimitsError(f"limits: block_sizes must be a positive multiple, got {multiple}")
    dims = get("head_dims", None)
    window = get("window", None) or "left"
    if window not in WINDOWS:
        raise LimitsError(f"limits: window {window!r}; choose from {', '.join(WINDOWS)}")
    causal_only = get("causal_only", None) or ()
    if isinstance(causal_only, str):
        causal_only = (causal_only,)
    kv_dtypes = get("kv_dtypes", None)
    if isinstance(kv_dtypes, str):
        kv_dtypes = (kv_dtypes,)
    return Limits(
        block_multiple=multiple,
        block_sizes=sizes,
        head_dims=ints(dims, "head_dims") if dims is not None else None,
        window=str(window),
        causal_only=frozenset(str(op) for op in causal_only),
        kv_dtypes=tuple(str(d) for d in kv_dtypes) if kv_dtypes else None,
    )


def ints(values: Any, key: str) -> tuple[int, ...]:
    """A non-empty sorted tuple of positive ints, or a LimitsError naming `key`."""
    try:
        out = tuple(sorted(int(v) for v in values))
    except (TypeError, ValueError):
        raise LimitsError(
            f"limits: {key} must be an int or a list of ints, got {values!r}"
        ) from None
    if not out or out[0] < 1:
        raise LimitsError(f"limits: {key} must list positive sizes, got {values!r}")
    return out


_CURRENT: ContextVar[Limits] = ContextVar("attnspec_limits", default=NONE)


def current() -> Limits:
    """The limits of the implementation whose clause is running (NONE outside a clause run)."""
    return _CURRENT.get()


@contextmanager
def declared(limits: Limits) -> Iterator[Limits]:
    """Draw inside `limits` within the block."""
    token = _CURRENT.set(limits)
    try:
        yield limits
    finally:
        _CURRENT.reset(token)
