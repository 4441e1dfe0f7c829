"""The packed-format registry and `QuantizedTensor`, the one in-memory form of a packed weight matrix.

A weight matrix W [rows, cols] (rows = output features, cols = the reduction axis K) is stored as
integer codes packed into bytes, row by row, plus scales (and, for asymmetric formats, zero points):

    codes   [rows, padded_cols]      unsigned integers, `bits` each, packed by the format into
    data    uint8 [rows, row_bytes]
    scales  [rows, n_groups] float16 (per block / per channel), or [1, 1] float32 (per tensor)
    zeros   [rows, n_groups] uint8, or None for symmetric formats

`group_size` weights along a row share one scale: a positive G means blocks of G (cols padded to a
multiple of G), `PER_CHANNEL` (0) one scale per row, `PER_TENSOR` (-1) one scale for the matrix.
Padding is explicit: `padded_cols - cols` zero-valued codes at the end of every row.

Each format subclass registers itself with a unique, never reused id (the gguf-py pattern) and
implements the numpy reference `pack_codes` / `unpack_codes`; `dequantize` is shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgekit.errors import ConfigError, ShapeMismatchError

PER_TENSOR = -1
PER_CHANNEL = 0

FORMATS: dict[str, type["PackedFormat"]] = {}
_IDS: dict[int, str] = {}


class PackedFormat:
    """One bit-exact weight layout. Subclasses set the class variables and the two pack functions."""

    name: ClassVar[str]
    format_id: ClassVar[int]
    kind: ClassVar[str]            # "ternary", "int" or "float"
    bits: ClassVar[int]            # bits per code as stored (8/5 for base-3 ternary is reported by bits_per_code)
    symmetric: ClassVar[bool] = True
    col_multiple: ClassVar[int] = 1  # codes per packing unit along a row
    group_sizes: ClassVar[tuple[int, ...]] = (PER_TENSOR, PER_CHANNEL, 32, 64, 128, 256)

    def __init_subclass__(cls, *, name: str | None = None, format_id: int | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is None:  # an abstract helper class, not a format
            return
        if name in FORMATS or format_id in _IDS:
            raise ValueError(f"format {name!r} / id {format_id} is already registered")
        cls.name, cls.format_id = name, format_id
        FORMATS[name] = cls
        _IDS[format_id] = name

    # -- codes <-> values ------------------------------------------------------------------------------
    @classmethod
    def code_range(cls) -> tuple[int, int]:
        """Smallest and largest signed value a code represents (symmetric formats)."""
        half = 1 << (cls.bits - 1)
        return -half, half - 1

    @classmethod
    def row_bytes(cls, padded_cols: int) -> int:
        """Packed bytes per row for `padded_cols` codes."""
        return -(-padded_cols * cls.bits // 8)

    # -- numpy reference packing -----------------------------------------------------------------------
    @classmethod
    def pack_codes(cls, codes: np.ndarray) -> np.ndarray:
        """uint8 codes [rows, padded_cols] -> packed bytes [rows, row_bytes]."""
        raise NotImplementedError

    @classmethod
    def unpack_codes(cls, data: np.ndarray, padded_cols: int) -> np.ndarray:
        """Inverse of `pack_codes`."""
        raise NotImplementedError


def get_format(name: str) -> type[PackedFormat]:
    if name not in FORMATS:
        raise ConfigError(f"unknown packed format {name!r}; valid formats: {sorted(FORMATS)}")
    return FORMATS[name]


def padded_cols(fmt: type[PackedFormat], cols: int, group_size: int) -> int:
    """Columns after padding to the group size and the format's packing unit."""
    unit = math.lcm(fmt.col_multiple, group_size if group_size > 0 else 1)
    return -(-cols // unit) * unit


def check_group_size(fmt: type[PackedFormat], group_size: int) -> None:
    if group_size not in fmt.group_sizes:
        raise ConfigError(f"format {fmt.name} does not support group size {group_size}; "
                          f"supported: {list(fmt.group_sizes)} (-1 per tensor, 0 per channel)")


def pack_bitstream(codes: np.ndarray, bits: int) -> np.ndarray:
    """Little-endian bit stream per row: code j occupies bits [j*bits, (j+1)*bits) of the row.

    [rows, n] uint8 codes -> [rows, n, bits] bits (LSB first) -> [rows, ceil(n*bits/8)] bytes.
    """
    rows, n = codes.shape
    planes = (codes[:, :, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(planes.reshape(rows, n * bits), axis=1, bitorder="little")


def unpack_bitstream(data: np.ndarray, n: int, bits: int) -> np.ndarray:
    rows = data.shape[0]
    planes = np.unpackbits(data, axis=1, count=n * bits, bitorder="little").reshape(rows, n, bits)
    return (planes << np.arange(bits, dtype=np.uint8)).sum(axis=2, dtype=np.uint8)


@dataclass(frozen=True)
class QuantizedTensor:
    """A packed weight matrix: see the module docstring for the meaning of each field."""

    format: str
    shape: tuple[int, int]
    group_size: int
    data: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def cols(self) -> int:
        return self.shape[1]

    @property
    def padded_cols(self) -> int:
        return padded_cols(get_format(self.format), self.cols, self.group_size)

    @property
    def group_width(self) -> int:
        """Weights per scale along a padded row."""
        return self.group_size if self.group_size > 0 else self.padded_cols

    def codes(self) -> np.ndarray:
        return get_format(self.format).unpack_codes(self.data, self.padded_cols)

    def values(self) -> np.ndarray:
        """Integer values of the codes [rows, padded_cols] (int16): trits, signed ints, or code - zero."""
        fmt = get_format(self.format)
        codes = self.codes().astype(np.int16)
        if fmt.kind == "ternary":
            return codes - 1
        if fmt.symmetric:
            return codes + np.int16(fmt.code_range()[0])
        zeros = np.repeat(self.zeros.astype(np.int16), self.group_width, axis=1)
        return codes - zeros

    def scale_matrix(self) -> np.ndarray:
        """Scales broadcast to [rows or 1, padded_cols] in float32."""
        return np.repeat(self.scales.astype(np.float32), self.group_width, axis=1)

    def dequantize(self) -> np.ndarray:
        """float32 [rows, cols]: value * scale, padding dropped (the numpy reference for every kernel)."""
        fmt = get_format(self.format)
        if fmt.kind == "float":
            return fmt.unpack_codes(self.data, self.cols).astype(np.float32)
        full = self.values().astype(np.float32) * self.scale_matrix()
        return full[:, : self.cols]

    def take_rows(self, rows: np.ndarray) -> "QuantizedTensor":
        """The packed sub-matrix of the given rows (packing is per row, so this is a plain slice)."""
        rows = np.asarray(rows)
        if self.group_size == PER_TENSOR:  # one scale for the whole matrix (or none, for float formats)
            scales, zeros = self.scales, self.zeros
        else:
            scales, zeros = self.scales[rows], None if self.zeros is None else self.zeros[rows]
        return QuantizedTensor(self.format, (len(rows), self.cols), self.group_size, self.data[rows], scales, zeros)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.scales.nbytes + (self.zeros.nbytes if self.zeros is not None else 0))

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / (self.rows * self.cols)

    def validate(self, name: str = "tensor") -> None:
        """Check every array's shape and dtype against the format; raise `ShapeMismatchError` naming `name`."""
        fmt = get_format(self.format)
        check_group_size(fmt, self.group_size)
        rows = self.rows
        want_bytes = fmt.row_bytes(self.cols if fmt.kind == "float" else self.padded_cols)
        if self.data.shape != (rows, want_bytes) or self.data.dtype != np.uint8:
            raise ShapeMismatchError(f"{name}: packed data {self.data.shape} {self.data.dtype} does not fit "
                                     f"{self.format} {self.shape} group {self.group_size} "
                                     f"(expected uint8 {(rows, want_bytes)})")
        if fmt.kind == "float":
            return
        groups = 1 if self.group_size == PER_TENSOR else self.padded_cols // self.group_width
        want = (1, 1) if self.group_size == PER_TENSOR else (rows, groups)
        if self.scales.shape != want or self.scales.dtype not in (np.float16, np.float32):
            raise ShapeMismatchError(f"{name}: scales {self.scales.shape} {self.scales.dtype}, expected {want} "
                                     "float16/float32")
        if fmt.symmetric != (self.zeros is None):
            raise ShapeMismatchError(f"{name}: format {self.format} {'has no' if fmt.symmetric else 'needs'} "
                                     "zero points")
        if self.zeros is not None and (self.zeros.shape != want or self.zeros.dtype != np.uint8):
            raise ShapeMismatchError(f"{name}: zero points {self.zeros.shape} {self.zeros.dtype}, expected {want}")


def pack_values(format_name: str, values: np.ndarray, scales: np.ndarray, group_size: int,
                zeros: np.ndarray | None = None) -> QuantizedTensor:
    """Pack integer `values` [rows, cols] (trits, signed ints, or unsigned codes for zero-point formats)
    with their scales; columns are padded with the code for zero (or the zero point)."""
    fmt = get_format(format_name)
    check_group_size(fmt, group_size)
    rows, cols = values.shape
    if fmt.kind == "float":
        return QuantizedTensor(fmt.name, (rows, cols), PER_TENSOR, fmt.pack_codes(values), np.zeros((0, 0), np.float32))
    width = padded_cols(fmt, cols, group_size)
    if fmt.kind == "ternary":
        codes, low, high = values.astype(np.int16) + 1, -1, 1
    elif fmt.symmetric:
        low, high = fmt.code_range()
        codes = values.astype(np.int16) - low
    else:
        low, high = 0, (1 << fmt.bits) - 1
        codes = values.astype(np.int16)
    if values.size and (values.min() < low or values.max() > high):
        raise ShapeMismatchError(f"{format_name} holds values in [{low}, {high}], got [{values.min()}, {values.max()}]")
    pad_code = 0 if not fmt.symmetric else -low if fmt.kind == "int" else 1
    padded = np.full((rows, width), pad_code, dtype=np.int16)
    padded[:, :cols] = codes
    if zeros is not None:  # pad asymmetric rows with their own zero point, so padding dequantizes to 0
        group = group_size if group_size > 0 else width
        padded[:, cols:] = np.repeat(zeros.astype(np.int16), group, axis=1)[:, cols:]
    tensor = QuantizedTensor(fmt.name, (rows, cols), group_size, fmt.pack_codes(padded.astype(np.uint8)),
                             scales, zeros)
    tensor.validate(format_name)
    return tensor
