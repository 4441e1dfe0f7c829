"""Per-group scale search: the grid (scale, and zero point) of each group that minimises the weighted
squared rounding error sum_i w_i (x_i - d q_i)^2, instead of the max-based RTN grid.

Only the stored numbers change: a symmetric group keeps ggml's Q4_0 codes (-2^(b-1) .. 2^(b-1)-1, one float16
d per 32 weights, so the result still converts to GGUF Q4_0 without requantizing), a zero-point group keeps
its uint8 zero point and float16 d. The search is llama.cpp's `make_qx_quants` idea (ggml-quants.c): try a
grid of clipped scales around the RTN one, refit d by least squares for the codes each gives
(d = sum w x q / sum w q^2), and keep the best; for zero-point formats the clip range [lo, hi] is shrunk on
both ends over a grid (GPTQ's `--mse` grid, AWQ's clipping search). Every candidate is scored at its float16
value with the codes recomputed against it, so the winner's error is exactly the packed tensor's error.

`importance` weights the error per input column: ones for plain RTN, diag(X^T X) of the calibration inputs
for GPTQ (the output error of one column is proportional to it).
"""

from __future__ import annotations

import numpy as np

SCALE_SEARCHES = ("none", "mse")
SYMMETRIC_RATIOS = np.linspace(0.70, 1.15, 46, dtype=np.float32)  # d = ratio * m / -2^(b-1)
SHRINK_STEPS = np.linspace(0.70, 1.0, 13, dtype=np.float32)       # lo' = a lo, hi' = b hi


def round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def safe_reciprocal(d: np.ndarray) -> np.ndarray:
    """float32 1 / d, 0 where d == 0 (as `quantize_rtn`)."""
    d32 = d.astype(np.float32)
    return np.divide(np.float32(1.0), d32, out=np.zeros_like(d32), where=d32 != 0)


def symmetric_codes(groups: np.ndarray, d16: np.ndarray, bits: int) -> np.ndarray:
    """Nearest codes of groups [..., G] float32 for scales d16 [...] float16, as float32 integer values.

    2-7 bits: Q4_0's q = min(floor(x / d + 2^(b-1) + 0.5), 2^b - 1) - 2^(b-1), clipped below at the most
    negative code too (a searched d may put a weight past either end); 8 bits: clip(roundf(x / d), -127, 127).
    """
    inv = safe_reciprocal(d16)[..., None]
    if bits == 8:
        return np.clip(round_half_away(groups * inv), -127, 127)
    half = 1 << (bits - 1)
    return np.clip(np.floor(groups * inv + half + 0.5), 0, 2 * half - 1) - half


def zero_point_codes(groups: np.ndarray, d16: np.ndarray, lo: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes [..., G], zero [...]) of a zero-point grid with float16 step d16 and low end lo, as `quantize_rtn`
    rounds them: zero = clip(roundf(-lo / d)), code = clip(roundf(x / d) + zero, 0, 2^b - 1)."""
    levels = (1 << bits) - 1
    inv = safe_reciprocal(d16)
    zero = np.clip(round_half_away(-lo * inv), 0, levels)
    codes = np.clip(round_half_away(groups * inv[..., None]) + zero[..., None], 0, levels)
    return codes, zero


def weighted_error(groups: np.ndarray, dequantized: np.ndarray, importance: np.ndarray) -> np.ndarray:
    """sum over the last axis of importance * (x - x_hat)^2, float64 [...]."""
    diff = (groups - dequantized).astype(np.float64)
    return (importance * diff * diff).sum(axis=-1)


def least_squares_scale(groups: np.ndarray, values: np.ndarray, importance: np.ndarray) -> np.ndarray:
    """d minimising sum w (x - d q)^2 for fixed integer values q: sum w x q / sum w q^2 (0 if q == 0)."""
    wq = importance * values
    den = (wq * values).sum(axis=-1)
    num = (wq * groups).sum(axis=-1)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0).astype(np.float32)


def keep_better(best: dict, d16: np.ndarray, err: np.ndarray, **extra: np.ndarray) -> None:
    """Replace the entries of `best` where `err` is strictly lower (ties keep the earlier candidate)."""
    better = err < best["err"]
    best["err"] = np.where(better, err, best["err"])
    best["d"] = np.where(better, d16, best["d"])
    for key, value in extra.items():
        best[key] = np.where(better, value, best[key])


def search_symmetric(groups: np.ndarray, importance: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(values [..., G] float32, d [...] float16) minimising the weighted error of groups [..., G].

    The candidates: RTN's own d = m / -2^(b-1) (m the signed value of largest magnitude; kept on ties, so the
    search never does worse than RTN), each ratio of it in `SYMMETRIC_RATIOS`, and each one's least-squares
    refit for the codes it gives.
    """
    half = float(1 << (bits - 1)) if bits < 8 else 127.0
    index = np.abs(groups).argmax(axis=-1)[..., None]
    m = np.take_along_axis(groups, index, axis=-1)[..., 0]
    base = m / -half if bits < 8 else np.abs(m) / half
    d16 = base.astype(np.float16)
    best = {"d": d16, "err": weighted_error(groups, symmetric_codes(groups, d16, bits) * d16.astype(np.float32)[..., None],
                                            importance)}
    for ratio in SYMMETRIC_RATIOS:
        d16 = (base * ratio).astype(np.float16)
        values = symmetric_codes(groups, d16, bits)
        keep_better(best, d16, weighted_error(groups, values * d16.astype(np.float32)[..., None], importance))
        refit = least_squares_scale(groups, values, importance).astype(np.float16)
        refit = np.where(refit == 0, d16, refit)  # an all-zero group keeps its scale
        values = symmetric_codes(groups, refit, bits)
        keep_better(best, refit, weighted_error(groups, values * refit.astype(np.float32)[..., None], importance))
    return symmetric_codes(groups, best["d"], bits), best["d"]


def search_zero_point(groups: np.ndarray, importance: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes [..., G] float32, d [...] float16, zero [...] float32) minimising the weighted error, over clip
    ranges [a lo, b hi] with a, b in `SHRINK_STEPS` (a = b = 1 is RTN's grid and wins ties)."""
    levels = (1 << bits) - 1
    lo0 = np.minimum(groups.min(axis=-1), 0.0)
    hi0 = np.maximum(groups.max(axis=-1), 0.0)
    best: dict = {"err": np.full(lo0.shape, np.inf)}
    for a in SHRINK_STEPS[::-1]:
        for b in SHRINK_STEPS[::-1]:
            lo, hi = lo0 * a, hi0 * b
            d16 = ((hi - lo) / levels).astype(np.float16)
            codes, zero = zero_point_codes(groups, d16, lo, bits)
            dequantized = (codes - zero[..., None]) * d16.astype(np.float32)[..., None]
            err = weighted_error(groups, dequantized, importance)
            if "d" not in best:
                best.update(d=d16, zero=zero, lo=lo)
            keep_better(best, d16, err, zero=zero, lo=lo)
    codes, zero = zero_point_codes(groups, best["d"], best["lo"], bits)
    return codes, best["d"], zero


def search_grid(groups: np.ndarray, importance: np.ndarray, fmt, method: str = "mse"):
    """(integer values or codes [..., G] float32, d [...] float16, zero [...] or None) of the searched grid of
    format class `fmt` (an int format) for groups [..., G]; `method` one of `SCALE_SEARCHES` other than none."""
    if method != "mse":
        raise ValueError(f"unknown scale search {method!r}")
    if fmt.symmetric:
        values, d = search_symmetric(groups, importance, fmt.bits)
        return values, d, None
    return search_zero_point(groups, importance, fmt.bits)


def grid_codes(groups: np.ndarray, d16: np.ndarray, zero: np.ndarray | None, fmt) -> np.ndarray:
    """What `pack_values` takes for groups [..., G] rounded onto a given grid (float16 d [...], zero points
    [...] or None): signed values for symmetric formats, unsigned codes for zero-point ones (float32)."""
    if fmt.symmetric:
        return symmetric_codes(groups, d16, fmt.bits)
    levels = (1 << fmt.bits) - 1
    inv = safe_reciprocal(d16)[..., None]
    return np.clip(round_half_away(groups * inv) + zero[..., None], 0, levels)
