"""What an implementation is, typed in one place: a name and the two array-exchange functions.

Every op (`attention`, `kv_cache`, `tiled_attention`, ...) is optional: clauses look ops up by
name and skip, naming the missing op, when an implementation lacks one. README's contract
section lists the ops and their signatures; `attnspec.specs.runner.missing` says what a clause lacks.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Implementation(Protocol):
    """An implementation under test (a module, an object, a namespace)."""

    @property
    def name(self) -> str:
        """Its name in test ids, the verdict table and reports."""
        ...

    def asarray(self, x: np.ndarray, dtype: str) -> Any:
        """A native array holding `x` in the working `dtype` ("int64" for token ids)."""
        ...

    def to_numpy(self, x: Any) -> np.ndarray:
        """A numpy copy of a native array (bfloat16 may come back as float32)."""
        ...
