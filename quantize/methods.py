"""Post-training weight quantizers: round-to-nearest for intN, absmean for ternary.

Each quantizer maps a float32 matrix [rows, cols] to a `QuantizedTensor` of a given format and group
size. Registered by name; the pipeline picks one per tensor from the `QuantizeConfig`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgekit.errors import ConfigError
from edgekit.formats import PER_TENSOR, QuantizedTensor, get_format, pack_values, padded_cols
from edgekit.model.ternary import absmean_ternarize

Quantizer = Callable[[np.ndarray, str, int], QuantizedTensor]
QUANTIZERS: dict[str, Quantizer] = {}


def register_quantizer(name: str) -> Callable[[Quantizer], Quantizer]:
    def add(fn: Quantizer) -> Quantizer:
        if name in QUANTIZERS:
            raise ValueError(f"quantizer {name!r} is already registered")
        QUANTIZERS[name] = fn
        return fn
    return add


def get_quantizer(name: str) -> Quantizer:
    if name not in QUANTIZERS:
        raise ConfigError(f"unknown quantization method {name!r}; available: {sorted(QUANTIZERS)}")
    return QUANTIZERS[name]


def grouped(weight: np.ndarray, fmt_name: str, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded weights as [rows, n_groups, G] and a same-shaped mask of real (unpadded) weights."""
    rows, cols = weight.shape
    width = padded_cols(get_format(fmt_name), cols, group_size)
    padded = np.zeros((rows, width), np.float32)
    padded[:, :cols] = weight
    mask = np.zeros((rows, width), bool)
    mask[:, :cols] = True
    group = group_size if group_size > 0 else width
    if group_size == PER_TENSOR:  # one group spanning the whole matrix
        return padded.reshape(1, 1, -1), mask.reshape(1, 1, -1)
    return padded.reshape(rows, width // group, group), mask.reshape(rows, width // group, group)


def round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


@register_quantizer("rtn")
def quantize_rtn(weight: np.ndarray, fmt_name: str, group_size: int, *, scale_search: str = "none",
                 importance: np.ndarray | None = None) -> QuantizedTensor:
    """Round to nearest per group.

    Symmetric intN follows ggml's Q4_0/Q8_0 reference: for 2-7 bits the value of largest magnitude m
    maps to the most negative code (d = m / -2^(b-1), q = floor(x/d + 2^(b-1) + 0.5)), for 8 bits
    d = max|x| / 127 and q = roundf(x/d); d is computed in float32 and stored as float16. Zero-point
    formats use d = (max - min) / (2^b - 1) and zero = round(-min / d).

    `scale_search="mse"` instead picks each group's grid by `scale_search.search_grid` (the same codes
    and layout, only d and the zero point change), weighting the error per input column by `importance`
    [cols] (None: all ones).
    """
    fmt = get_format(fmt_name)
    rows, cols = weight.shape
    groups, _ = grouped(weight, fmt_name, group_size)
    if scale_search != "none":
        return pack_searched(weight, groups, fmt_name, group_size, scale_search, importance)
    if fmt.symmetric:
        half = 1 << (fmt.bits - 1)
        if fmt.bits == 8:
            d = np.abs(groups).max(axis=2) / 127.0
            inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
            q = round_half_away(groups * inv[..., None])
        else:
            idx = np.abs(groups).argmax(axis=2)
            m = np.take_along_axis(groups, idx[..., None], axis=2)[..., 0]
            d = m / -float(half)
            inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
            q = np.minimum(np.floor(groups * inv[..., None] + half + 0.5), 2 * half - 1) - half
        values = q.reshape(rows, -1)[:, :cols].astype(np.int16)
        return pack_values(fmt_name, values, d.astype(np.float16), group_size)
    levels = (1 << fmt.bits) - 1
    lo, hi = np.minimum(groups.min(axis=2), 0.0), np.maximum(groups.max(axis=2), 0.0)
    d = ((hi - lo) / levels).astype(np.float16).astype(np.float32)
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    zero = np.clip(round_half_away(-lo * inv), 0, levels)
    codes = np.clip(round_half_away(groups * inv[..., None]) + zero[..., None], 0, levels)
    values = codes.reshape(rows, -1)[:, :cols].astype(np.int16)
    return pack_values(fmt_name, values, d.astype(np.float16), group_size, zero.astype(np.uint8))


def group_importance(importance: np.ndarray | None, weight: np.ndarray, fmt_name: str, group_size: int) -> np.ndarray:
    """Per-column importance [cols] (None: ones) laid out like `grouped`'s groups: [1, n_groups, G] (padding 0)."""
    cols = weight.shape[1]
    column = np.ones(cols, np.float32) if importance is None else np.asarray(importance, np.float32)
    if column.shape != (cols,) or not np.isfinite(column).all() or (column < 0).any():
        raise ConfigError(f"scale search importance must be {cols} finite non-negative numbers, got shape "
                          f"{column.shape}")
    return grouped(column[None, :], fmt_name, group_size)[0]


def pack_searched(weight: np.ndarray, groups: np.ndarray, fmt_name: str, group_size: int, scale_search: str,
                  importance: np.ndarray | None) -> QuantizedTensor:
    """RTN on the searched grid of every group (see `scale_search.py`), packed like `quantize_rtn`."""
    from edgekit.quantize.scale_search import search_grid

    fmt = get_format(fmt_name)
    rows, cols = weight.shape
    if group_size == PER_TENSOR or fmt.kind != "int":
        raise ConfigError(f"scale search applies to integer formats with groups or channels, not {fmt_name} "
                          f"with group size {group_size}", fix="use scale_search='none'")
    weights = group_importance(importance, weight, fmt_name, group_size)
    values, d, zero = search_grid(groups, weights, fmt, scale_search)
    values = values.reshape(rows, -1)[:, :cols].astype(np.int16)
    return pack_values(fmt_name, values, d, group_size, None if zero is None else zero.astype(np.uint8))


def pack_on_grid(weight: np.ndarray, fmt_name: str, group_size: int, scales: np.ndarray,
                 zeros: np.ndarray | None = None) -> QuantizedTensor:
    """Round float32 weight [rows, cols] onto a given grid (float16 `scales` [rows, n_groups], uint8 `zeros`
    for zero-point formats) and pack it: the export of a QAT student whose grids were frozen or learned."""
    from edgekit.quantize.scale_search import grid_codes

    fmt = get_format(fmt_name)
    rows, cols = weight.shape
    groups, _ = grouped(weight, fmt_name, group_size)
    d16 = np.asarray(scales).astype(np.float16)
    if d16.shape != groups.shape[:2] or fmt.kind != "int" or fmt.symmetric != (zeros is None):
        raise ConfigError(f"a {fmt_name} grid for {rows}x{cols} weights in groups of {group_size} needs scales "
                          f"{groups.shape[:2]}{'' if fmt.symmetric else ' and zero points'}, got {d16.shape}")
    zero = None if zeros is None else np.asarray(zeros).astype(np.float32)
    values = grid_codes(groups, d16, zero, fmt).reshape(rows, -1)[:, :cols].astype(np.int16)
    return pack_values(fmt_name, values, d16, group_size, None if zeros is None else zero.astype(np.uint8))


@register_quantizer("absmean")
def quantize_absmean(weight: np.ndarray, fmt_name: str, group_size: int) -> QuantizedTensor:
    """BitNet b1.58 absmean ternarization: trits = clip(round(W / s), -1, 1), s = mean|W| per group.

    Per tensor (BitNet's choice) s is kept in float32; per channel or per block it is stored in float16
    and the trits are computed against the stored value.
    """
    rows, cols = weight.shape
    if group_size == PER_TENSOR:
        trits, scale = absmean_ternarize(weight)
        return pack_values(fmt_name, trits.astype(np.int16), np.array([[scale]], np.float32), PER_TENSOR)
    groups, mask = grouped(weight, fmt_name, group_size)
    mean = np.abs(groups).sum(axis=2) / np.maximum(mask.sum(axis=2), 1)
    s = np.maximum(mean, 1e-5).astype(np.float16)
    trits = np.clip(np.round(groups / s.astype(np.float32)[..., None]), -1, 1)
    return pack_values(fmt_name, trits.reshape(rows, -1)[:, :cols].astype(np.int16), s, group_size)


def pack_float(weight: np.ndarray, fmt_name: str, group_size: int = PER_TENSOR) -> QuantizedTensor:
    return pack_values(fmt_name, weight, np.zeros((0, 0), np.float32), PER_TENSOR)
