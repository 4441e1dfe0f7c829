"""Packed weights -> onnxruntime's com.microsoft MatMulNBits inputs, without requantizing.

MatMulNBits (onnxruntime contrib op, docs/ContribOperators.md) computes Y = A @ dequant(B)^T with

    B            uint8 [N, n_blocks, blob_size]   N output rows, n_blocks = ceil(K / block_size),
                                                  blob_size = block_size * bits / 8; inside a row the
                                                  codes form a little-endian bit stream (code j at bits
                                                  j*bits .. j*bits + bits - 1, LSB first)
    scales       float [N * n_blocks]             one per block, row-major
    zero_points  uint8 [N * ceil(n_blocks * bits / 8)] codes packed the same way per row (8-bit: one
                                                  byte each); absent means 2^(bits-1) for every block
    W[n, k]    = (code[n, k] - zero_point[n, k // block_size]) * scale[n, k // block_size]

So edgekit's bit-stream formats map byte for byte where the row layouts agree:

| edgekit                 | bits | zero point                  | bytes of B                                    |
|-------------------------|------|-----------------------------|-----------------------------------------------|
| ek_i4 g32/64/128        | 4    | default 8 (code = v + 8)    | identical to `QuantizedTensor.data`           |
| ek_i2 g32/64/128        | 2    | default 2 (code = v + 2)    | identical                                     |
| ek_i8 g32               | 8    | default 128 (code = v + 128)| identical                                     |
| ek_u4 / ek_u2 g32/64/128| 4/2  | the tensor's own, packed    | identical                                     |
| ek_t2 (trit + 1)        | 2    | 1 for every block, packed   | identical                                     |
| ek_t1 (base 3)          | 2    | 1                           | codes re-packed as 2-bit trit + 1 (values exact) |
| per-channel / per-tensor| any  | as above                    | codes re-blocked into `block_size` blocks, the scale repeated; rows padded with the zero code |

ek_i3 / ek_u3 (3-bit) have no MatMulNBits form (it runs 2, 4 and 8 bits): `OnnxFormatError` lists what does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import UnsupportedModelError
from edgekit.formats import PER_TENSOR, QuantizedTensor, get_format
from edgekit.formats.base import pack_bitstream, unpack_bitstream

BLOCK_SIZES = (16, 32, 64, 128, 256)
ONNX_FORMATS = ("ek_t2", "ek_t1", "ek_i2", "ek_u2", "ek_i4", "ek_u4", "ek_i8", "f16", "f32")


class OnnxFormatError(UnsupportedModelError):
    """A weight format that MatMulNBits (or a float initializer) cannot hold exactly."""


@dataclass
class NBitsWeight:
    """The initializers and attributes of one MatMulNBits node (see the module doc for the layout)."""

    blob: np.ndarray          # uint8 [N, n_blocks, blob_size]
    scales: np.ndarray        # float32 [N * n_blocks]
    zero_points: np.ndarray | None
    bits: int
    block_size: int
    k: int
    n: int
    exact_bytes: bool         # B is `QuantizedTensor.data` unchanged


def check_onnx_format(tensor: QuantizedTensor, name: str) -> None:
    if tensor.format not in ONNX_FORMATS:
        raise OnnxFormatError(
            f"tensor {name!r} is {tensor.format}, which onnxruntime's MatMulNBits cannot hold (it runs 2, 4 and "
            f"8 bits); formats ONNX export takes: {', '.join(ONNX_FORMATS)}",
            fix="re-quantize with --format ek_i4 / ek_u4 / ek_i2 / ek_t2 / ek_i8, or export GGUF or use the "
                "native runtime for 3-bit weights")


def block_size_for(tensor: QuantizedTensor, default: int) -> int:
    """The MatMulNBits block: the tensor's own group, or `default` for per-channel / per-tensor scales."""
    if tensor.group_size > 0:
        if tensor.group_size not in BLOCK_SIZES:
            raise OnnxFormatError(f"group size {tensor.group_size} is not a MatMulNBits block size {BLOCK_SIZES}")
        return tensor.group_size
    return default


def nbits_codes(tensor: QuantizedTensor) -> tuple[np.ndarray, int, np.ndarray | None]:
    """(uint8 codes [N, padded_cols], bits, zero codes per group [N, groups] or None for the default)."""
    fmt = get_format(tensor.format)
    codes = tensor.codes()
    if fmt.kind == "ternary":      # ek_t2 codes and ek_t1's base-3 digits are both trit + 1: zero point 1
        return codes, 2, np.ones((tensor.rows, 1), np.uint8)
    if fmt.symmetric:
        return codes, fmt.bits, None
    return codes, fmt.bits, tensor.zeros


def to_matmul_nbits(tensor: QuantizedTensor, name: str, default_block: int = 32) -> NBitsWeight:
    """Convert one packed matrix [N, K] to MatMulNBits form, values exactly preserved."""
    check_onnx_format(tensor, name)
    if get_format(tensor.format).kind == "float":
        raise OnnxFormatError(f"tensor {name!r} is {tensor.format}: a float initializer, not MatMulNBits")
    block = block_size_for(tensor, default_block)
    codes, bits, zeros = nbits_codes(tensor)
    n, k = tensor.shape
    n_blocks = -(-k // block)
    width = n_blocks * block                                             # K padded to whole blocks
    group_of_block = _group_index(tensor, block, n_blocks)               # [n_blocks] -> scale column
    zero_code = (1 << (bits - 1)) if zeros is None else None
    padded = np.empty((n, width), np.uint8)
    used = min(width, codes.shape[1])
    padded[:, :used] = codes[:, :used]
    if used < width:                                                     # pad with each block's zero code
        pad_zero = zeros[:, group_of_block[used // block:]] if zeros is not None else None
        padded[:, used:] = zero_code if pad_zero is None else np.repeat(pad_zero, block, axis=1)[:, : width - used]
    blob = pack_bitstream(padded, bits) if bits < 8 else padded
    scales = _block_scales(tensor, group_of_block)
    zero_points = None if zeros is None else _pack_zero_points(_block_zeros(zeros, tensor, group_of_block), bits)
    exact = blob.shape == tensor.data.shape and bool(np.array_equal(blob, tensor.data))
    return NBitsWeight(blob.reshape(n, n_blocks, block * bits // 8), scales, zero_points, bits, block, k, n, exact)


def dequantize_matmul_nbits(weight: NBitsWeight) -> np.ndarray:
    """numpy reference of MatMulNBits' dequantization: float32 [N, K] (what onnxruntime must reproduce)."""
    n, n_blocks, blob_size = weight.blob.shape
    per_row = n_blocks * weight.block_size
    rows = weight.blob.reshape(n, n_blocks * blob_size)
    codes = unpack_bitstream(rows, per_row, weight.bits) if weight.bits < 8 else rows
    if weight.zero_points is None:
        zeros = np.full((n, n_blocks), 1 << (weight.bits - 1), np.int16)
    else:
        zrow = weight.zero_points.reshape(n, -1)
        zeros = (unpack_bitstream(zrow, n_blocks, weight.bits) if weight.bits < 8 else zrow).astype(np.int16)
    values = codes.astype(np.int16) - np.repeat(zeros, weight.block_size, axis=1)
    scales = np.repeat(weight.scales.reshape(n, n_blocks), weight.block_size, axis=1)
    return (values.astype(np.float32) * scales)[:, : weight.k]


def _group_index(tensor: QuantizedTensor, block: int, n_blocks: int) -> np.ndarray:
    """Scale column of each MatMulNBits block: the group it lies in (0 for per-channel / per-tensor)."""
    if tensor.group_size > 0:
        return np.arange(n_blocks)
    return np.zeros(n_blocks, np.int64)


def _block_scales(tensor: QuantizedTensor, group_of_block: np.ndarray) -> np.ndarray:
    scales = tensor.scales.astype(np.float32)                             # fp16 -> fp32 is exact
    if tensor.group_size == PER_TENSOR:
        scales = np.broadcast_to(scales, (tensor.rows, 1))
    return np.ascontiguousarray(scales[:, group_of_block]).reshape(-1)


def _block_zeros(zeros: np.ndarray, tensor: QuantizedTensor, group_of_block: np.ndarray) -> np.ndarray:
    if zeros.shape[0] == 1 and tensor.rows != 1:
        zeros = np.broadcast_to(zeros, (tensor.rows, zeros.shape[1]))
    if zeros.shape[1] == 1:
        return np.repeat(zeros, len(group_of_block), axis=1)
    return zeros[:, group_of_block]


def _pack_zero_points(zeros: np.ndarray, bits: int) -> np.ndarray:
    """[N, n_blocks] codes -> uint8 [N * ceil(n_blocks * bits / 8)], each row packed like B's bit stream."""
    zeros = np.ascontiguousarray(zeros, dtype=np.uint8)
    return (pack_bitstream(zeros, bits) if bits < 8 else zeros).reshape(-1)

