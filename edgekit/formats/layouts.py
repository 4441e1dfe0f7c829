"""The packed formats. Ids are permanent: never reuse one, even for a removed format.

| name   | id | codes                                   | row layout                                            |
|--------|----|-----------------------------------------|-------------------------------------------------------|
| ek_t2  | 1  | trit + 1 in {0, 1, 2}, 2 bits           | little-endian bit stream: weight j in bits 2j..2j+1   |
| ek_t1  | 2  | 5 trits per byte, base 3 (1.6 bits)     | TQ1_0's fixed point: byte = ceil(n * 256 / 243)       |
| ek_i2  | 3  | signed int2 + 2, 2 bits                 | little-endian bit stream                              |
| ek_i3  | 4  | signed int3 + 4, 3 bits                 | little-endian bit stream (8 weights per 3 bytes)      |
| ek_i4  | 5  | signed int4 + 8, 4 bits                 | little-endian bit stream (weight 2k low nibble)       |
| ek_u2  | 6  | unsigned int2 with zero points          | little-endian bit stream                              |
| ek_u3  | 7  | unsigned int3 with zero points          | little-endian bit stream                              |
| ek_u4  | 8  | unsigned int4 with zero points          | little-endian bit stream                              |
| ek_i8  | 9  | signed int8 + 128                       | one byte per weight                                   |
| f16    | 10 | IEEE half, pass-through                 | little endian                                         |
| f32    | 11 | IEEE single, pass-through               | little endian                                         |

ek_t1 stores n = sum_i d_i * 3^(4-i) over five digits d_i = trit_i + 1 (first weight most significant) as
ceil(n * 256 / 243), so digit i is recovered with uint8 arithmetic as ((byte * 3^i) mod 256) * 3 >> 8:
the encoding llama.cpp's TQ1_0 uses for its `qs` bytes (ggml-quants.c, quantize_row_tq1_0_ref), which lets
kernels extract trits with a multiply and a shift instead of a division.
"""

from __future__ import annotations

import numpy as np

from edgekit.formats.base import PER_CHANNEL, PER_TENSOR, PackedFormat, pack_bitstream, unpack_bitstream


class _Bitstream(PackedFormat):
    """Codes of `bits` bits in a little-endian bit stream per row."""

    @classmethod
    def pack_codes(cls, codes: np.ndarray) -> np.ndarray:
        return pack_bitstream(codes.astype(np.uint8), cls.bits)

    @classmethod
    def unpack_codes(cls, data: np.ndarray, padded_cols: int) -> np.ndarray:
        return unpack_bitstream(data, padded_cols, cls.bits)


class Ternary2Bit(_Bitstream, name="ek_t2", format_id=1):
    kind, bits, col_multiple = "ternary", 2, 4


_POW3 = np.array([81, 27, 9, 3, 1], dtype=np.int32)


class TernaryBase3(PackedFormat, name="ek_t1", format_id=2):
    kind, bits, col_multiple = "ternary", 8, 5

    @classmethod
    def row_bytes(cls, padded_cols: int) -> int:
        return padded_cols // 5

    @classmethod
    def pack_codes(cls, codes: np.ndarray) -> np.ndarray:
        rows, cols = codes.shape
        n = codes.reshape(rows, cols // 5, 5).astype(np.int32) @ _POW3          # [rows, cols/5] in 0..242
        return ((n * 256 + 242) // 243).astype(np.uint8)

    @classmethod
    def unpack_codes(cls, data: np.ndarray, padded_cols: int) -> np.ndarray:
        shifted = (data[:, :, None].astype(np.uint16) * _POW3[::-1].astype(np.uint16)[None, None, :]) & 0xFF
        digits = (shifted * 3) >> 8                                             # [rows, bytes, 5]
        return digits.reshape(data.shape[0], -1)[:, :padded_cols].astype(np.uint8)


class Int2(_Bitstream, name="ek_i2", format_id=3):
    kind, bits, col_multiple = "int", 2, 4
    group_sizes = (PER_CHANNEL, 32, 64, 128)


class Int3(_Bitstream, name="ek_i3", format_id=4):
    kind, bits, col_multiple = "int", 3, 8
    group_sizes = (PER_CHANNEL, 32, 64, 128)


class Int4(_Bitstream, name="ek_i4", format_id=5):
    kind, bits, col_multiple = "int", 4, 2
    group_sizes = (PER_CHANNEL, 32, 64, 128)


class UInt2(_Bitstream, name="ek_u2", format_id=6):
    kind, bits, col_multiple, symmetric = "int", 2, 4, False
    group_sizes = (PER_CHANNEL, 32, 64, 128)


class UInt3(_Bitstream, name="ek_u3", format_id=7):
    kind, bits, col_multiple, symmetric = "int", 3, 8, False
    group_sizes = (PER_CHANNEL, 32, 64, 128)


class UInt4(_Bitstream, name="ek_u4", format_id=8):
    kind, bits, col_multiple, symmetric = "int", 4, 2, False
    group_sizes = (PER_CHANNEL, 32, 64, 128)


class Int8(PackedFormat, name="ek_i8", format_id=9):
    kind, bits = "int", 8
    group_sizes = (PER_CHANNEL, 32)

    @classmethod
    def pack_codes(cls, codes: np.ndarray) -> np.ndarray:
        return codes.astype(np.uint8)

    @classmethod
    def unpack_codes(cls, data: np.ndarray, padded_cols: int) -> np.ndarray:
        return data[:, :padded_cols]


class _Float(PackedFormat):
    kind = "float"
    group_sizes = (PER_TENSOR,)
    dtype: np.dtype

    @classmethod
    def pack_codes(cls, codes: np.ndarray) -> np.ndarray:
        """For float formats the 'codes' are the values themselves: float [rows, cols] -> bytes."""
        return np.ascontiguousarray(codes.astype(cls.dtype)).view(np.uint8)

    @classmethod
    def unpack_codes(cls, data: np.ndarray, padded_cols: int) -> np.ndarray:
        return np.ascontiguousarray(data).view(cls.dtype)[:, :padded_cols]


class Float16(_Float, name="f16", format_id=10):
    bits, dtype = 16, np.dtype("<f2")


class Float32(_Float, name="f32", format_id=11):
    bits, dtype = 32, np.dtype("<f4")
