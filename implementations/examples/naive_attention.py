"""A worked example: your own attention kernel, plugged into attnspec.

    pytest suite --impl implementations/examples/naive_attention.py

A module is an implementation when it has `name`, `asarray` and `to_numpy`; every op it
defines is checked, every op it lacks is skipped ("not implemented by naive-torch"). This one
defines only `attention`, written the way a first attempt often is: repeat the kv heads,
build the mask, softmax.
"""

from __future__ import annotations

import math

import numpy as np
import torch

name = "naive-torch"
dtypes = ("float32", "float16", "bfloat16", "float64")  # optional: others are skipped


def asarray(x: np.ndarray, dtype: str) -> torch.Tensor:
    """numpy in, your native array out, in the working dtype the suite asks for."""
    return torch.tensor(np.asarray(x), dtype=getattr(torch, dtype))


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """Your native array back to numpy (bfloat16 as float32: numpy has none)."""
    x = x.detach().cpu()
    return (x.float() if x.dtype == torch.bfloat16 else x).numpy()


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float | None = None
) -> torch.Tensor:
    """softmax(q k^T * scale) v; GQA by repeating kv heads; bottom-right causal mask."""
    Hq, Tq, D = q.shape[1], q.shape[2], q.shape[3]
    Hkv, Tk = k.shape[1], k.shape[2]
    k = k.repeat_interleave(Hq // Hkv, dim=1)  # (B, Hq, Tk, D)
    v = v.repeat_interleave(Hq // Hkv, dim=1)  # (B, Hq, Tk, Dv)
    scale = 1 / math.sqrt(D) if scale is None else scale
    s = (q.float() @ k.float().transpose(-1, -2)) * scale  # (B, Hq, Tq, Tk)
    if causal:
        i = torch.arange(Tq)[:, None]
        j = torch.arange(Tk)[None, :]
        s = s.masked_fill(j > i + (Tk - Tq), float("-inf"))
    return (torch.softmax(s, dim=-1) @ v.float()).to(q.dtype)  # (B, Hq, Tq, Dv)
