"""The on-chip LM head's weights: group-quantized codes packed in hls/include/ek_lmhead.h's DDR layout.

Quantization (offline, per row r of the output matrix W [vocab, dim], rows padded to whole groups of
`head_group` with zeros): each group g gets the float scale s_g = max|W_g| / qmax (qmax = 2^(bits-1) - 1:
127, 7 or 1); the row keeps one float32 scale S_r = max_g s_g / 255 and each group a uint8 sub-scale
u_g = round(s_g / S_r) (>= 1 for a non-zero group, as Q4_K's double quantization), and the codes are
c = clip(round(W / (u_g S_r)), -qmax, qmax). The device then computes, exactly in integers,
acc_r = sum_g u_g * sum_{i in g} c_i a_i, and logit_r = float(acc_r) * a_scale * S_r.

A screened head (`head_screen` C > 0) also holds a 2-bit copy (SCREEN_BITS, quantized from the float weight
the same way) after the full head's words, and its row scales after the full head's: per token the device
scores every row with the 2-bit copy, keeps the C best and rescores only those with the full codes.

DDR layout: word[row_block][column][lane] (as the TLMM engine's), row_block = row / head_lanes, each row
`Design.head_row_words` words: ceil(groups / 8) words of sub-scales (byte g at bits 8(g % 8)..), then
the codes, 64 / bits a word, LSB-first, two's complement. Padded rows are all zero (their scale too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import ConfigError
from edgekit.hls.design import Design
from edgekit.hls.packing import ceil_div

SUB_SCALE_MAX = 255
SCREEN_BITS = 2                    # the screening copy of a screened head
ACC_BITS = 48                      # ap_int<48> row accumulators (a DSP48E2's accumulator width)


def head_qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


@dataclass
class HeadData:
    codes: np.ndarray        # int8 [head_rows, groups * head_group]
    sub_scales: np.ndarray   # uint8 [head_rows, groups]
    row_scales: np.ndarray   # float32 [head_rows]  (S_r times the model's output post-scale)
    words: np.ndarray        # uint64 [head_words], the device buffer


def quantize_head(weight: np.ndarray, design: Design, post_scale=1.0, bits: int | None = None) -> HeadData:
    """weight [vocab, dim] float -> the packed head (see the module docstring); `bits` defaults to the
    design's head_bits (SCREEN_BITS for the screening copy of a screened head)."""
    vocab, dim = weight.shape
    if (vocab, dim) != (design.vocab, design.dim):
        raise ConfigError(f"LM head weight is {weight.shape}, the design expects ({design.vocab}, {design.dim})")
    bits = bits or design.hls.head_bits
    gs, groups, qmax = design.hls.head_group, design.head_groups, head_qmax(bits)
    check_accumulator(design, bits)
    w = np.zeros((design.head_rows, groups * gs), dtype=np.float64)
    w[:vocab, :dim] = weight
    blocks = w.reshape(design.head_rows, groups, gs)                              # [rows, groups, gs]
    group_scale = np.abs(blocks).max(axis=-1) / qmax                             # [rows, groups]
    row_scale = group_scale.max(axis=-1) / SUB_SCALE_MAX                         # [rows]
    safe_row = np.where(row_scale > 0, row_scale, 1.0)
    sub = np.clip(np.rint(group_scale / safe_row[:, None]), 1, SUB_SCALE_MAX)
    sub = np.where(group_scale > 0, sub, 0).astype(np.uint8)
    step = np.where(sub > 0, sub, 1)[:, :, None] * safe_row[:, None, None]
    codes = np.clip(np.rint(blocks / step), -qmax, qmax).astype(np.int8).reshape(design.head_rows, -1)
    post = np.ones(design.head_rows, dtype=np.float32)                           # one per row, or one for all
    post[:vocab] = np.broadcast_to(np.asarray(post_scale, dtype=np.float32).reshape(-1), (vocab,))
    row_scales = (row_scale.astype(np.float32) * post).astype(np.float32)
    return HeadData(codes=codes, sub_scales=sub, row_scales=row_scales, words=pack_head(codes, sub, design, bits))


def check_accumulator(design: Design, bits: int | None = None) -> None:
    bound = 127 * head_qmax(bits or design.hls.head_bits) * design.hls.head_group * SUB_SCALE_MAX * design.head_groups
    if bound >= 1 << (ACC_BITS - 1):
        raise ConfigError(f"the LM head's row sums can reach {bound}, beyond its {ACC_BITS}-bit accumulator",
                          fix="lower --head-bits or --head-group")


def pack_head(codes: np.ndarray, sub: np.ndarray, design: Design, bits: int | None = None) -> np.ndarray:
    """codes [rows, groups * gs] int8, sub [rows, groups] uint8 -> uint64 words [row_block][column][lane]."""
    rows, lanes, bits = design.head_rows, design.hls.head_lanes, bits or design.hls.head_bits
    per_word = 64 // bits
    sub_words = ceil_div(design.head_groups, 8)
    padded_sub = np.zeros((rows, sub_words * 8), dtype=np.uint64)
    padded_sub[:, :sub.shape[1]] = sub
    byte_shift = np.arange(8, dtype=np.uint64) * np.uint64(8)
    sub_part = np.bitwise_or.reduce(padded_sub.reshape(rows, sub_words, 8) << byte_shift, axis=-1)
    mask = np.uint64((1 << bits) - 1)
    fields = codes.astype(np.int64).astype(np.uint64) & mask                      # two's complement fields
    shifts = np.arange(per_word, dtype=np.uint64) * np.uint64(bits)
    code_part = np.bitwise_or.reduce(fields.reshape(rows, -1, per_word) << shifts, axis=-1)
    row_words = np.concatenate([sub_part, code_part], axis=1)                     # [rows, row_words]
    blocks = rows // lanes
    return row_words.reshape(blocks, lanes, -1).transpose(0, 2, 1).reshape(-1).copy()


def unpack_head(words: np.ndarray, design: Design, bits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of `pack_head` (for tests): (codes int8 [rows, groups * gs], sub uint8 [rows, groups])."""
    rows, lanes, bits = design.head_rows, design.hls.head_lanes, bits or design.hls.head_bits
    row_words = words.reshape(rows // lanes, -1, lanes).transpose(0, 2, 1).reshape(rows, -1)
    sub_words = ceil_div(design.head_groups, 8)
    byte_shift = np.arange(8, dtype=np.uint64) * np.uint64(8)
    sub = ((row_words[:, :sub_words, None] >> byte_shift) & np.uint64(0xFF)).reshape(rows, -1)
    shifts = np.arange(64 // bits, dtype=np.uint64) * np.uint64(bits)
    fields = ((row_words[:, sub_words:, None] >> shifts) & np.uint64((1 << bits) - 1)).astype(np.int64)
    codes = np.where(fields >= 1 << (bits - 1), fields - (1 << bits), fields).reshape(rows, -1)
    return codes.astype(np.int8), sub[:, :design.head_groups].astype(np.uint8)
