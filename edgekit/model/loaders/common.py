"""Helpers every loader shares: reading files defensively and fixing RoPE layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgekit.errors import CorruptCheckpointError, ModelNotFoundError


def require_file(path: Path, what: str, fix: str | None = None) -> Path:
    if not path.is_file():
        raise ModelNotFoundError(f"{what} not found", path=path, fix=fix)
    return path


def read_json(path: Path) -> dict:
    """Read a JSON object; bad JSON is a `CorruptCheckpointError` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpointError(f"not valid JSON ({exc})", path=path) from None
    if not isinstance(data, dict):
        raise CorruptCheckpointError("expected a JSON object at the top level", path=path)
    return data


def interleaved_to_half(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k rows from adjacent-pair RoPE (llama2.c, Meta, GGUF) to HF rotate-half order.

    Per head the rows (x0, y0, x1, y1, ...) become (x0, x1, ..., y0, y1, ...):
    [n_heads * head_dim, ...] -> [n_heads, head_dim/2, 2, ...] -> swap the last two head axes.
    This is transformers' `convert_llama_weights_to_hf.permute`, the inverse of llama.cpp's
    `LlamaModel.permute` in convert_hf_to_gguf.py.
    """
    rows = weight.shape[0]
    return (weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def half_to_interleaved(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of `interleaved_to_half` (llama.cpp's permute for GGUF export)."""
    rows = weight.shape[0]
    return (weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))
