"""`LazyArray`: a float32 matrix that is read from its checkpoint only when used.

Loaders hand out large matrices this way so that quantizing a model streams tensor by tensor: the
pipeline reads one matrix, packs it and drops it, and peak memory stays near one float matrix plus the
packed output instead of the whole float model. Small tensors (norms, biases) are read eagerly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.errors import CorruptCheckpointError, EdgekitError


class LazyArray:
    """Shape and dtype known up front; `np.asarray(lazy)` reads the values (a fresh array every time)."""

    dtype = np.dtype(np.float32)
    itemsize = 4

    def __init__(self, shape: tuple[int, ...], read: Callable[[], np.ndarray], source: Path | str, name: str):
        self.shape = tuple(int(d) for d in shape)
        self._read = read
        self.source = source
        self.name = name

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    def load(self) -> np.ndarray:
        try:
            array = np.asarray(self._read(), dtype=np.float32)
        except EdgekitError:
            raise
        except Exception as exc:  # the file changed or is damaged past its header
            raise CorruptCheckpointError(f"tensor {self.name!r} cannot be read ({type(exc).__name__}: {exc})",
                                         path=self.source) from None
        if array.shape != self.shape:
            raise CorruptCheckpointError(f"tensor {self.name!r} read as {array.shape}, expected {self.shape}",
                                         path=self.source)
        return array

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self.load()
        return array if dtype is None else array.astype(dtype)

    def __getitem__(self, index) -> np.ndarray:
        return self.load()[index]

    def __repr__(self) -> str:
        return f"LazyArray({self.name!r}, shape={self.shape}, source={str(self.source)!r})"


def materialize(value):
    """The float array behind a LazyArray (other values pass through)."""
    return value.load() if isinstance(value, LazyArray) else value
