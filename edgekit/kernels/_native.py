"""ctypes binding of the compiled kernel library (src/ek_kernels.h is the contract it mirrors).

ctypes releases the GIL for the duration of every foreign call, so Python threads (a server decoding two
sessions) run kernels concurrently with other Python work; the library serializes its own thread pool.
`load()` returns None when the library was not built (no C compiler at install time): callers then use the
numpy kernels in `reference.py`. EDGEKIT_KERNEL_LIBRARY=/path/to/_ek_kernels.so loads another build instead
(a work-in-progress library, e.g. `gcc -O3 -shared -fPIC ... -o /tmp/ek/_ek_kernels.so`), so the in-tree one
stays untouched for everyone else.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import logging
import os
from functools import lru_cache
from pathlib import Path

from edgekit.errors import ConfigError

logger = logging.getLogger(__name__)

ABI_VERSION = 1
ISA_IDS = {"scalar": 0, "avx2": 1, "neon": 2, "avx512": 3}
LAYOUT_IDS = {"native": 0, "lut3": 1, "bitplane": 2}  # enum ek_layout
ACT_I8, ACT_F32 = 0, 1
STATUS = {0: "ok", -1: "invalid argument", -2: "out of memory", -3: "unsupported format/activation",
          -4: "ISA not available"}

_c_float_p = ctypes.POINTER(ctypes.c_float)


def address(array) -> int:
    """The data address of a numpy array, as `array.ctypes.data` gives it, in ~1 us instead of ~2.5 us.

    Why: a decode step of BitNet 2B4T makes ~330 foreign calls with 2-3 buffers each, and numpy builds a
    ctypes helper object per `.ctypes` access. A writable C-contiguous buffer is read through ctypes'
    buffer protocol instead; anything else (read-only, strided views) takes `.ctypes.data`."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError, BufferError):
        return array.ctypes.data


class Weight(ctypes.Structure):
    """struct ek_weight."""

    _fields_ = [("format", ctypes.c_int32), ("layout", ctypes.c_int32), ("rows", ctypes.c_int64),
                ("cols", ctypes.c_int64), ("row_bytes", ctypes.c_int64), ("group", ctypes.c_int64),
                ("per_tensor", ctypes.c_int32), ("reserved", ctypes.c_int32), ("data", ctypes.c_void_p),
                ("scales", ctypes.c_void_p), ("zeros", ctypes.c_void_p)]


class Act(ctypes.Structure):
    """struct ek_act."""

    _fields_ = [("kind", ctypes.c_int32), ("x_cols", ctypes.c_int32), ("tokens", ctypes.c_int64),
                ("cols", ctypes.c_int64), ("q", ctypes.c_void_p), ("scale", ctypes.c_void_p),
                ("x", ctypes.c_void_p), ("gsum", ctypes.c_void_p)]


def library_path() -> Path | None:
    """EDGEKIT_KERNEL_LIBRARY if set (ConfigError if it names no file), else the in-tree build, else None."""
    override = os.environ.get("EDGEKIT_KERNEL_LIBRARY", "").strip()
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise ConfigError(f"EDGEKIT_KERNEL_LIBRARY={override!r} is not a file",
                              fix="point it at a built _ek_kernels*.so, or unset it to use the in-tree build")
        return path.resolve()
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_ek_kernels{suffix}"
        if path.is_file():
            return path
    return None


def _declare(lib: ctypes.CDLL) -> None:
    i64, i32, vp, szt = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t
    signatures = {
        "ek_abi_version": (i32, []), "ek_isa_available": (i32, [i32]), "ek_get_isa": (i32, []),
        "ek_set_isa": (i32, [i32]), "ek_isa_name": (ctypes.c_char_p, [i32]),
        "ek_set_num_threads": (i32, [i32]), "ek_get_num_threads": (i32, []),
        "ek_quantize_absmax_i8": (None, [vp, i64, i64, i64, vp, i64, vp]),
        "ek_linear": (i32, [ctypes.POINTER(Weight), ctypes.POINTER(Act), vp, i64,
                            ctypes.POINTER(ctypes.c_char_p)]),
        "ek_kernel_choice": (ctypes.c_char_p, [ctypes.POINTER(Weight), i32, i64,
                                               ctypes.POINTER(ctypes.c_char_p)]),
        "ek_isa_kernel_name": (ctypes.c_char_p, [i32, i32, i32, i32, i64]),
        "ek_repack_size": (szt, [ctypes.POINTER(Weight), i32]),
        "ek_repack": (i32, [ctypes.POINTER(Weight), i32, vp]),
        "ek_read_bandwidth": (ctypes.c_double, [szt, i32, i32]),
        "ek_preferred_layout": (i32, [ctypes.POINTER(Weight), i32]),
        "ek_linear_multi": (i32, [ctypes.POINTER(ctypes.POINTER(Weight)), i32, ctypes.POINTER(Act), vp, i64,
                                  ctypes.POINTER(ctypes.c_char_p)]),
    }
    # absent from older builds: ek_preferred_layout (native layouts only), ek_linear_multi (one call per weight)
    optional = {"ek_preferred_layout", "ek_linear_multi"}
    for name, (restype, argtypes) in signatures.items():
        if name in optional and not hasattr(lib, name):
            continue
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes


def _apply_environment(lib: ctypes.CDLL) -> None:
    """EDGEKIT_KERNEL forces an ISA, EDGEKIT_NUM_THREADS sets the thread count (default os.cpu_count())."""
    forced = os.environ.get("EDGEKIT_KERNEL", "").strip().lower()
    if forced and forced != "auto":
        set_isa(lib, forced, source="EDGEKIT_KERNEL")
    threads = os.environ.get("EDGEKIT_NUM_THREADS", "").strip()
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise ConfigError(f"EDGEKIT_NUM_THREADS={threads!r} is not a positive integer",
                              fix="set EDGEKIT_NUM_THREADS to a thread count such as 2, or unset it")
        lib.ek_set_num_threads(int(threads))
    else:
        lib.ek_set_num_threads(os.cpu_count() or 1)


def set_isa(lib: ctypes.CDLL, name: str, source: str = "isa") -> None:
    """Force one ISA by name ("scalar", "avx2", "avx512", "neon"), or "auto" for the best available."""
    if name == "auto":
        lib.ek_set_isa(-1)
        return
    if name not in ISA_IDS:
        raise ConfigError(f"{source}={name!r} is not a kernel ISA; valid values: {sorted(ISA_IDS)} or 'auto'",
                          fix="set EDGEKIT_KERNEL to one of those names, or unset it for automatic choice")
    if lib.ek_set_isa(ISA_IDS[name]) != 0:
        available = [n for n, i in ISA_IDS.items() if lib.ek_isa_available(i)]
        raise ConfigError(f"{source}={name!r}: this CPU or build cannot run {name} kernels; "
                          f"available here: {available}", fix=f"choose one of {available}, or unset it")


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The loaded library with the environment applied, or None (logged) if it is missing or stale."""
    path = library_path()
    if path is None:
        logger.warning("edgekit native kernels are not built; using the slow numpy kernels "
                       "(reinstall edgekit with a C compiler available to build them)")
        return None
    try:
        lib = ctypes.CDLL(str(path))
        _declare(lib)
    except (OSError, AttributeError) as error:
        logger.warning("edgekit native kernels at %s cannot be loaded (%s); using the numpy kernels", path, error)
        return None
    if lib.ek_abi_version() != ABI_VERSION:
        logger.warning("edgekit native kernels at %s have ABI %d, expected %d; using the numpy kernels "
                       "(rebuild with pip install -e .)", path, lib.ek_abi_version(), ABI_VERSION)
        return None
    _apply_environment(lib)
    return lib
