"""Compiled weight kernels of the native runtime: C sources (src/), numpy reference (reference.py), dispatch.

    lin = prepare_linear(weight, act_quant="int8_absmax")   # once, at load time
    y = lin(x)                                              # x float32 [T, K] -> float32 [T, N]

The C library (src/ek_kernels.h is its ABI) is built by `pip install` and loaded with ctypes, which releases
the GIL during each call. It picks the best ISA at run time (AVX-512, AVX2 or NEON, else portable C);
EDGEKIT_KERNEL=scalar|avx2|avx512|neon forces one and EDGEKIT_NUM_THREADS sets the threads (default os.cpu_count()).
EDGEKIT_KERNEL_LIBRARY=/path/to/_ek_kernels.so loads another build of the library (work in progress).
prepare_linear may repack a weight once into a kernel-specific layout where that was measured to pay (today:
ek_t1 into the ternary lookup-table layout on AVX-512, see src/lut.c); `layout=` forces one for benchmarks.
Without the compiled library everything still works on numpy kernels, with a warning (info()["compiled"]).
"""

from __future__ import annotations

import os

import numpy as np

from edgekit.errors import ConfigError
from edgekit.formats import FORMATS, QuantizedTensor
from edgekit.kernels import _native, reference
from edgekit.kernels.api import (
    KernelInputError,
    PreparedLinear,
    as_quantized,
    check_buffer,
    quantize_padded,
)

__all__ = ["KernelInputError", "PreparedLinear", "get_num_threads", "info", "prepare_linear",
           "quantize_absmax_int8", "read_bandwidth", "set_isa", "set_num_threads"]


def prepare_linear(weight: QuantizedTensor | np.ndarray, act_quant: str, layout: str = "auto") -> PreparedLinear:
    """Bind a packed (or float [out, in]) weight to its kernels; see PreparedLinear and api.py."""
    return PreparedLinear(as_quantized(weight), act_quant, layout)


def quantize_absmax_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x float32 [T, K] -> (int8 [T, K], float32 [T]), bit-exact with edgekit.model.reference's version."""
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        raise KernelInputError(f"x must be a 2-D float32 array, got {getattr(x, 'shape', type(x).__name__)}",
                               fix="reshape to [tokens, features]")
    check_buffer("x", x, np.float32, x.shape)
    lib = _native.load()
    if lib is None:
        return reference.quantize_absmax_int8(x)
    return quantize_padded(lib, x, x.shape[1])


def set_num_threads(n: int) -> int:
    """Threads used by every kernel call (the caller included); returns the count now running."""
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"thread count {n!r} must be a positive integer", fix="pass e.g. os.cpu_count()")
    lib = _native.load()
    return 1 if lib is None else int(lib.ek_set_num_threads(n))


def get_num_threads() -> int:
    lib = _native.load()
    return 1 if lib is None else int(lib.ek_get_num_threads())


def set_isa(name: str) -> None:
    """Force "scalar", "avx2", "avx512" or "neon" kernels (ConfigError if unavailable), or "auto"."""
    lib = _native.load()
    if lib is None:
        raise ConfigError("the compiled kernels are not built, so no ISA can be chosen",
                          fix="reinstall edgekit with a C compiler available")
    _native.set_isa(lib, name)


def read_bandwidth(nbytes: int = 512 << 20, threads: int | None = None, reps: int = 3) -> float:
    """GB/s (1e9 B/s) of a streaming read of `nbytes` by `threads` threads: the decode roofline.

    Use nbytes >= 256 MiB to measure DRAM rather than cache on machines with large L3s."""
    lib = _native.load()
    threads = threads or get_num_threads()
    if lib is None:
        buf = np.ones(nbytes // 8, dtype=np.int64)
        import time
        best = 0.0
        for _ in range(reps):
            start = time.perf_counter()
            buf.sum()
            best = max(best, nbytes / (time.perf_counter() - start) / 1e9)
        return best
    result = lib.ek_read_bandwidth(nbytes, threads, reps)
    if result < 0:
        raise ConfigError(f"cannot allocate {nbytes} bytes for the bandwidth probe", fix="pass a smaller nbytes")
    return float(result)


def _variants(lib) -> dict[str, dict[str, dict[str, str]]]:
    """{format: {isa: {"decode": kernel, "prefill": kernel}}} for every ISA compiled in; kernels of a repacked
    layout appear as "decode_<layout>" / "prefill_<layout>" (e.g. "decode_lut3")."""
    table: dict[str, dict[str, dict[str, str]]] = {}
    for name, fmt in sorted(FORMATS.items(), key=lambda item: item[1].format_id):
        act = _native.ACT_F32 if fmt.kind == "float" else _native.ACT_I8
        for isa, isa_id in _native.ISA_IDS.items():
            for layout, layout_id in _native.LAYOUT_IDS.items():
                suffix = "" if layout_id == 0 else f"_{layout}"
                decode = lib.ek_isa_kernel_name(isa_id, fmt.format_id, act, layout_id, 1)
                prefill = lib.ek_isa_kernel_name(isa_id, fmt.format_id, act, layout_id, 64)
                if decode or prefill:
                    table.setdefault(name, {}).setdefault(isa, {}).update(
                        {f"decode{suffix}": (decode or b"").decode(), f"prefill{suffix}": (prefill or b"").decode()})
    return table


def info() -> dict:
    """What runs here: compiled or not, the ISA in use, the ISAs this CPU can run, threads, kernel variants."""
    lib = _native.load()
    if lib is None:
        return {"compiled": False, "library": None, "isa": "numpy", "available_isas": [], "threads": 1,
                "variants": {}, "cpu_count": os.cpu_count()}
    available = [n for n, i in _native.ISA_IDS.items() if lib.ek_isa_available(i)]
    return {"compiled": True, "library": str(_native.library_path()), "isa": lib.ek_isa_name(lib.ek_get_isa()).decode(),
            "available_isas": available, "threads": int(lib.ek_get_num_threads()), "variants": _variants(lib),
            "cpu_count": os.cpu_count()}


