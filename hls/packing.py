"""Offline packing of ternary weights into the TLMM engine's layout (hls/include/ek_tlmm.h) and the DDR
offsets of every matrix and parameter (hls/include/ek_layer.h `Layout`); the C++ testbench reads what
this writes, so a disagreement fails C simulation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MATRICES = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")   # bitllama2.c's order, ek_layer.h's order


BASE3_TRITS_PER_WORD = 40     # 8 bytes of 5 trits each (3^5 = 243 <= 256: 1.6 bits a trit, as TQ1_0)


@dataclass(frozen=True)
class TritCode:
    """One group of `group` trits as a code: [sign | index] when `half`, else a full base-3 index.

    In DDR a word holds `per_word` codes of `bits` bits LSB-first (`base3` False), or 8 bytes of 5 base-3
    digits each (`base3` True: digit = trit + 1, byte = sum_k digit_k 3^k, trits in row order, the last
    40 % G digits of a word unused): ek_tlmm.h decodes such a word into the same codes when it loads a row
    block on chip, so on-chip words are `tile_bits` = per_word x bits wide (G=3: 13 codes, 65 bits)."""

    group: int
    half: bool
    base3: bool = False

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
        return BASE3_TRITS_PER_WORD // self.group if self.base3 else 64 // self.bits

    @property
    def tile_bits(self) -> int:
        """Bits of one on-chip (decoded) word: the codes of one DDR word."""
        return self.per_word * self.bits


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
    words = base3_words(slots, code) if code.base3 else code_words(slots, code)   # [rows, wpr]
    return words.reshape(blocks, lanes, wpr).transpose(0, 2, 1).reshape(-1).copy()


def code_words(slots: np.ndarray, code: TritCode) -> np.ndarray:
    """codes [..., per_word] -> uint64 words [...], LSB-first slots of code.bits."""
    shifts = (np.arange(code.per_word, dtype=np.uint64) * np.uint64(code.bits))
    return np.bitwise_or.reduce(slots << shifts, axis=-1)


def full_index(codes: np.ndarray, code: TritCode) -> np.ndarray:
    """[sign | index] codes -> full base-3 group indices sum_j (t_j + 1) 3^j."""
    codes = codes.astype(np.int64)
    if not code.half:
        return codes
    index = codes & ((1 << code.index_bits) - 1)
    return np.where(codes >> code.index_bits, code.states - 1 - index, index)


def half_code(index: np.ndarray, code: TritCode) -> np.ndarray:
    """Full indices -> the codes `encode_groups` writes."""
    if not code.half:
        return index
    sign = index > code.zero
    return (sign.astype(np.int64) << code.index_bits) | np.where(sign, code.states - 1 - index, index)


def base3_words(slots: np.ndarray, code: TritCode) -> np.ndarray:
    """codes [..., per_word] -> uint64 words of 8 base-3 bytes (5 digits each, digit 1 = trit 0 as padding)."""
    digits = (full_index(slots, code)[..., None] // 3 ** np.arange(code.group)) % 3     # [..., per_word, G]
    flat = np.ones(slots.shape[:-1] + (BASE3_TRITS_PER_WORD,), dtype=np.int64)
    flat[..., :code.per_word * code.group] = digits.reshape(slots.shape[:-1] + (-1,))
    values = (flat.reshape(slots.shape[:-1] + (8, 5)) * 3 ** np.arange(5)).sum(axis=-1)  # [..., 8] in [0, 243)
    return np.bitwise_or.reduce(values.astype(np.uint64) << (np.arange(8, dtype=np.uint64) * np.uint64(8)), axis=-1)


def word_codes(rows: np.ndarray, code: TritCode) -> np.ndarray:
    """DDR words [rows, wpr] -> codes [rows, wpr * per_word] (ek_tlmm.h's decode on load for base3)."""
    if code.base3:
        values = (rows[:, :, None] >> (np.arange(8, dtype=np.uint64) * np.uint64(8))) & np.uint64(0xFF)
        digits = (values.astype(np.int64)[..., None] // 3 ** np.arange(5)) % 3           # [rows, wpr, 8, 5]
        digits = digits.reshape(rows.shape + (-1,))[..., :code.per_word * code.group]
        groups = digits.reshape(rows.shape + (code.per_word, code.group))
        index = (groups * 3 ** np.arange(code.group)).sum(axis=-1)
        return half_code(index, code).reshape(rows.shape[0], -1)
    shifts = np.arange(code.per_word, dtype=np.uint64) * np.uint64(code.bits)
    mask = np.uint64((1 << code.bits) - 1)
    return ((rows[:, :, None] >> shifts) & mask).reshape(rows.shape[0], -1).astype(np.int64)


def unpack_matrix(words: np.ndarray, out: int, inp: int, code: TritCode, lanes: int) -> np.ndarray:
    """The inverse of `pack_matrix` (for tests): words -> trits [out, in] int8."""
    groups = ceil_div(inp, code.group)
    wpr, blocks = ceil_div(groups, code.per_word), ceil_div(out, lanes)
    rows = words.reshape(blocks, wpr, lanes).transpose(0, 2, 1).reshape(blocks * lanes, wpr)
    index = full_index(word_codes(rows, code)[:out, :groups], code)
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
    codes = word_codes(rows, code)[:out, :groups]
    index, sign = codes & ((1 << code.index_bits) - 1), (codes >> code.index_bits) & 1 if code.half else 0
    looked = tables[:, np.arange(groups)[None, :], index]                # [T, out, groups]
    looked = np.where(sign == 1, -looked, looked) if code.half else looked
    del inp
    return looked.sum(axis=-1)


def stripe_ports(data: np.ndarray) -> np.ndarray:
    """A buffer as the four wide AXI ports read it (hls/include/ek_axi.h): its bytes cut into BEAT_BYTES beats,
    beat b placed at beat b // AXI_PORTS of region b % AXI_PORTS, the regions one after another (uint8, padded
    with zeros to whole lines). The host allocates this and points each port register at its region."""
    from edgekit.hls.ip import AXI_PORTS, BEAT_BYTES, LINE_BYTES  # noqa: PLC0415

    raw = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
    lines = max(1, ceil_div(raw.size, LINE_BYTES))
    padded = np.zeros(lines * LINE_BYTES, dtype=np.uint8)
    padded[:raw.size] = raw
    return np.ascontiguousarray(padded.reshape(lines, AXI_PORTS, BEAT_BYTES).transpose(1, 0, 2)).reshape(-1)


def unstripe_ports(striped: np.ndarray, dtype, count: int) -> np.ndarray:
    """The first `count` items of `dtype` of a striped buffer in their logical order (stripe_ports undone)."""
    from edgekit.hls.ip import AXI_PORTS, BEAT_BYTES  # noqa: PLC0415

    raw = np.asarray(striped).view(np.uint8).reshape(AXI_PORTS, -1, BEAT_BYTES).transpose(1, 0, 2).reshape(-1)
    return raw[:count * np.dtype(dtype).itemsize].view(dtype).copy()
