"""ctypes bindings of src/ops.c: the native engine's RMSNorm, squared-ReLU gate, RoPE and decode attention in C.

Each call is one foreign call with the GIL released. `available()` is False when the loaded library predates
ops.c (an older build, EDGEKIT_KERNEL_LIBRARY pointing at one) or was not built: the engine then keeps its numpy
steps (edgekit/runtime/native_ops.py), which these functions equal (rms_norm, relu2_gate, rope bit for bit;
attend_decode to float32 rounding, see src/ops.c).

Arguments are checked here (dtype float32, C-contiguous, shapes), never reinterpreted: a wrong buffer raises
KernelInputError before C sees it.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import numpy as np

from edgekit.kernels import _native
from edgekit.kernels.api import KernelInputError

SYMBOLS = ("ek_rms_norm", "ek_relu2_gate", "ek_rope", "ek_attend_decode")


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL | None:
    lib = _native.load()
    if lib is None or not all(hasattr(lib, name) for name in SYMBOLS):
        return None
    i64, vp, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
    lib.ek_rms_norm.restype, lib.ek_rms_norm.argtypes = None, [vp, i64, i64, i64, vp, f32, vp, i64]
    lib.ek_relu2_gate.restype, lib.ek_relu2_gate.argtypes = None, [vp, vp, i64, vp]
    lib.ek_rope.restype, lib.ek_rope.argtypes = None, [vp, i64, i64, i64, i64, vp, vp, vp]
    lib.ek_attend_decode.restype = ctypes.c_int
    lib.ek_attend_decode.argtypes = [vp, i64, i64, i64, vp, vp, i64, i64, f32, vp, vp]
    if hasattr(lib, "ek_attend_decode_kv"):                                  # float16 KV rows (later builds)
        lib.ek_attend_decode_kv.restype = ctypes.c_int
        lib.ek_attend_decode_kv.argtypes = [vp, i64, i64, i64, vp, vp, ctypes.c_int, i64, i64, f32, vp, vp]
    return lib


KV_TYPES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}               # ek_attend_decode_kv's kv_type


def reads_f16_kv() -> bool:
    """True when the loaded library's decode attention reads float16 KV rows directly (ek_attend_decode_kv)."""
    return available() and hasattr(_lib(), "ek_attend_decode_kv")


def available() -> bool:
    """True when the loaded kernel library has the C element-wise steps."""
    return _lib() is not None


def _check(name: str, a: np.ndarray, ndim: int, rows_contiguous: bool = False) -> None:
    """float32, `ndim` dimensions, C-contiguous (or, with rows_contiguous, only the last axis contiguous)."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != ndim:
        raise KernelInputError(f"{name} must be a {ndim}-D float32 array, got "
                               f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}",
                               fix=f"pass np.ascontiguousarray({name}, dtype=np.float32)")
    contiguous = a.flags.c_contiguous or (rows_contiguous and a.strides[-1] == 4 and a.strides[0] % 4 == 0)
    if not contiguous or not a.flags.aligned:
        raise KernelInputError(f"{name} is not contiguous (strides {a.strides})",
                               fix=f"pass np.ascontiguousarray({name})")


def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float, out: np.ndarray | None = None) -> np.ndarray:
    """native_ops.rms_norm of x [T, n] (rows may be strided), bit for bit -> out [T, n] (allocated if None)."""
    _check("x", x, 2, rows_contiguous=True)
    rows, n = x.shape
    if weight is not None:
        _check("weight", weight, 1)
        if weight.shape[0] != n:
            raise KernelInputError(f"weight has {weight.shape[0]} values for rows of {n}",
                                   fix="pass the norm weight of this layer")
    if out is None:
        out = np.empty((rows, n), dtype=np.float32)
    elif out.shape != (rows, n) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise KernelInputError(f"out must be a C-contiguous float32 [{rows}, {n}] array, got {out.dtype} {out.shape}",
                               fix="pass np.empty_like(x) or leave out=None")
    address = _native.address
    _lib().ek_rms_norm(address(x), rows, n, x.strides[0] // 4, None if weight is None else address(weight), eps,
                       address(out), n)
    return out


def relu2_gate(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """native_ops.relu2_gate (square(max(gate, 0)) * up), bit for bit, for gate/up [T, n] with contiguous rows."""
    _check("gate", gate, 2, rows_contiguous=True)
    _check("up", up, 2, rows_contiguous=True)
    if gate.shape != up.shape:
        raise KernelInputError(f"gate {gate.shape} and up {up.shape} differ", fix="pass the two halves of gate_up")
    out = np.empty(gate.shape, dtype=np.float32)
    lib = _lib()
    if gate.shape[0] == 1 or (gate.flags.c_contiguous and up.flags.c_contiguous):
        lib.ek_relu2_gate(_native.address(gate), _native.address(up), gate.size, _native.address(out))
    else:
        for t in range(gate.shape[0]):
            lib.ek_relu2_gate(_native.address(gate[t]), _native.address(up[t]), gate.shape[1],
                              _native.address(out[t]))
    return out


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """native_ops.apply_rope, bit for bit: x [T, heads, hd] (heads contiguous within a token; the token stride may
    be larger), cos/sin [T, 1, hd / 2] contiguous -> a new contiguous [T, heads, hd]."""
    if not isinstance(x, np.ndarray) or x.ndim != 3 or x.dtype != np.float32 or x.strides[2] != 4 \
            or x.strides[1] != 4 * x.shape[2] or x.strides[0] % 4:
        raise KernelInputError(f"x must be float32 [T, heads, hd] with contiguous heads, got "
                               f"{getattr(x, 'dtype', '')} {getattr(x, 'shape', '')} strides {getattr(x, 'strides', '')}",
                               fix="pass a view of the qkv output reshaped to [T, heads, hd]")
    tokens, heads, hd = x.shape
    for name, table in (("cos", cos), ("sin", sin)):
        _check(name, table, 3)
        if table.shape != (tokens, 1, hd // 2):
            raise KernelInputError(f"{name} has shape {table.shape}, expected {(tokens, 1, hd // 2)}",
                                   fix="pass the rope table rows of the positions being computed")
    out = np.empty(x.shape, dtype=np.float32)
    address = _native.address
    _lib().ek_rope(address(x), tokens, heads, hd, x.strides[0] // 4, address(cos), address(sin), address(out))
    return out


class DecodeAttention:
    """Decode attention of one token in C (src/ops.c ek_attend_decode_kv), with its score scratch kept.

    Keys and values may be float32 or float16 (the f16 cache's stored blocks, widened in registers: F16C on
    x86); float16 needs a library with ek_attend_decode_kv (reads_f16_kv())."""

    def __init__(self, heads: int, kv_heads: int, head_dim: int, max_len: int, scale: float):
        self.heads, self.kv_heads, self.head_dim, self.scale = heads, kv_heads, head_dim, float(scale)
        self.lanes = max(8, heads // kv_heads)                                 # scratch floats per position
        self.scratch = np.empty(max_len * self.lanes, dtype=np.float32)

    def __call__(self, q: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        """q [heads, hd] (any contiguous shape of heads * hd floats); keys/values [kv_heads, S, hd] float32 or
        float16 with contiguous rows per head (views of a [kv_heads, max_len, hd] cache) -> out [1, heads * hd]."""
        if q.dtype != np.float32 or not q.flags.c_contiguous or q.size != self.heads * self.head_dim:
            raise KernelInputError(f"q must be {self.heads * self.head_dim} contiguous float32 values, got "
                                   f"{q.dtype} {q.shape}", fix="pass np.ascontiguousarray(q)")
        S = keys.shape[1] if getattr(keys, "ndim", 0) == 3 else 0
        kv_type = KV_TYPES.get(getattr(keys, "dtype", None))
        lib = _lib()
        for name, block in (("keys", keys), ("values", values)):
            size = block.itemsize if isinstance(block, np.ndarray) else 0
            if kv_type is None or block.dtype != keys.dtype or block.shape != (self.kv_heads, S, self.head_dim) \
                    or block.strides[1:] != (size * self.head_dim, size) or block.strides != keys.strides \
                    or S < 1:
                raise KernelInputError(f"{name} must be float32 or float16 [{self.kv_heads}, {S}, {self.head_dim}] "
                                       f"with contiguous rows, got {getattr(block, 'dtype', type(block).__name__)} "
                                       f"{getattr(block, 'shape', '')} strides {getattr(block, 'strides', '')}",
                                       fix="pass the KV cache's keys()/values() blocks")
        if kv_type == 1 and not hasattr(lib, "ek_attend_decode_kv"):
            raise KernelInputError("float16 keys/values need a kernel library with ek_attend_decode_kv",
                                   fix="rebuild the kernels, or pass float32 blocks")
        if S * self.lanes > self.scratch.shape[0]:
            self.scratch = np.empty(S * self.lanes, dtype=np.float32)
        out = np.empty((1, self.heads * self.head_dim), dtype=np.float32)
        address = _native.address
        args = (address(keys), address(values), kv_type, keys.strides[0] // keys.itemsize, S, self.scale,
                address(out), address(self.scratch))
        if hasattr(lib, "ek_attend_decode_kv"):
            status = lib.ek_attend_decode_kv(address(q), self.heads, self.kv_heads, self.head_dim, *args)
        else:                                                                  # older build: float32 only
            status = lib.ek_attend_decode(address(q), self.heads, self.kv_heads, self.head_dim, args[0], args[1],
                                          *args[3:])
        if status != 0:
            raise KernelInputError(f"ek_attend_decode refused heads {self.heads}, kv heads {self.kv_heads}, "
                                   f"S {S}: {_native.STATUS.get(status, status)}", fix="report this as a bug")
        return out
