"""Threads of the BLAS library numpy uses (OpenBLAS in numpy's wheels), set through its own C API.

Why the engine touches it: the native engine's linears run on edgekit's kernel thread pool, and its
attention matmuls are small numpy calls. OpenBLAS's own pool busy-waits after each call, so on a machine
whose cores are all busy the two pools fight: measured here (2 shared cores, load ~5) a [4, 340, 32] @
[4, 32, 170] batched matmul took 82 ms with OpenBLAS's default 2 threads and 0.65 ms with 1, and the
kernels' 2-thread calls slowed from tens of microseconds to 0.6-0.9 ms. One BLAS thread loses little:
attention is a small part of the work per token.

Only OpenBLAS is handled (found by name among the loaded libraries in /proc/self/maps, the way
threadpoolctl finds it); elsewhere (no /proc, MKL, Accelerate) `set_blas_threads` returns None.
"""

from __future__ import annotations

import ctypes
import logging
from functools import lru_cache

import numpy as np  # noqa: F401  (numpy loads its BLAS; it must be mapped before we look)

logger = logging.getLogger(__name__)

# OpenBLAS builds name their symbols with a prefix (scipy-openblas) and a suffix (64-bit integer builds).
PREFIXES = ("scipy_openblas", "openblas")
SUFFIXES = ("64_", "")


@lru_cache(maxsize=1)
def _openblas() -> tuple | None:
    """(set_num_threads, get_num_threads) of the loaded OpenBLAS, or None."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in PREFIXES:
            for suffix in SUFFIXES:
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    setter.argtypes, setter.restype = [ctypes.c_int], None
                    getter.argtypes, getter.restype = [], ctypes.c_int
                    return setter, getter
    return None


def get_blas_threads() -> int | None:
    api = _openblas()
    return None if api is None else int(api[1]())


def set_blas_threads(n: int) -> int | None:
    """Set OpenBLAS's thread count for the whole process; return the previous count (None: not OpenBLAS)."""
    api = _openblas()
    if api is None:
        return None
    before = int(api[1]())
    if before != n:
        api[0](n)
        logger.info("OpenBLAS threads %d -> %d (the native engine's attention matmuls)", before, n)
    return before
