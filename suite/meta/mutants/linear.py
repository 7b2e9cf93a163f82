"""Linear-attention mutants: the classic ways causal linear attention goes wrong."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

import attnspec.implementations.numpy_impl as base
from attnspec.implementations.numpy_impl import linear as good
from attnspec.suite.meta.mutants import Mutant, derive

State = tuple[np.ndarray, np.ndarray]


def phi(x: np.ndarray, feature_map: str) -> np.ndarray:
    """The feature map in float64."""
    x = x.astype(np.float64)
    return (
        np.maximum(x, 0)
        if feature_map == "relu"
        else np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))
    )


def broken_parallel(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool = True,
    feature_map: str = "relu",
    eps: float = 1e-6,
    diagonal: int = 0,
    global_kv: bool = False,
    global_normaliser: bool = False,
) -> np.ndarray:
    """The parallel form with one switchable bug per keyword."""
    fq, fk = phi(q, feature_map), phi(k, feature_map)  # (B, H, T, Dk)
    a = fq @ fk.swapaxes(-1, -2)  # (B, H, T, T)
    masked = np.tril(a, diagonal) if causal and not global_kv else a  # (B, H, T, T)
    den = (a if global_normaliser else masked).sum(axis=-1, keepdims=True) + eps  # (B, H, T, 1)
    return ((masked @ v) / den).astype(q.dtype)  # (B, H, T, Dv)


def broken_chunked(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    chunk_size: int,
    feature_map: str = "relu",
    eps: float = 1e-6,
    state: State | None = None,
    forget_state: bool = False,
    no_intra_mask: bool = False,
    reset_every: int = 0,
) -> tuple[np.ndarray, State]:
    """The chunked form that forgets earlier chunks, or does not mask inside a chunk."""
    fq, fk = phi(q, feature_map), phi(k, feature_map)  # (B, H, T, Dk)
    B, H, T, Dk = fq.shape
    s0 = np.zeros((B, H, Dk, v.shape[-1])) if state is None else state[0]  # (B, H, Dk, Dv)
    z0 = np.zeros((B, H, Dk)) if state is None else state[1]  # (B, H, Dk)
    s, z = s0, z0
    o = np.empty(v.shape)  # (B, H, T, Dv)
    for start in range(0, T, chunk_size):
        if reset_every and start and start % reset_every < chunk_size:  # a new segment: restart
            s, z = np.zeros_like(s), np.zeros_like(z)
        part = slice(start, start + chunk_size)
        qc, kc, vc = fq[:, :, part], fk[:, :, part], v[:, :, part]
        a = qc @ kc.swapaxes(-1, -2)  # (B, H, C, C)
        a = a if no_intra_mask else np.tril(a)
        o[:, :, part] = (qc @ s + a @ vc) / (qc @ z[..., None] + a.sum(-1, keepdims=True) + eps)
        if not forget_state:
            s = s + kc.swapaxes(-1, -2) @ vc  # (B, H, Dk, Dv)
            z = z + kc.sum(axis=2)  # (B, H, Dk)
    s_end = s0 + fk.swapaxes(-1, -2) @ v  # (B, H, Dk, Dv)
    z_end = z0 + fk.sum(axis=2)  # (B, H, Dk)
    return o.astype(q.dtype), (s_end, z_end)


def recurrent_ignoring_state(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, *, state: State | None = None, **kw: Any
) -> tuple[np.ndarray, State]:
    """The recurrent form that starts every call from an empty state."""
    return good.linear_attention_recurrent(q, k, v, **kw)


def recurrent_reads_before_write(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    feature_map: str = "relu",
    eps: float = 1e-6,
    state: State | None = None,
) -> tuple[np.ndarray, State]:
    """The recurrent form that reads the state before adding token i: i does not see itself."""
    fq, fk = phi(q, feature_map), phi(k, feature_map)  # (B, H, T, Dk)
    B, H, T, Dk = fq.shape
    s = np.zeros((B, H, Dk, v.shape[-1])) if state is None else state[0]  # (B, H, Dk, Dv)
    z = np.zeros((B, H, Dk)) if state is None else state[1]  # (B, H, Dk)
    o = np.empty(v.shape)  # (B, H, T, Dv)
    for i in range(T):
        num = np.einsum("bhk,bhkv->bhv", fq[:, :, i], s)  # (B, H, Dv)
        den = np.einsum("bhk,bhk->bh", fq[:, :, i], z) + eps  # (B, H)
        o[:, :, i] = num / den[..., None]
        s = s + fk[:, :, i, :, None] * v[:, :, i, None, :]  # (B, H, Dk, Dv)
        z = z + fk[:, :, i]  # (B, H, Dk)
    return o.astype(q.dtype), (s, z)


class KeepsState:
    """Forms that keep the last state in the object and resume from it when given none."""

    def __init__(self) -> None:
        self.last: State | None = None

    def resume(self, state: State | None, q: np.ndarray, v: np.ndarray) -> State | None:
        fits = self.last is not None and self.last[0].shape == (
            *q.shape[:2],
            q.shape[3],
            v.shape[3],
        )
        return self.last if state is None and fits else state

    def recurrent(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, *, state=None, **kw: Any):
        o, self.last = good.linear_attention_recurrent(
            q, k, v, state=self.resume(state, q, v), **kw
        )
        return o, self.last

    def chunked(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, *, state=None, **kw: Any):
        o, self.last = good.linear_attention_chunked(q, k, v, state=self.resume(state, q, v), **kw)
        return o, self.last


def linear_mutant(
    name: str, bug: str, kills: tuple[str, ...], *, without: tuple[str, ...] = (), **ops: Any
) -> Mutant:
    """A mutant providing the given forms (the others are the numpy implementation's, except
    those named in `without`, which it lacks)."""
    forms = {
        "linear_attention": good.linear_attention,
        "linear_attention_recurrent": good.linear_attention_recurrent,
        "linear_attention_chunked": good.linear_attention_chunked,
        **ops,
    }
    forms = {op: fn for op, fn in forms.items() if op not in without}
    return Mutant(name, bug, derive(base, f"mutant-{name}", **forms), kills)


KEEPS_STATE = KeepsState()

MUTANTS = [
    linear_mutant(
        "global-kv",
        "causal=True computes the global phi(K)^T V, so every output sees the whole sequence",
        ("LIN-NO-FUTURE", "LIN-REF"),
        linear_attention=partial(broken_parallel, global_kv=True),
    ),
    linear_mutant(
        "mask-excludes-diagonal",
        "the causal mask is shifted by one: position i sees only positions before i",
        ("LIN-REF",),
        linear_attention=partial(broken_parallel, diagonal=-1),
    ),
    linear_mutant(
        "mask-sees-next",
        "the causal mask is shifted by one: position i also sees position i+1",
        ("LIN-NO-FUTURE", "LIN-REF"),
        linear_attention=partial(broken_parallel, diagonal=1),
    ),
    linear_mutant(
        "global-normaliser",
        "the normaliser phi(q_i)^T z sums phi(k_j) over the whole sequence, not the prefix",
        ("LIN-REF",),
        linear_attention=partial(broken_parallel, global_normaliser=True),
    ),
    linear_mutant(
        "chunk-forgets-state",
        "the chunked form does not carry the state from one chunk to the next",
        ("LIN-FORMS-AGREE",),
        linear_attention_chunked=partial(broken_chunked, forget_state=True),
    ),
    linear_mutant(
        "chunk-no-intra-mask",
        "the chunked form does not mask the intra-chunk product, so a chunk sees its own future",
        ("LIN-NO-FUTURE", "LIN-FORMS-AGREE"),
        linear_attention_chunked=partial(broken_chunked, no_intra_mask=True),
    ),
    linear_mutant(
        "chunk-state-resets-1024",
        "the chunked form restarts its state every 1024 tokens (a state kept per segment): right "
        "for short sequences, wrong past 1024 tokens",
        ("LIN-FORMS-AGREE",),
        linear_attention_chunked=partial(broken_chunked, reset_every=1024),
    ),
    linear_mutant(
        "recurrent-reads-before-write",
        "the recurrent form reads the state before adding token i, so i does not see itself "
        "(and there is no chunked form to compare with)",
        ("LIN-FORMS-AGREE",),
        without=("linear_attention_chunked",),
        linear_attention_recurrent=recurrent_reads_before_write,
    ),
    linear_mutant(
        "state-not-reset",
        "the state is kept across calls, so a new sequence resumes from the previous one's",
        ("LIN-SPLIT-RESUME",),
        linear_attention_recurrent=KEEPS_STATE.recurrent,
        linear_attention_chunked=KEEPS_STATE.chunked,
    ),
    linear_mutant(
        "decode-ignores-state",
        "a recurrent step ignores the state it is given and starts from an empty one",
        ("LIN-DECODE-EQ-PREFILL",),
        linear_attention_recurrent=recurrent_ignoring_state,
    ),
]
