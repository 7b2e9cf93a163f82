"""Runs a clause against a subject: draws examples with Hypothesis and guards every call.

`Target` is what a check sees: the implementation under test plus the working dtype, with
guarded conversions and calls that turn any misbehaviour (an exception, a non-array, a wrong
shape or dtype, a mutated input) into a ClauseFailure naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, overload

import hypothesis
import numpy as np
from hypothesis import given, reproduce_failure, settings
from hypothesis import strategies as st

from attnspec.specs.clauses import Clause, ClauseFailure, get
from attnspec.specs.deadline import CallTimeout, deadline
from attnspec.specs.dtypes import DTYPES, EXCHANGE_DTYPE, check_dtype, round_to
from attnspec.specs.limits import declared
from attnspec.specs.limits import of as limits_of
from attnspec.specs.presets import Preset
from attnspec.specs.presets import get as get_preset
from attnspec.specs.threads import one_blas_thread
from attnspec.specs.tolerance import floor, normwise_error

DEFAULT_CALL_TIMEOUT_S = 60.0  # the default limit on one call into an implementation


@dataclass(frozen=True)
class RunOptions:
    """How clauses run in this session: the per-call limit, a Hypothesis example to replay, and
    the model whose shapes to draw."""

    call_timeout: float | None = DEFAULT_CALL_TIMEOUT_S  # seconds; None: no limit
    reproduce: str | None = None  # the blob of an @reproduce_failure line
    shapes: str | None = None  # --shapes: one model's shapes (attnspec.specs.presets) only


_OPTIONS: ContextVar[RunOptions | None] = ContextVar("attnspec_run_options", default=None)
# Filled by run_clause inside `summarised`: the limits declared and what they left out.
_SUMMARY: ContextVar[dict[str, Any] | None] = ContextVar("attnspec_run_summary", default=None)


@contextmanager
def run_options(options: RunOptions) -> Iterator[None]:
    """Run the clauses inside the block with `options` (the pytest plugin wraps each test)."""
    token = _OPTIONS.set(options)
    try:
        yield
    finally:
        _OPTIONS.reset(token)


@contextmanager
def summarised() -> Iterator[dict[str, Any]]:
    """A dict that the clause runs inside the block fill with what the report needs to know
    beyond pass or fail: the implementation's declared limits and what they left out."""
    summary: dict[str, Any] = {}
    token = _SUMMARY.set(summary)
    try:
        yield summary
    finally:
        _SUMMARY.reset(token)


class NotImplementedByImpl(Exception):
    """The subject lacks an op (or dtype) the clause needs: the clause is skipped, not failed."""


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether a and b hold the same values, NaN matching NaN: one vectorised comparison for
    the usual arrays without NaN, numpy's NaN-aware one otherwise."""
    if a.shape != b.shape:
        return False
    return bool((a == b).all()) or bool(np.array_equal(a, b, equal_nan=True))


def describe(x: Any) -> str:
    """A short description of an argument for failure messages: shape for arrays, repr otherwise."""
    shape = getattr(x, "shape", None)
    if shape is not None:
        return "(" + ",".join(str(int(s)) for s in shape) + ")"
    return repr(x)


def call_text(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """`op(q(2,4,7,16), ..., causal=True)`: how a failing call reads in messages."""
    parts = [describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in kwargs.items()]
    return f"{op}({', '.join(parts)})"


class Target:
    """The implementation under test, seen through guarded calls in one working dtype."""

    def __init__(
        self,
        impl: Any,
        dtype: str = "float32",
        locator: str | None = None,
        call_timeout: float | None = DEFAULT_CALL_TIMEOUT_S,
        shapes: str | None = None,
    ) -> None:
        self.impl = impl
        self.dtype = check_dtype(dtype)
        self.name = str(getattr(impl, "name", type(impl).__name__))
        self.locator = locator or self.name  # what --impl / discovery.load takes
        self.call_timeout = call_timeout
        self.hung = ""  # set once a call hangs: later calls fail at once instead of hanging again
        self.log: list[Call] = []  # this example's calls, for the hidden-state and buffer checks
        self.trace = Trace()  # every guarded call of this example, for an exact replay
        self.preset: Preset | None = get_preset(shapes) if shapes else None  # --shapes NAME
        self.device: str | None = None  # where the inputs live (from asarray), for results

    def has(self, op: str) -> bool:
        """Whether the implementation provides `op`."""
        return callable(getattr(self.impl, op, None))

    def where(self, text: str) -> str:
        """`text` with the implementation and dtype appended, for failure messages."""
        return f"{text} on {self.name} [{self.dtype}]"

    @overload
    def inputs(
        self, q: np.ndarray, k: np.ndarray, v: np.ndarray, /
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
    @overload
    def inputs(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]: ...
    def inputs(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """Round float64 inputs onto the working dtype so reference and implementation agree."""
        return tuple(round_to(a, self.dtype) for a in arrays)

    def guard(self, text: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call fn under the call time limit; an exception or a hang becomes a ClauseFailure.

        The call is recorded in `trace` (function, arguments, result) for the replay script.
        """
        __tracebackhide__ = True
        step = self.trace.record(fn, args, kwargs)
        step.result = self.guarded(text, fn, *args, **kwargs)
        step.returned = True
        return step.result

    def guarded(self, text: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`guard` without recording the call."""
        __tracebackhide__ = True
        if self.hung:  # fail the same way again rather than hang again
            raise ClauseFailure(self.hung, misbehaviour="hang", call=self.where(text))
        try:
            with deadline(self.call_timeout):
                return fn(*args, **kwargs)
        except ClauseFailure:
            raise
        except CallTimeout as exc:
            self.hung = (
                f"hang: {exc} (the per-call limit; set it with --call-timeout)\n"
                f"  in {self.where(text)}"
            )
            raise ClauseFailure(self.hung, misbehaviour="hang", call=self.where(text)) from None
        except Exception as exc:
            raise ClauseFailure(
                f"raised {type(exc).__name__}: {exc}\n  in {self.where(text)}",
                misbehaviour="raised",
                call=self.where(text),
            ) from exc

    def call_pair(
        self, text: str, parts: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> tuple[Any, Any]:
        """Call fn guarded; a result that is not a pair fails, naming the pair's `parts`."""
        __tracebackhide__ = True
        out = self.guard(text, fn, *args, **kwargs)
        if not isinstance(out, tuple) or len(out) != 2:
            raise ClauseFailure(
                f"returned {type(out).__name__}, expected ({parts})\n  in {self.where(text)}",
                misbehaviour="wrong result",
                call=self.where(text),
            )
        return out[0], out[1]

    def method(self, obj: Any, name: str) -> Callable[..., Any]:
        """obj.name as a callable; a missing or non-callable one fails, naming it."""
        __tracebackhide__ = True
        fn = getattr(obj, name, None)
        if not callable(fn):
            raise ClauseFailure(
                f"{type(obj).__name__} object has no method {name!r}\n  in {self.where(name)}",
                misbehaviour="missing method",
                call=self.where(name),
            )
        return fn

    def native(self, x: np.ndarray, dtype: str | None = None) -> Any:
        """Convert a numpy array to the implementation's native array type in `dtype`."""
        __tracebackhide__ = True
        out = self.guarded("asarray", self.impl.asarray, np.asarray(x), dtype or self.dtype)
        # A copy, for the replay: what the suite drew, even if the implementation mutates it.
        self.trace.drawn.append(Drawn(out, np.array(x), dtype or self.dtype))
        if getattr(out, "device", None) is not None:
            self.device = str(out.device)
        return out

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
        self.native_kind(y, text)
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

    def native_kind(self, y: Any, text: str) -> None:
        """The native result's own dtype and device, before to_numpy can hide them: a bfloat16
        call answered in float32, or a result moved to another device, fails."""
        __tracebackhide__ = True
        native = str(getattr(y, "dtype", "")).removeprefix("torch.")
        if native in DTYPES and native != self.dtype:
            raise ClauseFailure(
                f"returned dtype {native}, expected {self.dtype} for {self.dtype} inputs\n"
                f"  in {self.where(text)}",
                misbehaviour="wrong dtype",
                call=self.where(text),
            )
        device = getattr(y, "device", None)
        if self.device is not None and device is not None and str(device) != self.device:
            raise ClauseFailure(
                f"returned a result on device {device} for inputs on {self.device}\n"
                f"  in {self.where(text)}",
                misbehaviour="wrong device",
                call=self.where(text),
            )

    def unchanged(self, natives: tuple[Any, ...], before: list[np.ndarray], text: str) -> None:
        """Fail if the call changed any of its input arrays."""
        __tracebackhide__ = True
        for i, (x, old) in enumerate(zip(natives, before, strict=True)):
            if not same_values(self.numpy(x), old):
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
        watch: tuple[Any, ...] = (),
        **kwargs: Any,
    ) -> np.ndarray:
        """Run `op` on native inputs; check them unchanged and the result; return it as float64.

        The positional arrays and the native arrays in `watch` (index arrays passed as keywords,
        a cache's pages) must come back unchanged; other positional objects (a cache) are passed
        as they are."""
        __tracebackhide__ = True
        text = call_text(op, natives, kwargs)
        inputs = tuple(x for x in natives if hasattr(x, "shape")) + watch
        before = [self.numpy(x) for x in inputs]
        y = self.guard(text, getattr(self.impl, op), *natives, **kwargs)
        self.unchanged(inputs, before, text)
        self.same_device(inputs, y, text)
        out = self.result(y, text, expect_shape)
        if not self.log:
            self.repeatable(op, natives, kwargs, out, text)
        self.log.append(Call(op, natives, kwargs, y, out, text))
        return out

    def repeatable(
        self, op: str, natives: tuple[Any, ...], kwargs: dict[str, Any], out: np.ndarray, text: str
    ) -> None:
        """Make the call again: a different answer means the result depends on earlier calls."""
        __tracebackhide__ = True
        again = self.result(self.guard(text, getattr(self.impl, op), *natives, **kwargs), text)
        if same_values(again, out):
            return
        same_nans = np.array_equal(np.isnan(again), np.isnan(out))
        err = normwise_error(np.nan_to_num(again), np.nan_to_num(out)) if same_nans else np.inf
        if not err <= floor(self.dtype, 1):
            raise ClauseFailure(
                f"hidden state: the same call made twice gave different results (normwise "
                f"difference {err:.3g}), so results depend on earlier calls\n  in {self.where(text)}",
                misbehaviour="hidden state",
                call=self.where(text),
            )

    def same_device(self, natives: tuple[Any, ...], y: Any, text: str) -> None:
        """Fail if a result lives on another device than the inputs (torch-style `.device`)."""
        __tracebackhide__ = True
        wanted = getattr(natives[0], "device", None) if natives else None
        got = getattr(y, "device", None)
        if wanted is not None and got is not None and str(got) != str(wanted):
            raise ClauseFailure(
                f"returned a result on device {got} for inputs on {wanted}\n  in {self.where(text)}",
                misbehaviour="wrong device",
                call=self.where(text),
            )

    def begin(self) -> None:
        """Start an example: forget the previous example's calls."""
        self.log = []
        self.trace = Trace()

    def finish(self) -> None:
        """End an example: every result it returned must still hold its value.

        A result that a later call overwrote means the implementation hands out one buffer for
        different inputs.
        """
        __tracebackhide__ = True
        for c in self.log:
            if not same_values(self.numpy(c.result), c.value):
                raise ClauseFailure(
                    f"a later call overwrote the result of {c.text}: it returns the same "
                    f"buffer for different inputs\n  in {self.where(c.text)}",
                    misbehaviour="reused output buffer",
                    call=self.where(c.text),
                )


@dataclass
class Call:
    """One guarded call: enough to check its result later and to repeat it."""

    op: str
    natives: tuple[Any, ...]
    kwargs: dict[str, Any]
    result: Any
    value: np.ndarray
    text: str


@dataclass
class Drawn:
    """A native array made by `Target.native`, and the numpy array it was made from."""

    native: Any
    array: np.ndarray  # as the suite drew it: float64 rounded to the working dtype, or ints
    dtype: str  # what asarray was asked for


@dataclass
class Step:
    """One guarded call into the implementation, as made: the function, arguments and result."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    result: Any = None
    returned: bool = False  # False: it raised (or hung)


@dataclass
class Trace:
    """Every guarded call of one example, in order, with the arrays they were made from.

    The objects themselves are kept (alive, so their ids stay unique): reports/replay.py writes
    them out as a script that makes the same calls on the same values.
    """

    steps: list[Step] = field(default_factory=list)
    drawn: list[Drawn] = field(default_factory=list)

    def record(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Step:
        """Append a call about to be made; the caller fills in its result."""
        step = Step(fn, args, dict(kwargs))
        self.steps.append(step)
        return step


def missing(needs: tuple[str, ...], subject: Any, dtype: str) -> str | None:
    """Why `subject` cannot run ops `needs` in `dtype`, or None when it can.

    An entry "a|b" is met by either op (a decoder from weights, or the user's own model).
    """
    name = getattr(subject, "name", type(subject).__name__)
    absent = [
        op.replace("|", " or ")
        for op in needs
        if not any(callable(getattr(subject, alt, None)) for alt in op.split("|"))
    ]
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
    locator: str | None = None,
    options: RunOptions | None = None,
) -> None:
    """Check `clause` on `subject` over Hypothesis-drawn examples; raise on the first violation.

    `clause` is a Clause or a registered ID (import attnspec.specs.catalog to register them all);
    `locator` is what --impl takes to load `subject` again (for the replay script);
    `options` default to those of the enclosing `run_options` block; with `options.shapes`
    (a model in attnspec.specs.presets) shape-drawing clauses draw only that model's shapes.
    """
    __tracebackhide__ = True
    clause = get(clause) if isinstance(clause, str) else clause
    options = options or _OPTIONS.get() or RunOptions()
    reason = missing(clause.needs, subject, dtype)
    if reason:
        raise NotImplementedByImpl(reason)
    target = Target(subject, dtype, locator, options.call_timeout, options.shapes)

    def prop(data: st.DataObject) -> None:
        target.begin()
        clause.check(target, data)
        target.finish()

    # Hypothesis keys its example database by function name: one name per clause x subject.
    name = f"{clause.id}__{target.name}__{dtype}" + (
        f"__{options.shapes}" if options.shapes else ""
    )
    prop.__name__ = prop.__qualname__ = re.sub(r"\W", "_", name)
    base = settings_ or settings()
    chosen = settings(base, max_examples=max(1, round(base.max_examples * clause.examples)))
    test = chosen(given(data=st.data())(prop))
    if options.reproduce:  # as printed: @reproduce_failure('6.x', b'BLOB'); take BLOB or b'BLOB'
        blob = options.reproduce.strip().removeprefix("b").strip("'\"")
        test = reproduce_failure(hypothesis.__version__, blob.encode())(test)
    limits = limits_of(subject)
    try:
        with one_blas_thread(), declared(limits):
            test()
    except Exception as exc:
        exc.add_note(f"clause {clause.id}: {clause.sentence}")
        if target.trace.steps:
            exc.attnspec_trace = target.trace  # type: ignore[attr-defined]  # for the replay file
        raise
    finally:
        summary = _SUMMARY.get()
        if summary is not None:
            summary["limits"] = limits.describe()
            summary["left_out"] = sorted(limits.left_out)
