"""The tolerance audit: every budget against the error of computations that are correct.

    python -m attnspec.suite.meta.budgets [--tier default|smoke] [--dtype D ...] [--clause ID ...]
                                 [--subject NAME ...] [--markdown FILE]
    python -m attnspec.suite.meta.budgets --hf-draws 1000

Runs each clause that compares with a reference (or with another output of the same
implementation) on correct subjects: the shipped numpy and torch implementations, plain
reorderings of them (the same computation, in the same precision, summed in another order;
see `reordered`), and attention as Hugging Face's eager path computes it (`eager`). `attnspec.specs.tolerance.recording` captures every (error, budget) pair the clause's
own `assert_close` calls make, so no clause is re-implemented here. Prints, per clause and
dtype, the median and the worst (smallest) ratio budget / error over the tier's draws: a worst
ratio below 1 is a false alarm on a correct computation; a large worst ratio is a budget far
looser than any correct computation needs (the FlashAttention rule asks for a few x).
Exit status 1 when a correct subject fails a clause. `--hf-draws N` counts instead the false
alarms on N random draws of issue 21's float16 decode (`hf_float16_decode`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from hypothesis import settings
from tabulate import tabulate

import attnspec.implementations.numpy_impl as numpy_impl
from attnspec.specs import profiles
from attnspec.specs.catalog import all_clauses
from attnspec.specs.clauses import ClauseFailure
from attnspec.specs.decoder_weights import DecoderConfig
from attnspec.specs.dtypes import round_to
from attnspec.specs.runner import NotImplementedByImpl, Target, run_clause
from attnspec.specs.threads import one_blas_thread
from attnspec.specs.tolerance import Comparison, recording
from attnspec.specs.varlen import compare_sequences

DTYPES = ("float32", "bfloat16", "float16")
REORDER_SEED = 12345
# Ops whose first two arguments are queries and keys with the head dim last: reversing that
# axis of both leaves every logit the same sum in another order. (paged_attention reads its
# keys from the cache object: it runs as the base computes it.)
QK_OPS = ("attention", "tiled_attention", "varlen_attention")
# Weights of the decoder along the model dim d (axis) and the feed-forward dim F (axis).
D_AXIS = {
    "embed": 1,
    "attn_norm": 0,
    "wq": 0,
    "wk": 0,
    "wv": 0,
    "wo": 1,
    "mlp_norm": 0,
    "w_gate": 0,
    "w_up": 0,
    "w_down": 1,
    "final_norm": 0,
    "lm_head": 0,
}
F_AXIS = {"w_gate": 1, "w_up": 1, "w_down": 0}


def take(x: Any, index: np.ndarray, axis: int) -> Any:
    """x (numpy array or torch tensor) indexed along `axis` by `index`, as a new array."""
    if isinstance(x, np.ndarray):
        return np.take(x, index, axis=axis)
    import torch  # only a torch subject hands over tensors

    return torch.index_select(x, axis, torch.as_tensor(index, device=x.device)).contiguous()


def flip_last(x: Any) -> Any:
    """x with its last axis reversed, as a new array."""
    return take(x, np.arange(x.shape[-1])[::-1].copy(), x.ndim - 1)


def permuted_weights(config: DecoderConfig, weights: Mapping[str, Any]) -> dict[str, Any]:
    """The same model with its model dim d and feed-forward dim F permuted: every matmul and
    norm sums its terms in another order, the logits are mathematically unchanged."""
    rng = np.random.default_rng(REORDER_SEED)
    pd, pf = rng.permutation(config.d_model), rng.permutation(config.d_ff)
    out = {}
    for name, w in weights.items():
        short = name.rsplit(".", 1)[-1]
        if short in D_AXIS:
            w = take(w, pd, D_AXIS[short])
        if short in F_AXIS:
            w = take(w, pf, F_AXIS[short])
        out[name] = w
    return out


def reordered(base: Any) -> SimpleNamespace:
    """`base` computing the same functions in the same precision, summed in another order:
    attention ops see q and k with the head dim reversed (each logit's dot product runs
    backwards), the decoder is built on weights with the model and feed-forward dims permuted.
    Other ops are `base`'s own."""
    ops = {name: getattr(base, name) for name in dir(base) if not name.startswith("_")}

    def qk_reversed(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(q: Any, k: Any, *args: Any, **kwargs: Any) -> Any:
            return fn(flip_last(q), flip_last(k), *args, **kwargs)

        return call

    for op in QK_OPS:
        if callable(ops.get(op)):
            ops[op] = qk_reversed(ops[op])
    if callable(ops.get("decoder")):
        build = ops["decoder"]

        def decoder(config: DecoderConfig, weights: Mapping[str, Any]) -> Any:
            return build(config, permuted_weights(config, weights))

        ops["decoder"] = decoder
    ops["name"] = f"{base.name}-reordered"
    return SimpleNamespace(**ops)


def eager(base: Any) -> SimpleNamespace:
    """Attention as Hugging Face's eager path computes it on `base`'s torch tensors: logits
    q k^T and their scaling stored in the working dtype, softmax in float32 stored in the
    working dtype, P V in the working dtype. A correct computation less accurate than the
    float32-accumulating kernels, and the plainest one in half precision."""
    import torch

    def attention(q: Any, k: Any, v: Any, *, causal: bool, scale: float | None = None) -> Any:
        Hq, Tq, D, Hkv, Tk = q.shape[1], q.shape[2], q.shape[3], k.shape[1], k.shape[2]
        k, v = (x.repeat_interleave(Hq // Hkv, dim=1) for x in (k, v))  # (B, Hq, Tk, *)
        s = torch.matmul(q, k.transpose(2, 3)) * (D**-0.5 if scale is None else scale)
        if causal:  # bottom-right aligned
            i, j = torch.arange(Tq)[:, None], torch.arange(Tk)[None, :]
            s = s.masked_fill(j > i + (Tk - Tq), float("-inf"))  # (B, Hq, Tq, Tk)
        p = torch.softmax(s, dim=-1, dtype=torch.float32).nan_to_num(0.0).to(q.dtype)
        return torch.matmul(p, v)  # (B, Hq, Tq, Dv)

    return SimpleNamespace(
        name=f"{base.name}-eager",
        asarray=base.asarray,
        to_numpy=base.to_numpy,
        dtypes=("float32", "bfloat16", "float16"),
        attention=attention,
    )


def subjects() -> dict[str, Any]:
    """The correct computations audited: numpy, torch (when installed), their reorderings, and
    torch's tensors through Hugging Face's eager attention recipe (`eager`)."""
    found: dict[str, Any] = {"numpy": numpy_impl, "numpy-reordered": reordered(numpy_impl)}
    try:
        from attnspec.implementations.torch_impl import impl as torch_impl
    except ImportError:
        return found
    found.update(torch=torch_impl, **{"torch-reordered": reordered(torch_impl)})
    found["torch-eager"] = eager(torch_impl)
    return found


@dataclass
class Cell:
    """The comparisons of one clause in one dtype, over every subject, and any false alarm."""

    comparisons: list[tuple[str, Comparison]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def ratios(self) -> list[float]:
        """budget / error of each comparison whose error is not exactly zero."""
        return [c.tolerance / c.error for _, c in self.comparisons if c.error > 0]

    def worst(self) -> tuple[float, str]:
        """The smallest ratio and the subject that gave it."""
        pairs = [(c.tolerance / c.error, s) for s, c in self.comparisons if c.error > 0]
        return min(pairs) if pairs else (float("inf"), "")

    def median(self) -> float:
        """The median ratio (inf when every error was exactly zero)."""
        r = self.ratios()
        return statistics.median(r) if r else float("inf")


def audit_one(clause_id: str, subject: Any, dtype: str, tier: settings) -> Cell:
    """One clause on one subject in one dtype: its comparisons, and its failure if any."""
    cell = Cell()
    with recording() as got:
        try:
            run_clause(clause_id, subject, dtype=dtype, settings_=tier)
        except NotImplementedByImpl:
            pass
        except ClauseFailure as failure:
            cell.failures.append(f"{subject.name}: {str(failure).splitlines()[0]}")
    cell.comparisons = [(subject.name, c) for c in got]
    return cell


def audit(
    clause_ids: Iterable[str],
    dtypes: Iterable[str],
    named: Mapping[str, Any],
    tier: settings,
    progress: bool = True,
) -> dict[tuple[str, str], Cell]:
    """Every (clause, dtype) cell over every subject; cells with no comparison are left out."""
    cells: dict[tuple[str, str], Cell] = {}
    for clause_id in clause_ids:
        for dtype in dtypes:
            cell = Cell()
            for subject in named.values():
                one = audit_one(clause_id, subject, dtype, tier)
                cell.comparisons += one.comparisons
                cell.failures += one.failures
            if cell.comparisons or cell.failures:
                cells[clause_id, dtype] = cell
                if progress:
                    print(f"{clause_id} {dtype}: {row(cell)[1:]}", file=sys.stderr, flush=True)
    return cells


HF_KEYS, HF_D, HF_SCALE = 15, 64, 1.64  # issue 21's false alarm: two dominant logits near 19


def hf_float16_decode(draws: int, heads: int = 1) -> tuple[int, np.ndarray]:
    """PAGED-EQ-DENSE's comparison (attnspec.specs.varlen.compare_sequences) of a correct float16 decode:
    one query over HF_KEYS keys, head dim HF_D, scale HF_SCALE, computed as Hugging Face's
    eager paged attention does (q k^T stored in float16, scaled in float16, softmax in float32
    stored in float16, P V accumulated in float32 and stored in float16). Returns the number of
    draws the budget rejects and each draw's budget / error."""
    target = Target(numpy_impl, "float16")
    alarms, ratios = 0, []
    for seed in range(draws):
        rng = np.random.default_rng(seed)
        q, k, v = (  # (1, H, D), (Tk, H, D), (Tk, H, D) packed
            round_to(rng.standard_normal((n, heads, HF_D)), "float16")
            for n in (1, HF_KEYS, HF_KEYS)
        )
        s = round_to(round_to(np.einsum("qhd,khd->hqk", q, k), "float16") * HF_SCALE, "float16")
        e = np.exp(s - s.max(-1, keepdims=True))  # (H, 1, Tk)
        p = round_to(e / e.sum(-1, keepdims=True), "float16")  # (H, 1, Tk)
        out = round_to(np.einsum("hqk,khd->qhd", p, v), "float16")  # (1, H, D)
        with recording() as got:
            try:
                compare_sequences(
                    target, out, q, np.array([0, 1]), [k], [v], causal=True,
                    opts={"scale": HF_SCALE}, what="float16 decode",
                )  # fmt: skip
            except ClauseFailure:
                alarms += 1
        ratios.append(got[0].tolerance / got[0].error)
    return alarms, np.array(ratios)


def fmt(x: float) -> str:
    """A ratio with three significant digits ('exact' for an infinite one)."""
    return "exact" if x == float("inf") else f"{x:.3g}"


def row(cell: Cell) -> list[str]:
    """n, median, worst, who gave the worst, false alarms."""
    worst, who = cell.worst()
    return [
        str(len(cell.comparisons)),
        fmt(cell.median()),
        fmt(worst),
        who,
        str(len(cell.failures)),
    ]


def render(cells: dict[tuple[str, str], Cell], markdown: bool = False) -> str:
    """The table: clause, dtype, comparisons, median and worst budget / error."""
    headers = ["clause", "dtype", "n", "median", "worst", "worst on", "false alarms"]
    rows = [[c, d, *row(cell)] for (c, d), cell in cells.items()]
    return tabulate(rows, headers=headers, tablefmt="github" if markdown else "simple")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tier", choices=sorted(profiles.TIERS), default="default")
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="repeatable")
    parser.add_argument("--clause", action="append", help="a clause ID (repeatable)")
    parser.add_argument("--subject", action="append", help="numpy, torch, ...-reordered")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    parser.add_argument(
        "--hf-draws", type=int, help="only count false alarms on N draws of issue 21's case"
    )
    args = parser.parse_args(argv)
    if args.hf_draws:
        for heads in (1, 2):
            alarms, ratios = hf_float16_decode(args.hf_draws, heads)
            print(
                f"float16 decode, {HF_KEYS} keys, D={HF_D}, scale {HF_SCALE}, {heads} head(s): "
                f"{alarms} false alarms in {args.hf_draws} draws; budget / error min "
                f"{ratios.min():.3g}, median {np.median(ratios):.3g}"
            )
        return 0
    tier = settings(**profiles.COMMON, **profiles.TIERS[args.tier])  # type: ignore[arg-type]
    named = subjects()
    if args.subject:
        named = {k: v for k, v in named.items() if k in args.subject}
    clause_ids = args.clause or [c.id for c in all_clauses()]
    with one_blas_thread():
        cells = audit(clause_ids, args.dtype or DTYPES, named, tier)
    print(render(cells))
    alarms = [f for cell in cells.values() for f in cell.failures]
    for line in alarms:
        print("FALSE ALARM:", line)
    if args.markdown:
        args.markdown.write_text(render(cells, markdown=True) + "\n")
    return 1 if alarms else 0


if __name__ == "__main__":
    sys.exit(main())
