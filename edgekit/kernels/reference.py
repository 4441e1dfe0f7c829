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


# ---- bit-serial LUT (EK_LAYOUT_BITPLANE, src/bitplane.c) ------------------------------------------------------

BITPLANE_TILE = 32  # rows per tile of the layout


def pack_bitplanes(tensor: QuantizedTensor) -> np.ndarray:
    """The EK_LAYOUT_BITPLANE bytes of an ek_i2/i3/i4/u2/u3/u4 tensor, uint8 [tiles, octets, bits, 32].

    Byte [tile, o, b, r] holds bit b of the codes of row 32 tile + r at columns 8o..8o+7 (column 8o+j at bit j):
    the low nibble is the quad 8o..8o+3, the high nibble the quad 8o+4..8o+7. Padding rows/columns hold code 0."""
    bits = get_format(tensor.format).bits
    codes = tensor.codes().astype(np.uint8)                                  # [rows, padded_cols]
    tiles, octets = -(-tensor.rows // BITPLANE_TILE), -(-tensor.padded_cols // 8)
    full = np.zeros((tiles * BITPLANE_TILE, octets * 8), dtype=np.uint8)
    full[: tensor.rows, : tensor.padded_cols] = codes
    planes = (full[None, :, :] >> np.arange(bits, dtype=np.uint8)[:, None, None]) & 1   # [bits, R, C]
    weights = (1 << np.arange(8)).astype(np.uint8)
    packed = (planes.reshape(bits, tiles, BITPLANE_TILE, octets, 8) * weights).sum(axis=-1).astype(np.uint8)
    return np.ascontiguousarray(packed.transpose(1, 3, 0, 2))               # [tiles, octets, bits, 32]


def bitserial_tables(q: np.ndarray) -> np.ndarray:
    """Per token and column quad, the 16 partial sums T[i] = sum_{j: bit j of i} q[4k + j]: int64 [T, quads, 16]
    (q int8 [T, cols] zero-padded to whole octets here; |T| <= 508)."""
    cols = -(-q.shape[1] // 8) * 8
    qp = np.zeros((q.shape[0], cols), dtype=np.int64)
    qp[:, : q.shape[1]] = q
    select = (np.arange(16)[:, None] >> np.arange(4)[None, :]) & 1           # [16, 4]: bit j of index i
    return qp.reshape(q.shape[0], cols // 4, 4) @ select.T                  # [T, quads, 16]


def bitserial_group_sums(tensor: QuantizedTensor, packed: np.ndarray, q: np.ndarray) -> np.ndarray:
    """acc [T, rows, groups] computed the bit-serial way from the packed planes: per plane b, each quad's 4-bit
    index looks its table up, the lookups add up per group, planes add with shifts (sum_b 2^b P_b), and the
    code offset (ek_i*) or zero point (ek_u*) times the group's activation sum is subtracted."""
    fmt = get_format(tensor.format)
    tables = bitserial_tables(q)                                            # [T, quads, 16]
    tiles, octets, bits, _ = packed.shape
    nibbles = np.stack([packed & 15, packed >> 4], axis=-1)                 # [tiles, octets, bits, 32, 2]
    idx = nibbles.transpose(2, 0, 3, 1, 4).reshape(bits, tiles * BITPLANE_TILE, octets * 2)  # [bits, R, quads]
    quad = np.arange(octets * 2)
    code_sums = np.zeros((q.shape[0], tiles * BITPLANE_TILE, octets * 2), dtype=np.int64)
    for b in range(bits):
        code_sums += tables[:, quad[None, :], idx[b]] << b                  # [T, R, quads]
    width = tensor.group_width if tensor.group_size != PER_TENSOR else tensor.padded_cols
    groups = tensor.padded_cols // width
    per_group = code_sums[:, : tensor.rows].reshape(q.shape[0], tensor.rows, -1)
    acc = np.stack([per_group[:, :, g * width // 4: (g + 1) * width // 4 if g + 1 < groups else None].sum(-1)
                    for g in range(groups)], axis=-1)                       # [T, rows, groups]
    gsum = q[:, : tensor.padded_cols].astype(np.int64).reshape(q.shape[0], groups, width).sum(-1)   # [T, groups]
    if tensor.zeros is not None:
        zero = tensor.zeros.astype(np.int64)                                # [rows, groups]
    else:
        zero = np.full((tensor.rows, groups), 1 << (fmt.bits - 1), dtype=np.int64)  # value = code - 2^(bits-1)
    return acc - zero[None] * gsum[:, None, :]


def linear_bitserial(tensor: QuantizedTensor, q: np.ndarray, a_scale: np.ndarray) -> np.ndarray:
    """The bit-serial LUT kernel's numpy twin: q int8 [T, padded_cols], a_scale [T] -> y [T, rows], finished in
    the C float order (finish); equal bit for bit to linear_int8."""
    return finish(tensor, bitserial_group_sums(tensor, pack_bitplanes(tensor), q), a_scale)
