"""Replay files for a failing clause: its failing example's arrays and a script that remakes its calls.

`write` takes the trace of the failing example (attnspec.specs.runner.Trace: every guarded call into the
implementation, in order, with the arrays the suite drew) and writes two files:
`<clause>-<impl>-<dtype>.npz` (the drawn arrays, float64 rounded to the working dtype, as
`asarray` received them, plus the last call's op and keyword arguments) and
`<clause>-<impl>-<dtype>.py`, a script that loads the implementation with
`attnspec.implementations.discovery.load`, makes the same calls on the same values, and calls
`attnspec.reports.replay_check.report` on the last one: its worst error against the float64 reference
where one is known for the op, else its output. No pytest, no Hypothesis: running the script reproduces the failing calls bit
for bit (for a deterministic implementation).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnspec.specs.runner import Step, Trace

ROOT = Path(__file__).resolve().parents[1]  # the checkout: the script imports from it
ATTENTION_LETTERS = (("B", "Hq", "Tq", "D"), ("B", "Hkv", "Tk", "D"), ("B", "Hkv", "Tk", "Dv"))
LINEAR_LETTERS = (("B", "H", "T", "Dk"), ("B", "H", "T", "Dk"), ("B", "H", "T", "Dv"))
# The contract's letters for each op's arguments (arrays: per axis; scalars: the value).
LETTERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "attention": ATTENTION_LETTERS,
    "tiled_attention": ATTENTION_LETTERS,
    "linear_attention": LINEAR_LETTERS,
    "linear_attention_recurrent": LINEAR_LETTERS,
    "linear_attention_chunked": LINEAR_LETTERS,
    "matmul": (("B", "D"), ("D", "F")),
    "kv_cache": (("B",), ("Hkv",), ("D",), ("max_len",)),
    "append": (("B", "Hkv", "T", "D"), ("B", "Hkv", "T", "D")),
    "forward": (("B", "T"),),
    "prefill": (("B", "T"),),
    "decode": (("B", "T"),),
}
ORDER = ("B", "Hq", "Hkv", "H", "Tq", "Tk", "T", "D", "Dk", "Dv", "F", "max_len")
PLAIN = (bool, int, float, str, type(None))
REFERENCE_OPS = (
    "attention",
    "tiled_attention",
    "matmul",
    *(op for op in LETTERS if "linear" in op),
)


@dataclass(frozen=True)
class Replay:
    """The files written for one failure, the command that runs the script, the failing shape."""

    script: Path
    data: Path
    shape: str  # the last call's shape in the contract's letters: "B=1 Hq=2 ... D=16"
    steps: int  # calls the script makes

    @property
    def command(self) -> str:
        """`python <script>`, the path relative to the working directory when it is inside it."""
        try:
            return f"python {self.script.resolve().relative_to(Path.cwd())}"
        except ValueError:
            return f"python {self.script}"


def stem(clause: str, impl: str, dtype: str) -> str:
    """`<clause>-<impl>-<dtype>`, safe as a file name."""
    return re.sub(r"[^\w.-]", "_", "-".join(x for x in (clause, impl, dtype) if x))


def write(
    trace: Trace,
    directory: Path,
    *,
    clause: str,
    impl: Any,
    locator: str,
    dtype: str,
    device: str | None,
) -> Replay:
    """Write the replay of `trace` (the failing example's calls on `impl`) under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    name = stem(clause, str(getattr(impl, "name", "impl")), dtype)
    script, data = directory / f"{name}.py", directory / f"{name}.npz"
    body = Script(impl)
    body.add(trace)
    arrays: dict[str, Any] = {**body.arrays, **body.last_call()}
    np.savez(data, **arrays)
    header = (
        f'"""Replay of {clause} on {getattr(impl, "name", locator)} [{dtype}]: the calls of the '
        f"failing example, with its values.\n\nWritten by attnspec (reports/replay.py) next to "
        f"{data.name}, which holds the arrays as the suite drew them.\nRun: python {script}\n"
        f'"""\n\nimport sys\nfrom pathlib import Path\n\nimport numpy as np\n\n'
        f"sys.path[:0] = [{str(ROOT)!r}, {os.getcwd()!r}]\n"
        "from attnspec.implementations.discovery import load  # noqa: E402\n"
        "from attnspec.reports.replay_check import one_thread, report  # noqa: E402\n\n"
        f'data = np.load(Path(__file__).with_suffix(".npz"))\n'
        f"impl = load({absolute(locator)!r}, device={device!r})\n"
        "one_thread()  # as the suite runs: one torch CPU thread\n"
    )
    imports = "".join(f"from {m} import {c}  # noqa: E402\n" for m, c in sorted(body.imports))
    script.write_text(header + imports + "\n".join(body.lines) + "\n")
    return Replay(script, data, body.shape(), body.count)


def absolute(locator: str) -> str:
    """A `path/file.py[:attr]` locator made absolute, so the script runs from anywhere."""
    path, sep, attr = locator.partition(":") if ".py" in locator else (locator, "", "")
    if path.endswith(".py") and Path(path).is_file():
        return str(Path(path).resolve()) + sep + attr
    return locator


class Opaque(Exception):
    """An argument the script cannot make: neither a drawn array, an earlier result nor a literal."""


class Script:
    """The lines of a replay script, built call by call from a trace."""

    def __init__(self, impl: Any) -> None:
        self.impl = impl
        self.lines: list[str] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.imports: set[tuple[str, str]] = set()
        self.names: dict[int, str] = {}  # id of a live object -> its name in the script
        self.drawn: dict[int, tuple[np.ndarray, str]] = {}
        self.keys: dict[int, str] = {}  # id of a drawn native -> its array's key in the .npz
        self.count = 0
        self.last: Step | None = None
        self.last_op = ""
        self.calls: list[tuple[str, tuple[Any, ...]]] = []  # (op, args) of every call made
        self.appended: dict[int, list[tuple[str, str]]] = {}  # cache id -> numpy (k, v) appended
        self.expected: dict[int, str] = {}  # id of a cache's keys/values -> what it should hold
        self.models: dict[int, str] = {}  # id of a model from impl.decoder -> "config, weights"
        self.fed: dict[int, tuple[int, list[str]]] = {}  # decoder cache id -> (model, tokens)
        self.decoded = ""  # the reference logits of the last call, when it is a model call

    def add(self, trace: Trace) -> None:
        """Lines for every call of `trace`; stop at a call that cannot be replayed."""
        self.drawn = {id(d.native): (d.array, d.dtype) for d in trace.drawn}
        for i, step in enumerate(trace.steps):
            try:
                fn = self.function(step.fn)
                args = [self.value(a) for a in step.args]
                args += [f"{k}={self.value(v)}" for k, v in step.kwargs.items()]
            except Opaque as exc:
                self.lines.append(f"raise SystemExit({f'call {i} cannot be replayed: {exc}'!r})")
                return
            call = f"r{i} = {fn}({', '.join(args)})"
            if step.returned:
                self.lines.append(call)
            else:  # it raised (or hung) in the run: show what it does now and go on
                self.lines += ["try:", f"    {call}", "except Exception as exc:"]
                self.lines.append(f"    r{i} = exc\n    print('call {i} raised', repr(exc))")
            self.name_result(step.result, f"r{i}")
            self.count, self.last, self.last_op = i + 1, step, fn.rpartition(".")[2]
            self.calls.append((self.last_op, step.args))
            if self.last_op == "append" and step.returned:
                self.track_append(step)
            self.decoded = self.model_reference(step) if step.returned else ""
            if fn == "impl.decoder" and step.returned and len(step.args) == 2:
                self.models[id(step.result)] = ", ".join(self.numpy_of(a) for a in step.args)
        if self.last is not None:
            self.lines.append(self.report_line())

    def track_append(self, step: Step) -> None:
        """After cache.append(k, v) of drawn arrays: the keys and values it hands back should
        be everything appended to that cache so far (the KV clauses' reference)."""
        owner = getattr(step.fn, "__self__", None)
        if len(step.args) != 2 or not all(id(a) in self.keys for a in step.args):
            return
        k, v = (f"data[{self.keys[id(a)]!r}]" for a in step.args)
        appended = self.appended.setdefault(id(owner), [])
        appended.append((k, v))
        if isinstance(step.result, tuple) and len(step.result) == 2:
            for item, arrays in zip(step.result, zip(*appended, strict=True), strict=True):
                self.expected[id(item)] = f"np.concatenate([{', '.join(arrays)}], axis=2)"

    def model_reference(self, step: Step) -> str:
        """The float64 reference decoder's logits for a forward/prefill/decode call on a model
        built by impl.decoder, over every token fed to that cache so far; "" where unknown."""
        owner = getattr(step.fn, "__self__", None)
        model = id(owner) if id(owner) in self.models else None
        if step.args and id(step.args[0]) in self.keys and self.last_op in ("forward", "prefill"):
            fed = [self.numpy_of(step.args[0])] if model is not None else []
        elif self.last_op == "decode" and len(step.args) == 2 and id(step.args[1]) in self.fed:
            model, before = self.fed[id(step.args[1])]
            fed = [*before, self.numpy_of(step.args[0])]
        else:
            return ""
        if model is None or not fed:
            return ""
        if isinstance(step.result, tuple) and len(step.result) == 2:
            self.fed[id(step.result[1])] = (model, fed)
        self.imports.add(("attnspec.specs.reference.decoder", "decoder_forward"))
        T = int(step.args[0].shape[-1]) if hasattr(step.args[0], "shape") else 0
        tokens = fed[0] if len(fed) == 1 else f"np.concatenate([{', '.join(fed)}], axis=1)"
        return f"decoder_forward({self.models[model]}, {tokens})[:, -{T}:]"

    def report_line(self) -> str:
        """`report(...)` on the last call: its inputs as numpy, keyword arguments and result.

        The inputs of an append are what the cache should then hold; a call on a cache's keys
        and values is compared on the tokens appended (what they should be).
        """
        assert self.last is not None
        if self.decoded:
            return f"report(impl, {self.last_op!r}, [], {{}}, r{self.count - 1}, {self.decoded})"
        if self.last_op == "append" and isinstance(self.last.result, tuple):
            inputs = [self.expected.get(id(x), "None") for x in self.last.result]
        elif self.last_op in REFERENCE_OPS:
            inputs = [self.numpy_of(a) for a in self.last.args]
        else:
            inputs = []
        kwargs = ", ".join(f"{k!r}: {self.value(v)}" for k, v in self.last.kwargs.items())
        return (
            f"report(impl, {self.last_op!r}, [{', '.join(inputs)}], {{{kwargs}}}, "
            f"r{self.count - 1})"
        )

    def numpy_of(self, x: Any) -> str:
        """A numpy expression for argument `x`: the drawn array itself, else to_numpy of it."""
        if id(x) in self.drawn:
            self.value(x)
            return f"data[{self.keys[id(x)]!r}]"
        if id(x) in self.expected:
            return self.expected[id(x)]
        if isinstance(x, dict):
            return "{" + ", ".join(f"{k!r}: {self.numpy_of(v)}" for k, v in x.items()) + "}"
        expr = self.value(x)
        return f"impl.to_numpy({expr})" if hasattr(x, "shape") else expr

    def function(self, fn: Callable[..., Any]) -> str:
        """How the script names `fn`: impl.<op>, <earlier result>.<method>, or a builtin."""
        if fn in (len, getattr):
            return str(fn.__name__)
        owner = getattr(fn, "__self__", None)
        if owner is not None and id(owner) in self.names:
            return f"{self.names[id(owner)]}.{fn.__name__}"
        for attr in [getattr(fn, "__name__", ""), *dir(self.impl)]:
            if attr and not attr.startswith("_") and same(getattr(self.impl, attr, None), fn):
                return f"impl.{attr}"
        raise Opaque(f"{fn!r} is not an op of the implementation nor a method of a result")

    def value(self, x: Any) -> str:
        """A Python expression for argument `x`, declaring a drawn array on first use."""
        if id(x) in self.names and not isinstance(x, PLAIN):
            return self.names[id(x)]
        if id(x) in self.drawn:
            array, dtype = self.drawn[id(x)]
            key = f"a{len(self.arrays)}"
            self.arrays[key], self.keys[id(x)] = array, key
            self.names[id(x)] = f"n{key[1:]}"
            self.lines.append(f"n{key[1:]} = impl.asarray(data[{key!r}], {dtype!r})")
            return self.names[id(x)]
        if isinstance(x, PLAIN):
            return repr(x)
        if isinstance(x, np.generic):
            return repr(x.item())
        if isinstance(x, dict):
            return "{" + ", ".join(f"{k!r}: {self.value(v)}" for k, v in x.items()) + "}"
        if isinstance(x, tuple | list):
            inner = ", ".join(self.value(v) for v in x) + ("," if len(x) == 1 else "")
            return f"({inner})" if isinstance(x, tuple) else f"[{inner}]"
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            cls = type(x)
            try:
                same_value = eval(repr(x), {cls.__name__: cls}) == x
            except Exception:
                same_value = False
            if same_value:
                self.imports.add((cls.__module__, cls.__name__))
                return repr(x)
        raise Opaque(f"an argument of type {type(x).__name__}")

    def name_result(self, result: Any, name: str) -> None:
        """Let later calls refer to `result` (and to the items of a tuple result) by name."""
        if isinstance(result, PLAIN):
            return
        self.names.setdefault(id(result), name)
        if isinstance(result, tuple):
            for j, item in enumerate(result):
                if not isinstance(item, PLAIN):
                    self.names.setdefault(id(item), f"{name}[{j}]")

    def last_call(self) -> dict[str, np.ndarray]:
        """The last call's op and keyword arguments, stored in the .npz beside the arrays."""
        kwargs = self.last.kwargs if self.last else {}
        plain = {k: v for k, v in kwargs.items() if isinstance(v, PLAIN)}
        return {"op": np.array(self.last_op), "kwargs": np.array(json.dumps(plain))}

    def shape(self) -> str:
        """The shape of the last call of a contract op, in the contract's letters
        (`B=1 Hq=2 Hkv=1 Tq=3 Tk=5 D=16`); else the last call's array shapes."""
        for op, args in reversed(self.calls):
            if op in LETTERS:
                return shape_text(op, args)
        return shape_text(*self.calls[-1]) if self.calls else ""


def shape_text(op: str, args: Sequence[Any]) -> str:
    """`B=1 Hq=2 ...` for a call of `op` on `args` (Dv left out where it equals D)."""
    letters = LETTERS.get(op)
    sizes: dict[str, int] = {}
    if letters is None:
        shapes = [getattr(a, "shape", None) for a in args]
        return " ".join(
            f"x{i}=" + "x".join(str(int(d)) for d in s) for i, s in enumerate(shapes) if s
        )
    for names, a in zip(letters, args, strict=False):
        dims = getattr(a, "shape", None)
        values = [int(d) for d in dims] if dims is not None else [a] if isinstance(a, int) else []
        for letter, size in zip(names, values, strict=False):
            sizes.setdefault(letter, size)
    if sizes.get("Dv") == sizes.get("D", sizes.get("Dk")):
        sizes.pop("Dv", None)
    return " ".join(f"{k}={sizes[k]}" for k in ORDER if k in sizes)


def same(a: Any, b: Any) -> bool:
    """Whether a and b are the same function (bound methods compare equal, not identical)."""
    if a is b:
        return True
    try:
        return callable(a) and bool(a == b)
    except Exception:
        return False
