"""Meta-tests for the RoPE clauses: the default tier reaches the regimes where rotary kernels
break, a float32 phase as serving engines compute it passes, and a bf16 one fails in torch.

The reach is recorded here rather than in suite/meta/regimes.py, whose Recorder wraps the
attention ops: a wrapper with the implementation's name and a `rope` that notes each call, so
Hypothesis draws exactly the examples of numpy's own default-tier run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

import attnspec.implementations.numpy_impl as numpy_impl
from attnspec.specs import profiles
from attnspec.specs.profiles import KILL
from attnspec.specs.rope import HEAD_DIMS, MAX_POSITION
from attnspec.specs.runner import run_clause
from attnspec.specs.threads import one_blas_thread
from attnspec.specs.tolerance import ClauseFailure
from attnspec.suite.harness import few_threads
from attnspec.suite.meta.mutants import derive


@dataclass
class RopeSeen:
    """Every rope call of one clause run: positions, head dim, rotary dim, style, scaling."""

    calls: list[dict[str, Any]] = field(default_factory=list)


class RopeRecorder:
    """numpy's implementation with a rope that notes what it was handed."""

    def __init__(self, impl: Any) -> None:
        self.impl, self.seen = impl, RopeSeen()
        self.name, self.dtypes = impl.name, impl.dtypes
        self.asarray, self.to_numpy = impl.asarray, impl.to_numpy

    def rope(self, x: Any, positions: Any, **kw: Any) -> Any:
        D = int(x.shape[-1])
        self.seen.calls.append(
            {
                "positions": np.asarray(positions).tolist(),
                "D": D,
                "r": kw.get("rotary_dim") or D,
                "style": kw.get("style", "neox"),
                "scaling": (kw.get("scaling") or ("none",))[0],
            }
        )
        return self.impl.rope(x, positions, **kw)


def unsorted_with_repeats(calls: list[dict[str, Any]]) -> bool:
    return any(len(set(p)) < len(p) and p != sorted(p) for p in (c["positions"] for c in calls))


REGIMES = {
    "position >= 131071": lambda cs: any(max(c["positions"]) >= 131071 for c in cs),
    "position 4097-65535": lambda cs: any(4096 < p < 65536 for c in cs for p in c["positions"]),
    "position 0": lambda cs: any(0 in c["positions"] for c in cs),
    "head dim 64": lambda cs: any(c["D"] == 64 for c in cs),
    "head dim >= 192": lambda cs: any(c["D"] >= 192 for c in cs),
    "head dim 80/96/112": lambda cs: any(c["D"] in (80, 96, 112) for c in cs),
    "rotary_dim < head dim": lambda cs: any(c["r"] < c["D"] for c in cs),
    "neox and gptj": lambda cs: {c["style"] for c in cs} == {"neox", "gptj"},
    "llama3 and linear scaling": lambda cs: {"llama3", "linear"} <= {c["scaling"] for c in cs},
    "unsorted, repeated positions": unsorted_with_repeats,
    "shift past 65536": lambda cs: any(max(c["positions"]) > 65536 for c in cs),
}
COMMON = ["head dim 64", "head dim >= 192", "rotary_dim < head dim", "neox and gptj"]
REQUIRED = {
    "ROPE-REF": [*COMMON, "position >= 131071", "position 4097-65535", "head dim 80/96/112"],
    "ROPE-RELATIVE": [*COMMON[1:], "shift past 65536", "position >= 131071"],
    "ROPE-NORM": [*COMMON, "position >= 131071"],
    "ROPE-POSITIONS": [*COMMON, "unsorted, repeated positions", "position >= 131071"],
    "ROPE-STYLES": [*COMMON, "position >= 131071"],
    "ROPE-SCALING": [*COMMON, "llama3 and linear scaling", "position >= 131071"],
}


@cache
def calls(clause_id: str) -> list[dict[str, Any]]:
    """The rope calls of the default tier's run of `clause_id` on numpy."""
    profiles.register()
    recorder = RopeRecorder(numpy_impl)
    with one_blas_thread():
        run_clause(clause_id, recorder, settings_=settings.get_profile("attnspec-default"))
    return recorder.seen.calls


@pytest.mark.parametrize("clause_id", list(REQUIRED))
def test_rope_clause_reaches_its_regimes(clause_id):
    """Each RoPE clause draws positions up to 131,072, head dims 64-256, partial rotary dims and
    both styles at the default tier (and what its own bug needs: shifts, shuffles, scalings)."""
    found = calls(clause_id)
    lacks = [r for r in REQUIRED[clause_id] if not REGIMES[r](found)]
    assert not lacks, f"{clause_id} never reached {lacks} in {len(found)} calls"
    assert max(max(c["positions"]) for c in found) <= MAX_POSITION


def test_rope_family_reaches_every_head_dim():
    """Between them the RoPE clauses draw every head dim of real models (64 to 256)."""
    drawn = {c["D"] for clause_id in REQUIRED for c in calls(clause_id)}
    assert set(HEAD_DIMS) <= drawn, f"head dims never drawn: {sorted(set(HEAD_DIMS) - drawn)}"


def torch_rope(phase: str):
    """A torch rope with the phase position × frequency computed as vLLM computes it (float32
    frequencies from a float32 pow, float32 positions) or, with phase "bfloat16", rounded to
    bf16 as autocast does to the rotary matmul; rotation in float32, stored in x's dtype."""
    torch = pytest.importorskip("torch")

    def rope(x, positions, *, base=10000.0, rotary_dim=None, style="neox", scaling=None):
        from attnspec.implementations.numpy_impl.rope import frequencies

        D = x.shape[-1]
        r = rotary_dim or D
        if scaling is None:
            inv = 1.0 / (base ** (torch.arange(0, r, 2, dtype=torch.float) / r))  # (r/2,)
        else:
            inv = torch.tensor(frequencies(r, base, scaling), dtype=torch.float)  # (r/2,)
        work = getattr(torch, phase)
        theta = (positions.to(work)[:, None] * inv.to(work)[None, :]).float()  # (T, r/2)
        cos, sin = theta.cos()[:, None, :], theta.sin()[:, None, :]  # (T, 1, r/2)
        xf = x[..., :r].float()  # (T, H, r)
        if style == "neox":
            x1, x2 = xf[..., : r // 2], xf[..., r // 2 :]
            out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        else:
            x1, x2 = xf[..., 0::2], xf[..., 1::2]
            out = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
        return torch.cat([out.to(x.dtype), x[..., r:]], dim=-1)  # (T, H, D)

    return rope


@pytest.mark.parametrize("working", ["bfloat16", "float16", "float32"])
def test_float32_phase_passes_and_bf16_phase_fails(working):
    """ROPE-REF's budget admits a phase computed in float32 as vLLM computes it, in every dtype,
    and rejects the same kernel with the phase rounded to bf16 (the autocast bug)."""
    torch_impl = pytest.importorskip("attnspec.implementations.torch_impl").impl
    few = settings(KILL, max_examples=10)
    good = derive(torch_impl, "vllm-style-rope", rope=torch_rope("float32"))
    bad = derive(torch_impl, "autocast-bf16-rope", rope=torch_rope("bfloat16"))
    with few_threads():
        for clause_id in ("ROPE-REF", "ROPE-RELATIVE", "ROPE-SCALING"):
            run_clause(clause_id, good, dtype=working, settings_=few)
        with pytest.raises(ClauseFailure):
            run_clause("ROPE-REF", bad, dtype=working, settings_=few)
