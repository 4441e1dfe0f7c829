"""Ternary weight layouts of the checkpoints edgekit loads, and BitNet's absmean ternarization.

These are the source layouts (how trits arrive in files); edgekit's own packed formats for its kernels
live in `edgekit.formats`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import CorruptCheckpointError

# bitllama2.c 2-bit code -> trit: 00 -> 0, 01 -> +1, 11 -> -1; 10 is not a valid code (marked 2, rejected).
_BITLLAMA_CODE_TO_TRIT = np.array([0, 1, 2, -1], dtype=np.int8)


def unpack_bitllama2c(packed: np.ndarray, order: str, path: Path | str, name: str) -> np.ndarray:
    """uint8 [n] -> float32 trits [4n]; `order` says whether weight 0 sits in the low or high bits."""
    shifts = np.array([0, 2, 4, 6] if order == "lsbfirst" else [6, 4, 2, 0], dtype=np.uint8)
    codes = (packed[:, None] >> shifts[None, :]) & 3          # [n, 4], weight j of byte i at [i, j]
    trits = _BITLLAMA_CODE_TO_TRIT[codes].reshape(-1)
    if (trits == 2).any():
        raise CorruptCheckpointError(f"tensor {name!r} contains the invalid 2-bit code 0b10", path=path)
    return trits.astype(np.float32)


def unpack_hf_bitnet(packed: np.ndarray, path: Path | str, name: str) -> np.ndarray:
    """transformers' BitNet packing: uint8 [R, C] -> float32 trits [4R, C].

    Bits 2i..2i+1 of packed[r, c] hold weight (i*R + r, c) as trit + 1 (0, 1, 2), as in
    `transformers.integrations.bitnet.pack_weights`; the value 3 is invalid.
    """
    codes = np.concatenate([(packed >> (2 * i)) & 3 for i in range(4)], axis=0)   # [4R, C]
    if (codes == 3).any():
        raise CorruptCheckpointError(f"tensor {name!r} contains the invalid 2-bit code 0b11", path=path)
    return codes.astype(np.float32) - 1.0


def absmean_ternarize(weight: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """BitNet b1.58 absmean: W ~= scale * clip(round(W / scale), -1, 1) with scale = mean|W| (>= 1e-5).

    Rounds half to even and divides by the reciprocal, as transformers' `WeightQuant` does.
    """
    inv = np.float32(1.0) / np.maximum(np.abs(weight).mean(dtype=np.float32), np.float32(1e-5))
    trits = np.clip(np.round(weight * inv), -1, 1).astype(np.float32)
    return trits, np.float32(1.0) / inv
