"""GPTQ: Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers" (ICLR 2023, arXiv:2210.17323), in numpy float64.

GPTQ quantizes a linear layer W [rows, cols] one input column at a time and, after each column, moves that
column's rounding error onto the columns not quantized yet, so that the layer's output on the calibration
inputs X [N, cols] changes as little as possible: argmin_Q ||X W^T - X Q^T||^2 (paper Eq. 1). In the
paper's terms:

- the Hessian of that objective is H = 2 X^T X; we take H = X^T X (the factor cancels) and add
  lambda = damp * mean(diag H) to its diagonal (Section 4, Step 3, "dampening");
- Step 1, order: natural column order, or decreasing diag(H) ("act-order", `--act-order` in the
  authors' code); with groups, act-order uses static groups fitted before reordering (`--static-groups`),
  so every group still covers consecutive natural columns and the packed layout is the usual one;
- the OBS update (Eqs. 2-3): delta_F = -(w_q - quant(w_q)) / [H_F^-1]_qq * (H_F^-1)_{q,:}. Step 3 takes the
  needed rows of the successive inverses from the upper Cholesky factor U of H^-1:
  err = (w_j - q_j) / U_jj, W[:, j:] -= err U[j, j:];
- Step 2, lazy batch updates: inside a block of B columns only the block is updated; the columns after it
  receive the whole block's errors at once, W[:, i2:] -= E U[i1:i2, i2:] (Algorithm 1).

Each group's grid (scale, zero point) is the one the RTN/absmean quantizers of `methods.py` would fit, with
the same float32/float16 arithmetic, so the result packs with `pack_values` exactly as RTN's does; with a
diagonal Hessian GPTQ returns RTN's tensor bit for bit. Without act-order a group's grid is fitted when the
algorithm enters the group, from the current (error-updated) weights of its columns; the authors' code fits
it from `W[:, j:j+G]`, which inside a block misses the block's own updates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from edgekit.errors import ConfigError, QuantizationError
from edgekit.formats import PER_TENSOR, QuantizedTensor, get_format, pack_values, padded_cols
from edgekit.formats.base import PackedFormat, check_group_size
from edgekit.quantize.methods import register_quantizer, round_half_away
from edgekit.quantize.scale_search import search_grid

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 128
DEFAULT_DAMP = 0.01


def safe_reciprocal(d: np.ndarray) -> np.ndarray:
    """1 / d in d's dtype, 0 where d == 0 (as `quantize_rtn`)."""
    return np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)


# -- grids: one group's scale (and zero point) for every row, fitted with the RTN/absmean formulas ----------


@dataclass(frozen=True)
class Grid:
    """The quantization grid of one group, one entry per row (or one for a per-tensor ternary scale).

    `scale` is what is stored (float16, or float32 for per-tensor ternary); `step` is the float32 number
    the RTN/absmean quantizer rounds against (a reciprocal it multiplies by, or for per-group absmean the
    scale it divides by); `zero` holds zero points of the zero-point formats.
    """

    fmt: type[PackedFormat]
    scale: np.ndarray
    step: np.ndarray
    zero: np.ndarray | None = None
    divide: bool = False

    def snap(self, column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest grid point of each row's weight (rounded in float32 like the RTN quantizers):
        (integer values as `pack_values` takes them [rows], dequantized values float64 [rows])."""
        w = column.astype(np.float32)
        if self.fmt.kind == "ternary":
            ratio = w / self.step if self.divide else w * self.step
            values = np.clip(np.round(ratio), -1, 1)
            return values.astype(np.int16), values * self.scale.astype(np.float64)
        if not self.fmt.symmetric:
            levels = (1 << self.fmt.bits) - 1
            codes = np.clip(round_half_away(w * self.step) + self.zero, 0, levels)
            return codes.astype(np.int16), (codes - self.zero) * self.scale.astype(np.float64)
        if self.fmt.bits == 8:
            values = np.clip(round_half_away(w * self.step), -127, 127)
        else:  # ggml Q4_0: q = floor(x/d + 2^(b-1) + 0.5) - 2^(b-1), clipped to the code range
            half = 1 << (self.fmt.bits - 1)
            values = np.clip(np.floor(w * self.step + half + 0.5), 0, 2 * half - 1) - half
        return values.astype(np.int16), values * self.scale.astype(np.float64)


def fit_grid(fmt: type[PackedFormat], block: np.ndarray, count: np.ndarray, importance: np.ndarray | None = None,
             search: str = "none") -> Grid:
    """Fit one group's grid per row from float32 weights `block` [rows, G] (zero-padded past the matrix;
    `count` [rows] int64 real weights per row), with exactly the arithmetic of `quantize_rtn` /
    `quantize_absmean`; with `search` "mse", the grid `scale_search.search_grid` picks for the column
    weights `importance` [G]."""
    if search != "none":
        return searched_grid(fmt, block, importance, search)
    if fmt.kind == "ternary":  # BitNet absmean, per group: s = mean|W| stored in float16
        s = np.maximum(np.abs(block).sum(axis=1) / np.maximum(count, 1), 1e-5).astype(np.float16)
        return Grid(fmt, s, s.astype(np.float32), divide=True)
    if not fmt.symmetric:  # d = (max - min) / (2^b - 1), zero = round(-min / d)
        levels = (1 << fmt.bits) - 1
        lo, hi = np.minimum(block.min(axis=1), 0.0), np.maximum(block.max(axis=1), 0.0)
        d = ((hi - lo) / levels).astype(np.float16)
        inv = safe_reciprocal(d.astype(np.float32))
        zero = np.clip(round_half_away(-lo * inv), 0, levels)
        return Grid(fmt, d, inv, zero)
    if fmt.bits == 8:  # Q8_0: d = max|x| / 127
        d = np.abs(block).max(axis=1) / 127.0
        return Grid(fmt, d.astype(np.float16), safe_reciprocal(d))
    idx = np.abs(block).argmax(axis=1)  # Q4_0: d = m / -2^(b-1), m the signed value of largest magnitude
    m = np.take_along_axis(block, idx[:, None], axis=1)[:, 0]
    d = m / -float(1 << (fmt.bits - 1))
    return Grid(fmt, d.astype(np.float16), safe_reciprocal(d))


def searched_grid(fmt: type[PackedFormat], block: np.ndarray, importance: np.ndarray, search: str) -> Grid:
    """The searched grid of block [rows, G]: the float16 d (and zero point) `quantize_rtn(scale_search=...)`
    would store, and the float32 reciprocal of the stored d that `Grid.snap` rounds against."""
    _, d, zero = search_grid(block, importance[None, :].astype(np.float32), fmt, search)
    return Grid(fmt, d, safe_reciprocal(d.astype(np.float32)), zero)


def fit_tensor_grid(fmt: type[PackedFormat], weight: np.ndarray) -> Grid:
    """BitNet's per-tensor absmean grid from the whole float32 matrix (as `absmean_ternarize`)."""
    inv = np.float32(1.0) / np.maximum(np.abs(weight).mean(dtype=np.float32), np.float32(1e-5))
    return Grid(fmt, np.array([np.float32(1.0) / inv], np.float32), np.array([inv], np.float32))


@dataclass(frozen=True)
class GroupLayout:
    """Which group each natural column belongs to: `width` padded columns per group, `n_groups` groups."""

    fmt: type[PackedFormat]
    cols: int
    group_size: int
    static_groups: bool = False
    search: str = "none"
    importance: np.ndarray | None = None  # [padded] float32 column weights of the scale search, natural order

    @property
    def padded(self) -> int:
        return padded_cols(self.fmt, self.cols, self.group_size)

    @property
    def width(self) -> int:
        return self.group_size if self.group_size > 0 else self.padded

    @property
    def n_groups(self) -> int:
        return 1 if self.group_size == PER_TENSOR else self.padded // self.width

    @property
    def dynamic(self) -> bool:
        """Groups fitted when the algorithm enters them (blocks of G without act-order)."""
        return self.group_size > 0 and not self.static_groups

    def group_of(self, col: int) -> int:
        return 0 if self.group_size == PER_TENSOR else col // self.width

    def group_importance(self, start: int) -> np.ndarray | None:
        """The scale search's column weights [G] of the group starting at natural column `start`."""
        return None if self.importance is None else self.importance[start:start + self.width]


def fit_static_grids(layout: GroupLayout, weight: np.ndarray) -> list[Grid]:
    """Every group's grid from float32 weights [rows, cols] zero-padded as `methods.grouped` pads them."""
    if layout.group_size == PER_TENSOR:
        return [fit_tensor_grid(layout.fmt, weight)]
    rows = weight.shape[0]
    padded = np.zeros((rows, layout.padded), np.float32)
    padded[:, : layout.cols] = weight
    grids = []
    for g in range(layout.n_groups):
        start = g * layout.width
        block = np.ascontiguousarray(padded[:, start:start + layout.width])
        count = np.full(rows, max(0, min(layout.cols - start, layout.width)), np.int64)
        grids.append(fit_grid(layout.fmt, block, count, layout.group_importance(start), layout.search))
    return grids


# -- the GPTQ algorithm ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPTQResult:
    """GPTQ's output in natural column order: integer `values` [rows, cols] for `pack_values`, their
    `grids` (one per group), the `dequantized` weights float64 [rows, cols] and the OBS loss
    sum_j ||w_j - q_j||^2 / (2 [H^-1]_jj) (Algorithm 1's Losses, summed)."""

    values: np.ndarray
    grids: list[Grid]
    dequantized: np.ndarray
    loss: float

    def pack(self, fmt_name: str, group_size: int) -> QuantizedTensor:
        """The packed tensor: scales [rows, n_groups] float16 (or [1, 1] float32 per tensor) and zero points."""
        if group_size == PER_TENSOR:
            return pack_values(fmt_name, self.values, self.grids[0].scale.reshape(1, 1), PER_TENSOR)
        scales = np.stack([grid.scale for grid in self.grids], axis=1)
        zeros = None
        if self.grids[0].zero is not None:
            zeros = np.stack([grid.zero for grid in self.grids], axis=1).astype(np.uint8)
        return pack_values(fmt_name, self.values, scales, group_size, zeros)


def check_gptq_format(fmt_name: str, group_size: int) -> type[PackedFormat]:
    """The format class, if GPTQ can produce it (int and ternary formats) with this group size."""
    fmt = get_format(fmt_name)
    if fmt.kind not in ("int", "ternary"):
        raise ConfigError(f"GPTQ cannot produce {fmt_name} ({fmt.kind} format); use an int or ternary format")
    check_group_size(fmt, group_size)
    return fmt


def drop_dead_inputs(hessian: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs that were always zero (diag H == 0) carry no information: set H_jj = 1 and W[:, j] = 0, as the
    authors' code does, so H stays invertible. Returns float64 copies (H, W)."""
    H = np.array(hessian, dtype=np.float64)
    W = np.array(weight, dtype=np.float64)
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    if dead.any():
        log.debug("GPTQ: %d dead input columns", int(dead.sum()))
    return H, W


def inverse_hessian_cholesky(hessian: np.ndarray, damp: float, name: str) -> np.ndarray:
    """Upper Cholesky factor U of (H + lambda I)^-1, lambda = damp * mean(diag H) (Section 4, Step 3):
    H^-1 = U^T U, so row j of U, divided by U_jj, is the OBS update row of the j-th inverse."""
    H = hessian + damp * np.mean(np.diag(hessian)) * np.eye(len(hessian))
    try:
        lower_inv = np.linalg.inv(np.linalg.cholesky(H))     # L^-1 with H = L L^T
        upper = np.linalg.cholesky(lower_inv.T @ lower_inv).T  # H^-1 = L^-T L^-1 = U^T U
    except np.linalg.LinAlgError:
        raise QuantizationError(f"{name}: the calibration Hessian is not positive definite after damping "
                                f"{damp}", fix="raise gptq_damp (e.g. 0.1) or calibrate on more text") from None
    if not np.isfinite(upper).all():
        raise QuantizationError(f"{name}: the inverse calibration Hessian is not finite",
                                fix="raise gptq_damp (e.g. 0.1) or calibrate on more text")
    return upper


def current_group_columns(W: np.ndarray, block: np.ndarray, errors: np.ndarray, U: np.ndarray,
                          i1: int, i2: int, j: int, stop: int) -> np.ndarray:
    """Up-to-date weights of columns j..stop-1 [rows, stop-j]: inside the block they live in `block`; past
    it, W still lacks the pending lazy update of the block's first j-i1 columns (Step 2), applied here."""
    inside = block[:, j - i1:min(stop, i2) - i1]
    if stop <= i2:
        return inside
    done = j - i1
    outside = W[:, i2:stop] - errors[:, :done] @ U[i1:i1 + done, i2:stop]
    return np.concatenate([inside, outside], axis=1)


def refit_group(layout: GroupLayout, columns: np.ndarray, start: int) -> Grid:
    """A group's grid fitted from its current weights [rows, n] (n <= G; zero-padded to G), starting at
    natural column `start`."""
    rows, n = columns.shape
    block = np.zeros((rows, layout.width), np.float32)
    block[:, :n] = columns
    return fit_grid(layout.fmt, block, np.full(rows, n, np.int64), layout.group_importance(start), layout.search)


@dataclass
class ColumnState:
    """What the column loop writes: integer values and dequantized weights [rows, cols] in processing order."""

    values: np.ndarray
    dequantized: np.ndarray
    loss: float = 0.0


def quantize_block(W: np.ndarray, U: np.ndarray, i1: int, i2: int, perm: np.ndarray, layout: GroupLayout,
                   grids: list[Grid], state: ColumnState) -> np.ndarray:
    """Quantize columns i1..i2-1 one by one with OBS updates inside the block (Algorithm 1, inner loop);
    returns the block's scaled errors E [rows, i2-i1] for the lazy update of the columns after it."""
    block = W[:, i1:i2].copy()
    errors = np.zeros_like(block)
    for k in range(i2 - i1):
        j = i1 + k
        group = layout.group_of(int(perm[j]))
        if layout.dynamic and perm[j] % layout.width == 0:  # entering a group (natural order): fit its grid
            stop = min(j + layout.width, W.shape[1])
            grids[group] = refit_group(layout, current_group_columns(W, block, errors, U, i1, i2, j, stop), j)
        values, q = grids[group].snap(block[:, k])
        state.values[:, j], state.dequantized[:, j] = values, q
        err = (block[:, k] - q) / U[j, j]
        state.loss += 0.5 * float(err @ err)
        block[:, k:] -= np.outer(err, U[j, j:i2])
        errors[:, k] = err
    return errors


def gptq_quantize(weight: np.ndarray, hessian: np.ndarray, fmt_name: str, group_size: int, *,
                  block_size: int = DEFAULT_BLOCK_SIZE, damp: float = DEFAULT_DAMP, act_order: bool = False,
                  name: str = "weight", scale_search: str = "none") -> GPTQResult:
    """GPTQ (Algorithm 1) of `weight` float32 [rows, cols] against `hessian` = X^T X [cols, cols] into
    `fmt_name` with `group_size`; see the module docstring for the steps and the grid. `scale_search` "mse"
    picks each group's grid by the error weighted with diag(H) (`scale_search.py`) when the group is fitted."""
    fmt = check_gptq_format(fmt_name, group_size)
    if scale_search != "none" and (fmt.kind != "int" or group_size == PER_TENSOR):
        raise ConfigError(f"{name}: scale search applies to integer formats with groups or channels, not "
                          f"{fmt_name} with group size {group_size}", fix="use scale_search='none'")
    w32 = np.ascontiguousarray(weight, dtype=np.float32)
    rows, cols = w32.shape
    if np.shape(hessian) != (cols, cols):
        raise QuantizationError(f"{name}: Hessian shape {np.shape(hessian)} does not match {cols} input columns")
    H, W = drop_dead_inputs(hessian, w32)
    layout = GroupLayout(fmt, cols, group_size, static_groups=act_order, search=scale_search,
                         importance=search_importance(H, layout_width(fmt, cols, group_size), scale_search))
    grids = fit_static_grids(layout, w32)  # per tensor/channel, act-order groups, padding-only groups
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(cols)
    W, H = W[:, perm], H[np.ix_(perm, perm)]
    U = inverse_hessian_cholesky(H, damp, name)
    state = ColumnState(np.zeros((rows, cols), np.int16), np.zeros((rows, cols)))
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        errors = quantize_block(W, U, i1, i2, perm, layout, grids, state)
        W[:, i2:] -= errors @ U[i1:i2, i2:]  # lazy batch update (Step 2)
    values, dequantized = np.empty_like(state.values), np.empty_like(state.dequantized)
    values[:, perm], dequantized[:, perm] = state.values, state.dequantized
    log.debug("GPTQ %s -> %s group %d: OBS loss %.6g", name, fmt_name, group_size, state.loss)
    return GPTQResult(values, grids, dequantized, state.loss)


def layout_width(fmt: type[PackedFormat], cols: int, group_size: int) -> int:
    return padded_cols(fmt, cols, group_size)


def search_importance(H: np.ndarray, padded: int, search: str) -> np.ndarray | None:
    """diag(H) [padded] float32 (padding columns 0): the scale search's weight of each input column."""
    if search == "none":
        return None
    weights = np.zeros(padded, np.float32)
    weights[:len(H)] = np.diag(H)
    return weights


@register_quantizer("gptq")
def quantize_gptq(weight: np.ndarray, fmt_name: str, group_size: int, *, hessian: np.ndarray | None = None,
                  block_size: int = DEFAULT_BLOCK_SIZE, damp: float = DEFAULT_DAMP, act_order: bool = False,
                  name: str = "weight", scale_search: str = "none") -> QuantizedTensor:
    """The registered quantizer: GPTQ of one matrix with the Hessian of its calibration inputs, packed."""
    if hessian is None:
        raise QuantizationError(f"{name}: GPTQ needs the Hessian X^T X of the layer's calibration inputs",
                                fix="quantize with quantize_model(..., calib_text=...) or set calib_path")
    result = gptq_quantize(weight, hessian, fmt_name, group_size, block_size=block_size, damp=damp,
                           act_order=act_order, name=name, scale_search=scale_search)
    return result.pack(fmt_name, group_size)


__all__ = ["GPTQResult", "Grid", "GroupLayout", "gptq_quantize", "quantize_gptq"]
