"""X @ W in numpy, for the arithmetic-intensity study."""

from __future__ import annotations

import numpy as np


def matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """X (B, D) @ W (D, F) -> (B, F)."""
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"matmul expects X (B, D) and W (D, F); got {x.shape} and {w.shape}")
    return x @ w  # (B, F)
