"""Runs a clause against a subject: draws examples with Hypothesis and guards every call.

`Target` is what a check sees: the implementation under test plus the working dtype, with
guarded conversions and calls that turn any misbehaviour (an exception, a non-array, a wrong
shape or dtype, a mutated input) into a ClauseFailure naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from specs.clauses import Clause, get
from specs.dtypes import EXCHANGE_DTYPE, check_dtype, round_to
from specs.tolerance import ClauseFailure


class NotImplementedByImpl(Exception):
    """The subject lacks an op (or dtype) the clause needs: the clause is skipped, not failed."""


def describe(x: Any) -> str:
    """A short description of an argument for failure messages: shape for arrays, repr otherwise."""
    shape = getattr(x, "shape", None)
    if shape is not None:
        return "(" + ",".join(str(int(s)) for s in shape) + ")"
    return repr(x)


def call_text(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """`op(q(2,4,7,16), ..., causal=True)`: how a failing call reads in messages."""
    parts = [describe(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{op}({', '.join(parts)})"


class Target:
    """The implementation under test, seen through guarded calls in one working dtype."""

    def __init__(self, impl: Any, dtype: str = "float32") -> None:
        self.impl = impl
        self.dtype = check_dtype(dtype)
        self.name = str(getattr(impl, "name", type(impl).__name__))

    def has(self, op: str) -> bool:
        """Whether the implementation provides `op`."""
        return callable(getattr(self.impl, op, None))

    def where(self, text: str) -> str:
        """`text` with the implementation and dtype appended, for failure messages."""
        return f"{text} on {self.name} [{self.dtype}]"

    def inputs(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """Round float64 inputs onto the working dtype so reference and implementation agree."""
        return tuple(round_to(a, self.dtype) for a in arrays)

    def guard(self, text: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call fn; an exception from it becomes a ClauseFailure naming the call."""
        __tracebackhide__ = True
        try:
            return fn(*args, **kwargs)
        except ClauseFailure:
            raise
        except Exception as exc:
            raise ClauseFailure(
                f"raised {type(exc).__name__}: {exc}\n  in {self.where(text)}",
                misbehaviour="raised",
                call=self.where(text),
            ) from exc

    def native(self, x: np.ndarray, dtype: str | None = None) -> Any:
        """Convert a numpy array to the implementation's native array type in `dtype`."""
        __tracebackhide__ = True
        return self.guard("asarray", self.impl.asarray, np.asarray(x), dtype or self.dtype)

    def raw(self, y: Any, text: str = "to_numpy") -> np.ndarray:
        """The implementation's own numpy view of a native result; a non-array fails clearly."""
        __tracebackhide__ = True
        try:
            out = self.impl.to_numpy(y)
        except Exception as exc:
            raise ClauseFailure(
                f"returned {type(y).__name__}, which to_numpy cannot convert "
                f"({type(exc).__name__}: {exc})\n  in {self.where(text)}",
                misbehaviour="non-array result",
                call=self.where(text),
            ) from exc
        if not isinstance(out, np.ndarray):
            raise ClauseFailure(
                f"to_numpy returned {type(out).__name__}, not a numpy array\n"
                f"  in {self.where(text)}",
                misbehaviour="non-array result",
                call=self.where(text),
            )
        return out

    def numpy(self, y: Any, text: str = "to_numpy") -> np.ndarray:
        """Convert a native array to a float64 numpy copy."""
        __tracebackhide__ = True
        return self.raw(y, text).astype(np.float64)

    def result(self, y: Any, text: str, expect_shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Check a native result's dtype and shape, and return it as a float64 numpy copy."""
        __tracebackhide__ = True
        raw = self.raw(y, text)
        expected_dtype = EXCHANGE_DTYPE[self.dtype]
        if raw.dtype != expected_dtype:
            raise ClauseFailure(
                f"returned dtype {raw.dtype}, expected {expected_dtype} "
                f"for {self.dtype} inputs\n  in {self.where(text)}",
                misbehaviour="wrong dtype",
                call=self.where(text),
            )
        if expect_shape is not None and raw.shape != tuple(expect_shape):
            raise ClauseFailure(
                f"returned shape {raw.shape}, expected {tuple(expect_shape)}\n"
                f"  in {self.where(text)}",
                misbehaviour="wrong shape",
                call=self.where(text),
            )
        return raw.astype(np.float64)

    def unchanged(self, natives: tuple[Any, ...], before: list[np.ndarray], text: str) -> None:
        """Fail if the call changed any of its input arrays."""
        __tracebackhide__ = True
        for i, (x, old) in enumerate(zip(natives, before, strict=True)):
            if not np.array_equal(self.numpy(x), old, equal_nan=True):
                raise ClauseFailure(
                    f"mutated its input #{i} {describe(x)}\n  in {self.where(text)}",
                    misbehaviour="mutated input",
                    call=self.where(text),
                )

    def call(
        self,
        op: str,
        *arrays: np.ndarray,
        expect_shape: tuple[int, ...] | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Run `op` on numpy inputs converted to native; return the checked result as float64."""
        __tracebackhide__ = True
        natives = tuple(self.native(a) for a in arrays)
        return self.call_native(op, *natives, expect_shape=expect_shape, **kwargs)

    def call_native(
        self,
        op: str,
        *natives: Any,
        expect_shape: tuple[int, ...] | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Run `op` on native inputs; check them unchanged and the result; return it as float64."""
        __tracebackhide__ = True
        text = call_text(op, natives, kwargs)
        before = [self.numpy(x) for x in natives]
        y = self.guard(text, getattr(self.impl, op), *natives, **kwargs)
        self.unchanged(natives, before, text)
        return self.result(y, text, expect_shape)


def missing(clause: Clause, subject: Any, dtype: str) -> str | None:
    """Why `subject` cannot run `clause` in `dtype`, or None when it can."""
    name = getattr(subject, "name", type(subject).__name__)
    absent = [op for op in clause.needs if not callable(getattr(subject, op, None))]
    if absent:
        return f"not implemented by {name}: {', '.join(absent)}"
    dtypes = getattr(subject, "dtypes", None)
    if dtypes is not None and dtype not in dtypes:
        return f"dtype {dtype} not supported by {name} (supports {', '.join(dtypes)})"
    return None


def run_clause(
    clause: Clause | str,
    subject: Any,
    *,
    dtype: str = "float32",
    settings_: settings | None = None,
) -> None:
    """Check `clause` on `subject` over Hypothesis-drawn examples; raise on the first violation."""
    __tracebackhide__ = True
    clause = get(clause) if isinstance(clause, str) else clause
    reason = missing(clause, subject, dtype)
    if reason:
        raise NotImplementedByImpl(reason)
    target = Target(subject, dtype)

    def prop(data: st.DataObject) -> None:
        clause.check(target, data)

    # Hypothesis keys its example database by function name: one name per clause x subject.
    prop.__name__ = prop.__qualname__ = re.sub(r"\W", "_", f"{clause.id}__{target.name}__{dtype}")
    base = settings_ or settings()
    chosen = settings(base, max_examples=max(1, round(base.max_examples * clause.examples)))
    test = chosen(given(data=st.data())(prop))
    try:
        test()
    except BaseException as exc:
        if isinstance(exc, Exception):
            exc.add_note(f"clause {clause.id}: {clause.sentence}")
        raise
