"""X @ W in torch, for the arithmetic-intensity study."""

from __future__ import annotations

import torch


def matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """X (B, D) @ W (D, F) -> (B, F)."""
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(
            f"matmul expects X (B, D) and W (D, F); got {tuple(x.shape)} and {tuple(w.shape)}"
        )
    return torch.matmul(x, w)  # (B, F)
