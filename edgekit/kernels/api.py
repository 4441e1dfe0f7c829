"""The public kernel API: prepare a weight once, call it per token (see edgekit/kernels/__init__.py).

Activation handling per `act_quant` (ReferenceForward.linear's two modes):
- "int8_absmax": per-token absmax int8 (BitNet A8), bit-exact with edgekit.model.reference.quantize_absmax_int8.
- "none": float activations. f16/f32 weights take them as float32. Integer formats quantize them per token to
  int8 absmax inside the call, exactly as above: the error against the float product is at most
  sum_k |w_k| * s_a / 2 per output, with s_a = max_k |x_k| / 127 (per-token A8, like llama.cpp's Q8_K rather
  than per-32-block Q8_0; measured on random data: a relative error of ~0.3% of the output's magnitude).
"""

from __future__ import annotations

import ctypes
import logging

import numpy as np

from edgekit.errors import ConfigError, ShapeMismatchError
from edgekit.formats import PER_TENSOR, QuantizedTensor, get_format
from edgekit.formats.aligned import aligned, aligned_empty
from edgekit.kernels import _native, reference

logger = logging.getLogger(__name__)

ACT_QUANT_MODES = ("int8_absmax", "none")
LAYOUT_CHOICES = ("auto", "native", "lut3", "bitplane")
DECODE, PREFILL = 1, 64  # token counts used to name the decode (GEMV) and prefill (GEMM) kernels


class KernelInputError(ShapeMismatchError):
    """A buffer handed to a kernel has the wrong dtype, shape, strides or alignment."""


def _ptr(array: np.ndarray | None) -> int | None:
    return None if array is None else _native.address(array)


def check_buffer(name: str, array, dtype, shape: tuple[int, int], writeable: bool = False) -> np.ndarray:
    """Refuse (never copy or reinterpret) a buffer the C code could not read safely."""
    if not isinstance(array, np.ndarray):
        raise KernelInputError(f"{name} must be a numpy array, got {type(array).__name__}",
                               fix=f"pass np.asarray({name}, dtype=np.{np.dtype(dtype).name})")
    if array.dtype != dtype:
        raise KernelInputError(f"{name} has dtype {array.dtype}, expected {np.dtype(dtype).name}",
                               fix=f"convert with {name}.astype(np.{np.dtype(dtype).name})")
    if array.shape != shape:
        raise KernelInputError(f"{name} has shape {array.shape}, expected {shape}",
                               fix="pass [tokens, in_features] activations for this layer")
    if not array.flags.c_contiguous or not array.flags.aligned:
        raise KernelInputError(f"{name} is not a C-contiguous, aligned array (strides {array.strides})",
                               fix=f"pass np.ascontiguousarray({name})")
    if writeable and not array.flags.writeable:
        raise KernelInputError(f"{name} is read-only", fix="pass a writeable output array")
    return array


def as_quantized(weight: QuantizedTensor | np.ndarray) -> QuantizedTensor:
    """A float matrix becomes an f32 (or f16, for float16 input) pass-through tensor."""
    if isinstance(weight, QuantizedTensor):
        weight.validate("weight")
        return weight
    if isinstance(weight, np.ndarray) and weight.ndim == 2 and weight.dtype in (np.float16, np.float32):
        fmt = get_format("f16" if weight.dtype == np.float16 else "f32")
        return QuantizedTensor(fmt.name, weight.shape, PER_TENSOR, fmt.pack_codes(weight),
                               np.zeros((0, 0), np.float32))
    raise KernelInputError(f"weight must be a QuantizedTensor or a 2-D float16/float32 array, got "
                           f"{type(weight).__name__} {getattr(weight, 'dtype', '')} {getattr(weight, 'shape', '')}",
                           fix="pack it with edgekit.formats.pack_values or pass a float32 [out, in] matrix")


class PreparedLinear:
    """One weight matrix bound to its kernels: call with x float32 [T, cols] to get float32 [T, rows].

    `layout` "auto" lets the C library say whether a repacked layout pays on this CPU (ek_preferred_layout, a
    measured choice, see src/lut.c); "native" keeps the packed rows as they are; "lut3" forces the ternary
    lookup-table layout (ek_t2/ek_t1 with one scale per tensor or row); "bitplane" the bit-serial LUT layout
    of ek_i2/i3/i4/u2/u3/u4 (src/bitplane.c). The repack happens here, once.
    `layout` names the layout in use afterwards; `kernel_nbytes` the bytes a call streams."""

    def __init__(self, tensor: QuantizedTensor, act_quant: str, layout: str = "auto"):
        if act_quant not in ACT_QUANT_MODES:
            raise ConfigError(f"act_quant={act_quant!r} is not supported; valid: {list(ACT_QUANT_MODES)}",
                              fix="use 'int8_absmax' (BitNet A8) or 'none' (float activations)")
        if layout not in LAYOUT_CHOICES:
            raise ConfigError(f"layout={layout!r} is not a weight layout; valid: {list(LAYOUT_CHOICES)}",
                              fix="use 'auto' unless you are measuring one layout against another")
        self.tensor, self.act_quant, self.layout = tensor, act_quant, "native"
        fmt = get_format(tensor.format)
        self.is_float = fmt.kind == "float"
        self.padded_cols = tensor.cols if self.is_float else tensor.padded_cols
        self._lib = _native.load()
        self._keep: list[np.ndarray] = []
        self._weight = self._bind(fmt) if self._lib is not None else None
        if self._weight is not None and not self.is_float:
            self._repack(layout)
        self._weight_ref = ctypes.byref(self._weight) if self._weight is not None else None
        self.variant = self._choose_variant()
        self.last_variant = self.variant

    @property
    def rows(self) -> int:
        return self.tensor.rows

    @property
    def cols(self) -> int:
        return self.tensor.cols

    @property
    def nbytes(self) -> int:
        return self.tensor.nbytes

    @property
    def kernel_nbytes(self) -> int:
        """Bytes of weights, scales and zero points one call reads (the repacked size if repacked)."""
        if self.layout == "native":
            return self.tensor.nbytes
        return int(self._keep[0].nbytes + self.tensor.nbytes - self.tensor.data.nbytes)

    def _repack(self, layout: str) -> None:
        """Re-encode the weight into the layout the kernels want (ek_repack: streaming, multithreaded)."""
        lib, weight = self._lib, self._weight
        if layout == "auto":
            if not hasattr(lib, "ek_preferred_layout"):
                return
            layout_id = int(lib.ek_preferred_layout(ctypes.byref(weight), self._act_kind()))
        else:
            layout_id = _native.LAYOUT_IDS[layout]
        if layout_id == 0:
            return
        size = int(lib.ek_repack_size(ctypes.byref(weight), layout_id))
        if size == 0:
            raise ConfigError(f"layout {layout!r} does not apply to {self.tensor.format} group "
                              f"{self.tensor.group_size} [{self.rows} x {self.cols}]",
                              fix="use layout='auto' or 'native' (lut3 takes ternary weights with one scale "
                                  "per tensor or row; bitplane takes ek_i2/i3/i4/u2/u3/u4)")
        packed = aligned_empty(size)
        status = lib.ek_repack(ctypes.byref(weight), layout_id, packed.ctypes.data)
        if status != 0:
            raise KernelInputError(f"repacking {self.tensor.format} to {layout} failed: "
                                   f"{_native.STATUS.get(status, status)}", fix="report this as a bug in edgekit")
        self._keep[0] = packed  # the native rows are no longer read by the kernels
        weight.layout, weight.data = layout_id, packed.ctypes.data
        self.layout = next(name for name, i in _native.LAYOUT_IDS.items() if i == layout_id)

    def _bind(self, fmt) -> _native.Weight:
        """Describe the packed arrays to C (ek_weight); keep references so the buffers outlive the struct."""
        t = self.tensor
        data = aligned(t.data)   # loaders align packed data already; a copy only for other arrays
        per_tensor = t.group_size == PER_TENSOR
        scales = np.ascontiguousarray(t.scales, dtype=np.float32).reshape(-1) if not self.is_float else None
        zeros = np.ascontiguousarray(t.zeros) if t.zeros is not None else None
        self._keep = [a for a in (data, scales, zeros) if a is not None]
        group = self.padded_cols if per_tensor else t.group_width
        return _native.Weight(fmt.format_id, 0, t.rows, self.padded_cols, data.shape[1], group, int(per_tensor),
                              0, _ptr(data), _ptr(scales), _ptr(zeros))

    def _act_kind(self) -> int:
        return _native.ACT_F32 if self.is_float else _native.ACT_I8

    def _choose_variant(self) -> str:
        """Name the decode kernel; log when a faster kernel cannot take this shape."""
        if self._lib is None:
            return "numpy_reference"
        names = []
        for tokens in (DECODE, PREFILL):
            reason = ctypes.c_char_p()
            name = self._lib.ek_kernel_choice(ctypes.byref(self._weight), self._act_kind(), tokens,
                                              ctypes.byref(reason))
            if reason.value:
                logger.info("%s [%d x %d] T=%d falls back to %s: %s", self.tensor.format, self.rows, self.cols,
                            tokens, name.decode(), reason.value.decode())
            names.append(name.decode())
        return names[0] if names[0] == names[1] else f"{names[0]}|{names[1]}"

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim != 2:
            raise KernelInputError(f"x must be a 2-D float32 array [tokens, {self.cols}], got "
                                   f"{getattr(x, 'shape', type(x).__name__)}", fix="reshape to [tokens, in_features]")
        tokens = x.shape[0]
        check_buffer("x", x, np.float32, (max(tokens, 1), self.cols))
        if out is None:
            out = np.empty((tokens, self.rows), dtype=np.float32)
        else:
            check_buffer("out", out, np.float32, (tokens, self.rows), writeable=True)
        if self._lib is None:
            out[...] = self._numpy_call(x)
            return out
        if self.is_float:
            return self._float_call(x, out)
        # One foreign call: ek_linear quantizes x per token (int8 absmax, zero padded) before the kernel.
        act = _native.Act(_native.ACT_F32, self.cols, tokens, self.padded_cols, None, None, _native.address(x), None)
        self._run(act, out)
        return out

    def _float_call(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Float weights: float activations directly; with A8, the integer-valued q as float, then * a_scale
        (the reference's (q @ W.T) * a_scale order)."""
        a_scale = None
        if self.act_quant == "int8_absmax":
            q, a_scale = quantize_padded(self._lib, x, self.cols)
            x = q.astype(np.float32)
        act = _native.Act(_native.ACT_F32, 0, x.shape[0], self.cols, None, None, _ptr(x), None)
        self._run(act, out)
        if a_scale is not None:
            out *= a_scale[:, None]
        return out

    def _run(self, act: _native.Act, out: np.ndarray) -> None:
        name = ctypes.c_char_p()
        status = self._lib.ek_linear(self._weight_ref, ctypes.byref(act), _native.address(out), self.rows,
                                     ctypes.byref(name))
        if status != 0:
            raise KernelInputError(f"kernel for {self.tensor.format} [{self.rows} x {self.cols}] refused the call: "
                                   f"{_native.STATUS.get(status, status)}", fix="report this as a bug in edgekit")
        self.last_variant = name.value.decode()

    def _numpy_call(self, x: np.ndarray) -> np.ndarray:
        if self.is_float:
            if self.act_quant == "int8_absmax":
                q, a_scale = reference.quantize_absmax_int8(x)
                return reference.linear_float(reference.float_weights(self.tensor), q.astype(np.float32)) \
                    * a_scale[:, None]
            return reference.linear_float(reference.float_weights(self.tensor), x)
        q, a_scale = reference.quantize_absmax_int8(x)
        padded = np.zeros((x.shape[0], self.padded_cols), dtype=np.int8)
        padded[:, : self.cols] = q
        return reference.linear_int8(self.tensor, padded, a_scale)

    def __repr__(self) -> str:
        return (f"PreparedLinear({self.tensor.format} [{self.rows} x {self.cols}] group {self.tensor.group_size}, "
                f"act {self.act_quant}, layout {self.layout}, {self.variant})")


class LinearGroup:
    """Integer-weight PreparedLinears with one input, run as one foreign call (ek_linear_multi): x is quantized
    once and every part's rows are shared among the threads in one pool run. Each output column is computed
    exactly as the part's own call computes it (tests/kernels/test_kernels.py holds it to them).

    `LinearGroup.applies(parts)` says whether the loaded library and the parts allow it (the same cols, integer
    formats, at most 8 parts)."""

    MAX_PARTS = 8

    def __init__(self, parts: list[PreparedLinear]):
        if not self.applies(parts):
            raise ConfigError(f"these {len(parts)} linears cannot run as one call",
                              fix="check LinearGroup.applies(parts) first, or call the parts one by one")
        self.parts, self.cols = parts, parts[0].cols
        self.rows = sum(p.rows for p in parts)
        self._lib = parts[0]._lib
        self._weights = (ctypes.POINTER(_native.Weight) * len(parts))(*[ctypes.pointer(p._weight) for p in parts])
        self.last_variant = parts[0].variant

    @classmethod
    def applies(cls, parts: list[PreparedLinear]) -> bool:
        lib = parts[0]._lib if parts else None
        return (lib is not None and hasattr(lib, "ek_linear_multi") and 1 < len(parts) <= cls.MAX_PARTS
                and all(p._lib is lib and p._weight is not None and not p.is_float and p.cols == parts[0].cols
                        and p.padded_cols == parts[0].padded_cols for p in parts))

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """x float32 [T, cols] -> out float32 [T, sum rows] (the parts' outputs side by side)."""
        if not isinstance(x, np.ndarray) or x.ndim != 2:
            raise KernelInputError(f"x must be a 2-D float32 array [tokens, {self.cols}], got "
                                   f"{getattr(x, 'shape', type(x).__name__)}", fix="reshape to [tokens, in_features]")
        tokens = x.shape[0]
        check_buffer("x", x, np.float32, (max(tokens, 1), self.cols))
        if out is None:
            out = np.empty((tokens, self.rows), dtype=np.float32)
        else:
            check_buffer("out", out, np.float32, (tokens, self.rows), writeable=True)
        padded = self.parts[0].padded_cols
        act = _native.Act(_native.ACT_F32, self.cols, tokens, padded, None, None, _native.address(x), None)
        name = ctypes.c_char_p()
        status = self._lib.ek_linear_multi(self._weights, len(self.parts), ctypes.byref(act), _native.address(out),
                                           self.rows, ctypes.byref(name))
        if status != 0:
            raise KernelInputError(f"ek_linear_multi refused {len(self.parts)} weights [{self.rows} x {self.cols}]: "
                                   f"{_native.STATUS.get(status, status)}", fix="report this as a bug in edgekit")
        self.last_variant = name.value.decode()
        return out


def quantize_padded(lib, x: np.ndarray, padded_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """C absmax int8 of x [T, K] into q int8 [T, padded_cols] (zero padding) and scale float32 [T]."""
    tokens, cols = x.shape
    q = np.empty((tokens, padded_cols), dtype=np.int8)
    scale = np.empty(tokens, dtype=np.float32)
    lib.ek_quantize_absmax_i8(_ptr(x), tokens, cols, cols, _ptr(q), padded_cols, _ptr(scale))
    return q, scale
