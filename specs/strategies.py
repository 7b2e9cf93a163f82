"""Hypothesis strategies shared by every spec area: shapes, seeds and the arrays they make.

Arrays are drawn as a seed, not element by element: the examples stay fast at realistic sizes
and a failure still reproduces exactly from the printed draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

HEAD_DIMS = (1, 3, 8, 16, 17, 32, 63, 64, 96, 128)  # odd sizes on purpose


@dataclass(frozen=True)
class AttnShape:
    """Shapes of one attention call: q (B, Hq, Tq, D), k (B, Hkv, Tk, D), v (B, Hkv, Tk, Dv)."""

    B: int
    Hq: int
    Hkv: int
    Tq: int
    Tk: int
    D: int
    Dv: int

    @property
    def q(self) -> tuple[int, int, int, int]:
        return (self.B, self.Hq, self.Tq, self.D)

    @property
    def k(self) -> tuple[int, int, int, int]:
        return (self.B, self.Hkv, self.Tk, self.D)

    @property
    def v(self) -> tuple[int, int, int, int]:
        return (self.B, self.Hkv, self.Tk, self.Dv)

    @property
    def o(self) -> tuple[int, int, int, int]:
        return (self.B, self.Hq, self.Tq, self.Dv)


@st.composite
def attn_shapes(
    draw: st.DrawFn,
    *,
    max_B: int = 3,
    max_T: int = 40,
    min_Tk: int = 1,
    min_Tq: int = 1,
    causal: bool = False,
    max_heads: int = 3,
    max_group: int = 4,
) -> AttnShape:
    """Attention shapes with GQA/MQA head groups and Tq != Tk; causal shapes keep Tk >= Tq."""
    B = draw(st.integers(1, max_B), label="B")
    Hkv = draw(st.integers(1, max_heads), label="Hkv")
    group = draw(st.integers(1, max_group), label="Hq/Hkv")
    Tk = draw(st.integers(max(min_Tk, min_Tq if causal else 1), max_T), label="Tk")
    Tq = draw(st.integers(min_Tq, Tk if causal else max_T), label="Tq")
    D = draw(st.sampled_from(HEAD_DIMS), label="D")
    Dv = draw(st.one_of(st.just(D), st.sampled_from(HEAD_DIMS)), label="Dv")
    return AttnShape(B, Hkv * group, Hkv, Tq, Tk, D, Dv)


def seeds() -> st.SearchStrategy[int]:
    """Seeds for numpy's generator; every array in a check comes from one drawn seed."""
    return st.integers(0, 2**32 - 1)


def normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    """Standard normal float64 values times `scale`."""
    return rng.standard_normal(shape) * scale


def scales() -> st.SearchStrategy[float | None]:
    """The softmax scale: None (1/sqrt(D)) most often, else a custom positive value."""
    return st.one_of(st.none(), st.floats(0.05, 2.0))
