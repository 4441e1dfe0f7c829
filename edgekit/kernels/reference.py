"""numpy kernels: the reference every compiled variant is tested against, and the fallback when the
compiled library is missing.

They compute exactly what src/ek_kernels.h specifies. Integer group sums are exact (float64 BLAS over
integers below 2^53); the float steps follow the C order:
    per-tensor scale s:   y = (float32(acc) * a_scale) * s
    per-row/group scales: y = (sum over groups, in order, of float32(acc_g) * s_rg) * a_scale
so the scalar C kernel matches bit for bit; SIMD kernels that add groups in another order differ only in
float32 rounding of that final sum (tests allow a relative 1e-5 of the sum of |acc_g * s_rg|).
"""

from __future__ import annotations

import numpy as np

from edgekit.formats import PER_TENSOR, QuantizedTensor, get_format
from edgekit.model.reference import quantize_absmax_int8 as reference_quantize


def quantize_absmax_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x float32 [T, K] -> (int8 [T, K], float32 [T]), identical to edgekit.model.reference's version."""
    q, scale = reference_quantize(x)
    return q.astype(np.int8), scale.reshape(-1).astype(np.float32)


def group_sums(tensor: QuantizedTensor, q: np.ndarray) -> np.ndarray:
    """Exact integer sums acc [T, rows, groups] of values * q per weight group; q int8 [T, padded_cols]."""
    values = tensor.values().astype(np.float64)                          # [rows, padded_cols]
    width = tensor.group_width
    groups = tensor.padded_cols // width
    qf = q.astype(np.float64)
    acc = np.empty((q.shape[0], tensor.rows, groups), dtype=np.int64)
    for g in range(groups):
        cols = slice(g * width, (g + 1) * width)
        acc[:, :, g] = (qf[:, cols] @ values[:, cols].T).astype(np.int64)  # exact: |sum| < 2^53
    return acc


def finish(tensor: QuantizedTensor, acc: np.ndarray, a_scale: np.ndarray) -> np.ndarray:
    """Apply the scales to acc [T, rows, groups] in the C kernels' float32 order -> y [T, rows]."""
    a = a_scale.astype(np.float32)[:, None]
    if tensor.group_size == PER_TENSOR:
        s = np.float32(tensor.scales.reshape(-1)[0])
        return (acc[:, :, 0].astype(np.float32) * a) * s
    scales = tensor.scales.astype(np.float32)                             # [rows, groups]
    total = np.zeros(acc.shape[:2], dtype=np.float32)
    for g in range(acc.shape[2]):                                         # sequential, as scalar.c adds
        total += acc[:, :, g].astype(np.float32) * scales[None, :, g]
    return total * a


def linear_int8(tensor: QuantizedTensor, q: np.ndarray, a_scale: np.ndarray) -> np.ndarray:
    """Integer-weight linear with int8 activations: q int8 [T, padded_cols], a_scale [T] -> y [T, rows]."""
    return finish(tensor, group_sums(tensor, q), a_scale)


def float_weights(tensor: QuantizedTensor) -> np.ndarray:
    """f16/f32 weights as float32 [rows, cols]."""
    return get_format(tensor.format).unpack_codes(tensor.data, tensor.cols).astype(np.float32)


def linear_float(weight: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Float weights [rows, cols] x float activations [T, cols] -> [T, rows] (BLAS order, not C order)."""
    return (x @ weight.T).astype(np.float32)
