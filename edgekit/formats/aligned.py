"""Cache-line-aligned buffers for packed weights.

The AVX-512 kernels load 64-byte rows; arrays from safetensors or numpy start 16 bytes past a cache line, and
then every row load splits across two lines: ek_t2 6912 x 2560 from DRAM on 2 threads took 152-158 us per call
instead of 107-119 (EPYC, 2026-12-02). Loaders align packed data once when they read it, so the kernels bind it
as it is instead of holding a second, aligned copy of every weight.
"""

from __future__ import annotations

import numpy as np

KERNEL_ALIGN = 64   # bytes: one cache line, one zmm load


def aligned_empty(nbytes: int) -> np.ndarray:
    """An uninitialized uint8 buffer [nbytes] whose first byte is KERNEL_ALIGN-aligned."""
    buf = np.empty(nbytes + KERNEL_ALIGN, dtype=np.uint8)
    start = (-buf.ctypes.data) % KERNEL_ALIGN
    return buf[start:start + nbytes]


def aligned(array: np.ndarray) -> np.ndarray:
    """`array` (C-contiguous) itself if it starts on a cache line, else a cache-line-aligned copy."""
    array = np.ascontiguousarray(array)
    if array.ctypes.data % KERNEL_ALIGN == 0:
        return array
    out = aligned_empty(array.nbytes).view(array.dtype).reshape(array.shape)
    out[...] = array
    return out
