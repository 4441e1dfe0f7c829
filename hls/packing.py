"""Offline packing of ternary weights into the TLMM engine's layout (hls/include/ek_tlmm.h) and the DDR
offsets of every matrix and parameter (hls/include/ek_layer.h `Layout`); the C++ testbench reads what
this writes, so a disagreement fails C simulation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MATRICES = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")   # bitllama2.c's order, ek_layer.h's order


@dataclass(frozen=True)
class TritCode:
    """One group of `group` trits as a code: [sign | index] when `half`, else a full base-3 index."""

    group: int
    half: bool

    @property
    def states(self) -> int:
        return 3 ** self.group

    @property
    def zero(self) -> int:
        return (self.states - 1) // 2          # the all-zero group: every digit is 1

    @property
    def entries(self) -> int:
        return self.zero + 1 if self.half else self.states

    @property
    def index_bits(self) -> int:
        return max(1, int(self.entries - 1).bit_length())

    @property
    def bits(self) -> int:
        return self.index_bits + (1 if self.half else 0)

    @property
    def per_word(self) -> int:
        return 64 // self.bits


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def encode_groups(trits: np.ndarray, code: TritCode) -> np.ndarray:
    """trits [rows, cols] in {-1, 0, 1} -> codes [rows, ceil(cols / G)] uint64 (cols padded with zeros)."""
    rows, cols = trits.shape
    groups = ceil_div(cols, code.group)
    digits = np.ones((rows, groups * code.group), dtype=np.int64)        # digit 1 = trit 0
    digits[:, :cols] = trits.astype(np.int64) + 1
    digits = digits.reshape(rows, groups, code.group)                    # [rows, groups, G]
    index = (digits * (3 ** np.arange(code.group, dtype=np.int64))).sum(axis=-1)
    if not code.half:
        return index.astype(np.uint64)
    sign = index > code.zero                                             # mirror: -t has index 3^G-1-i
    index = np.where(sign, code.states - 1 - index, index)
    return ((sign.astype(np.int64) << code.index_bits) | index).astype(np.uint64)


def matrix_words(out: int, inp: int, code: TritCode, lanes: int) -> int:
    return ceil_div(out, lanes) * ceil_div(ceil_div(inp, code.group), code.per_word) * lanes


def pack_matrix(trits: np.ndarray, code: TritCode, lanes: int) -> np.ndarray:
    """trits [out, in] -> uint64 words in the order [row_block][word_column][lane] (ek_tlmm.h)."""
    out, inp = trits.shape
    codes = encode_groups(trits, code)                                   # [out, groups]
    groups = codes.shape[1]
    wpr, blocks = ceil_div(groups, code.per_word), ceil_div(out, lanes)
    padded = np.full((blocks * lanes, wpr * code.per_word), code.zero, dtype=np.uint64)
    padded[:out, :groups] = codes
    slots = padded.reshape(blocks * lanes, wpr, code.per_word)           # [rows, wpr, per_word]
    shifts = (np.arange(code.per_word, dtype=np.uint64) * np.uint64(code.bits))
    words = np.bitwise_or.reduce(slots << shifts, axis=-1)               # [rows, wpr], LSB-first slots
    return words.reshape(blocks, lanes, wpr).transpose(0, 2, 1).reshape(-1).copy()


def unpack_matrix(words: np.ndarray, out: int, inp: int, code: TritCode, lanes: int) -> np.ndarray:
    """The inverse of `pack_matrix` (for tests): words -> trits [out, in] int8."""
    groups = ceil_div(inp, code.group)
    wpr, blocks = ceil_div(groups, code.per_word), ceil_div(out, lanes)
    rows = words.reshape(blocks, wpr, lanes).transpose(0, 2, 1).reshape(blocks * lanes, wpr)
    shifts = np.arange(code.per_word, dtype=np.uint64) * np.uint64(code.bits)
    mask = np.uint64((1 << code.bits) - 1)
    codes = ((rows[:, :, None] >> shifts) & mask).reshape(blocks * lanes, -1)[:out, :groups].astype(np.int64)
    index = codes & ((1 << code.index_bits) - 1)
    if code.half:
        index = np.where(codes >> code.index_bits, code.states - 1 - index, index)
    digits = (index[:, :, None] // (3 ** np.arange(code.group))) % 3      # [out, groups, G]
    return (digits.reshape(out, -1)[:, :inp] - 1).astype(np.int8)


def build_group_tables(q: np.ndarray, code: TritCode) -> np.ndarray:
    """q [T, in] int8 -> tables [T, groups, entries]: table[k] = sum_j (digit_j(k) - 1) a_j (ek_tlmm.h)."""
    t, inp = q.shape
    groups = ceil_div(inp, code.group)
    a = np.zeros((t, groups * code.group), dtype=np.int64)
    a[:, :inp] = q
    a = a.reshape(t, groups, code.group)                                 # [T, groups, G]
    k = np.arange(code.entries)
    digits = (k[:, None] // (3 ** np.arange(code.group))[None, :]) % 3 - 1   # [entries, G]
    return np.einsum("tgj,kj->tgk", a, digits)


def tlmm_by_tables(words: np.ndarray, q: np.ndarray, out: int, code: TritCode, lanes: int) -> np.ndarray:
    """y [T, out] int64 by table lookups over the packed words: the engine's algorithm in numpy."""
    inp = q.shape[1]
    tables = build_group_tables(q, code)                                 # [T, groups, entries]
    groups = tables.shape[1]
    wpr, blocks = ceil_div(groups, code.per_word), ceil_div(out, lanes)
    rows = words.reshape(blocks, wpr, lanes).transpose(0, 2, 1).reshape(blocks * lanes, wpr)
    shifts = np.arange(code.per_word, dtype=np.uint64) * np.uint64(code.bits)
    mask = np.uint64((1 << code.bits) - 1)
    codes = ((rows[:, :, None] >> shifts) & mask).reshape(blocks * lanes, -1)[:out, :groups].astype(np.int64)
    index, sign = codes & ((1 << code.index_bits) - 1), (codes >> code.index_bits) & 1 if code.half else 0
    looked = tables[:, np.arange(groups)[None, :], index]                # [T, out, groups]
    looked = np.where(sign == 1, -looked, looked) if code.half else looked
    del inp
    return looked.sum(axis=-1)
