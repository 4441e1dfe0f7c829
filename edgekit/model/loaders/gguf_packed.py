"""ggml quantized blocks -> edgekit packed tensors, exactly: no value is requantized.

| GGUF type | block (ggml-common.h)                      | becomes                                              |
|-----------|--------------------------------------------|------------------------------------------------------|
| TQ2_0     | qs[64] (2-bit trit + 1), fp16 d             | ek_t2                                                |
| TQ1_0     | qs[48] + qh[4] (base 3), fp16 d             | ek_t1 (per tensor / per row), else ek_t2 blocks of 256 |
| Q4_0      | fp16 d, qs[16] (4-bit q + 8)               | ek_i4                                                |
| Q8_0      | fp16 d, qs[32] (int8)                       | ek_i8, or ek_t2 when every q is -1, 0 or +1           |

Each block's integers are recovered from gguf-py's reference dequantizer (value = dequantized / d, checked to
be an exact integer in range), so the ggml layouts are read by the library that writes them. The fp16 block
scales then collapse to the coarsest grouping that holds them exactly: one scale for the tensor (ternary),
one per row, or one per 128/64/32 weights; blocks whose d is 0 (all-zero blocks) fit any grouping. So an
edgekit export (`edgekit.export.gguf_writer`: a per-tensor ternary scale written into every block, an int4
group of 128 into four Q4_0 blocks, bitllama2.c's rows of 128 as Q8_0 trit blocks) loads back as the
packed format and grouping it was written from, with the fp16 rounding of the scale as the only change.
Q8_0 trits load as ek_t2 because that is what they are; base-3 ek_t1 rows with per-block scales would need
padding to 1280 columns (lcm of its 5-trit bytes and 256), so they load as ek_t2 (the same trits, 2 bits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import CorruptCheckpointError
from edgekit.formats import PER_CHANNEL, PER_TENSOR, QuantizedTensor, get_format, pack_values
from edgekit.formats.aligned import aligned

PACKED_TYPES = ("TQ2_0", "TQ1_0", "Q4_0", "Q8_0")
_D_OFFSET = {"Q4_0": 0, "Q8_0": 0, "TQ1_0": 52, "TQ2_0": 64}   # byte offset of each block's fp16 d
_GROUPINGS = (PER_TENSOR, PER_CHANNEL, 128, 64, 32, 256)       # coarsest first
_CHUNK_ROWS = 1024                                              # rows dequantized at once (bounds memory)


def packed_from_ggml(raw: np.ndarray, type_name: str, shape: tuple[int, int], path: Path | str,
                     name: str) -> QuantizedTensor:
    """uint8 blocks of one GGUF matrix [rows, cols] (rows = output features) -> a `QuantizedTensor`."""
    import gguf

    qtype = gguf.GGMLQuantizationType[type_name]
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    rows, cols = shape
    blocks = np.ascontiguousarray(raw).reshape(rows, cols // block, type_size)     # [rows, blocks, bytes]
    offset = _D_OFFSET[type_name]
    d = np.ascontiguousarray(blocks[:, :, offset:offset + 2]).view(np.float16)[:, :, 0]   # [rows, blocks]
    if not np.isfinite(d).all():
        raise CorruptCheckpointError(f"tensor {name!r} has non-finite block scales", path=path)
    fmt = _format_for(type_name, blocks)
    group, scales = collapse_scales(d, block, cols, get_format(fmt).group_sizes)
    if fmt == "ek_t1" and group > 0:
        fmt = "ek_t2"
    data, chunk_scales = [], []
    for start in range(0, rows, _CHUNK_ROWS):
        part = slice(start, start + _CHUNK_ROWS)
        values = _block_values(blocks[part], d[part], qtype, block, path, name)
        tensor = pack_values(fmt, values, scales if group == PER_TENSOR else scales[part], group)
        data.append(tensor.data)
        chunk_scales.append(tensor.scales)
    all_scales = scales if group == PER_TENSOR else np.concatenate(chunk_scales, axis=0)
    out = QuantizedTensor(fmt, (rows, cols), group, aligned(np.concatenate(data, axis=0)), all_scales)
    out.validate(name)
    return out


def _format_for(type_name: str, blocks: np.ndarray) -> str:
    if type_name == "TQ2_0":
        return "ek_t2"
    if type_name == "TQ1_0":
        return "ek_t1"
    if type_name == "Q4_0":
        return "ek_i4"
    q = blocks[:, :, 2:].view(np.int8)                                  # Q8_0: the 32 int8 after d
    return "ek_t2" if q.size and int(np.abs(q.astype(np.int16)).max()) <= 1 else "ek_i8"


def _block_values(blocks: np.ndarray, d: np.ndarray, qtype, block: int, path, name: str) -> np.ndarray:
    """Integer values [rows, cols] of the blocks: gguf-py's dequantized floats divided by each block's d."""
    from gguf import quants

    rows = blocks.shape[0]
    floats = np.asarray(quants.dequantize(blocks.reshape(rows, -1), qtype), np.float32).reshape(rows, -1, block)
    scale = d.astype(np.float32)[:, :, None]
    values = np.rint(floats / np.where(scale != 0, scale, 1.0)) * (scale != 0)
    if not np.array_equal(values * scale, floats):
        raise CorruptCheckpointError(f"tensor {name!r} does not dequantize to integers times its block scales",
                                     path=path)
    return values.reshape(rows, -1).astype(np.int16)


def collapse_scales(d: np.ndarray, block: int, cols: int, allowed: tuple[int, ...]) -> tuple[int, np.ndarray]:
    """(group size, scales) of the coarsest grouping in `allowed` under which the block scales d [rows, blocks]
    are constant (zeros fit anything): float32 [1, 1] per tensor, else float16 [rows, groups]."""
    rows, n_blocks = d.shape
    for group in _GROUPINGS:
        if group not in allowed or (group > 0 and (group % block or cols % group)):
            continue
        width = n_blocks if group == PER_CHANNEL else rows * n_blocks if group == PER_TENSOR else group // block
        grouped = d.astype(np.float32).reshape(1 if group == PER_TENSOR else rows, -1, width)
        nonzero = grouped != 0
        high = np.max(np.where(nonzero, grouped, -np.inf), axis=2)
        low = np.min(np.where(nonzero, grouped, np.inf), axis=2)
        used = nonzero.any(axis=2)
        if np.all((high == low) | ~used):
            value = np.where(used, high, 0.0)
            return group, (value.astype(np.float32) if group == PER_TENSOR else value.astype(np.float16))
    return block, d.astype(np.float16)
