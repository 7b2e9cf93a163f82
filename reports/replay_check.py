"""What a replay script (written by reports/replay.py) runs after remaking the failing calls:
the last call's error against the float64 reference, where one is known, else its output."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from attnspec.specs.reference import attention as attn_ref
from attnspec.specs.reference import linear as lin_ref
from attnspec.specs.tolerance import normwise_error


def one_thread() -> None:
    """One torch CPU thread, as attnspec.suite.harness runs the clauses (reductions split the same way)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def reference(
    op: str, inputs: list[np.ndarray], kwargs: dict[str, Any]
) -> tuple[np.ndarray, float | None] | None:
    """The float64 reference output of `op` and the magnitude its error is relative to, or None
    where no reference is known for the op (or the call carries a state in)."""
    if op in ("attention", "tiled_attention") and len(inputs) == 3:
        q, k, v = inputs
        causal, scale = bool(kwargs.get("causal", False)), kwargs.get("scale")
        window, softcap = kwargs.get("window"), kwargs.get("softcap")
        return (
            attn_ref.attention(q, k, v, causal=causal, scale=scale, window=window, softcap=softcap),
            attn_ref.magnitude(q, k, v, causal=causal, scale=scale, window=window, softcap=softcap),
        )
    if op.startswith("linear_attention") and len(inputs) == 3 and kwargs.get("state") is None:
        options: dict[str, Any] = {k: kwargs[k] for k in ("feature_map", "eps") if k in kwargs}
        q, k, v = inputs
        causal = bool(kwargs.get("causal", True))
        return lin_ref.linear_attention_ref(q, k, v, causal=causal, **options), None
    if op == "matmul" and len(inputs) == 2:
        return inputs[0] @ inputs[1], None
    return None


def report(
    impl: Any,
    op: str,
    inputs: list[Any],
    kwargs: dict[str, Any],
    result: Any,
    expected: np.ndarray | None = None,
) -> float | None:
    """Print the last call's error against the float64 reference (or its output); return it.

    The reference is computed from `inputs` for the ops `reference` knows, else `expected`
    (the reference decoder's logits) is used when given."""
    if isinstance(result, BaseException):
        return None  # the call raised: the script printed it
    if op == "append" and len(inputs) == 2 and isinstance(result, tuple):
        return report_cache(impl, inputs, result)
    out = result[0] if isinstance(result, tuple) else result  # (o, lse) / (o, state): o
    arrays = [np.asarray(x, np.float64) for x in inputs if isinstance(x, np.ndarray)]
    known = reference(op, arrays, kwargs) if expected is None else (expected, None)
    if op == "tiled_attention" and kwargs.get("return_lse") and isinstance(result, tuple):
        lse = attn_ref.log_sum_exp(
            *arrays[:2], causal=bool(kwargs.get("causal")), scale=kwargs.get("scale")
        )
        compare(impl, f"{op} lse", result[1], (lse, None))
    if known is None:
        with np.printoptions(threshold=64, edgeitems=2):
            print(
                f"{op} returned {shown(impl, out)}\n(no float64 reference is known for this call)"
            )
        return None
    return compare(impl, op, out, known)


def compare(impl: Any, what: str, out: Any, known: tuple[np.ndarray, float | None]) -> float | None:
    """Print `out`'s normwise error against the reference `known` (output, magnitude)."""
    got = np.asarray(impl.to_numpy(out), np.float64)
    expected, magnitude = known
    if got.shape != expected.shape:
        print(f"{what} returned shape {got.shape}, the reference has {expected.shape}")
        return None
    err = normwise_error(got, expected, magnitude)
    diff = np.nan_to_num(np.abs(got - expected), nan=np.inf)
    where = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    print(
        f"{what}: normwise relative error {err:.6g} against the float64 reference; worst element "
        f"at index {where}: got {got[where]:.6g}, expected {expected[where]:.6g}"
    )
    return err


def shown(impl: Any, x: Any) -> str:
    """An output for printing: its numpy view with its shape, else its repr."""
    try:
        array = impl.to_numpy(x)
        return f"shape {array.shape}:\n{array}"
    except Exception:
        return repr(x)


def report_cache(impl: Any, expected: list[Any], result: tuple[Any, Any]) -> float | None:
    """Print where the keys and values a cache handed back differ from the tokens appended."""
    wrong = 0
    for name, want, got in zip(("keys", "values"), expected, result, strict=True):
        if want is None:
            continue
        have = np.asarray(impl.to_numpy(got), np.float64)
        if have.shape != want.shape:
            print(
                f"append: cached {name} have shape {have.shape}, the tokens appended {want.shape}"
            )
            wrong += 1
            continue
        bad = np.argwhere(have != want)
        if len(bad):
            at = tuple(int(i) for i in bad[0])
            print(
                f"append: cached {name} differ from the tokens appended at {len(bad)} of "
                f"{want.size} elements; first at index {at}: got {have[at]:.6g}, "
                f"appended {want[at]:.6g}"
            )
            wrong += 1
    if not wrong:
        print("append: the cache holds exactly the tokens appended")
    return float(wrong)
