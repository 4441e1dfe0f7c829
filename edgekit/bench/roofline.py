"""Bytes read per decoded token, and the roofline: memory read bandwidth / bytes per token.

Decoding one token reads every weight matrix once (the output layer included; for a tied model the
embedding table *is* the output layer), one embedding row, and the KV cache of the positions so far.
With DRAM-sized models that traffic, not arithmetic, bounds tokens/s:

    roofline tokens/s = bandwidth [bytes/s] / bytes per token

The sizes come from the file each back end reads (GGUF tensor sizes for llama.cpp, packed `.edgekit`
entries for edgekit's own back ends, element counts x dtype size for torch and the float reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.model.config import ModelConfig

GGUF_EMBEDDING = "token_embd.weight"


@dataclass(frozen=True)
class TokenBytes:
    """Bytes one decode step reads: weights (matrices + norms) and KV cache at the mean decode position."""

    weights: int
    kv_cache: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache


def kv_bytes_per_token(config: ModelConfig, element_bytes: int, generate_length: int) -> int:
    """K and V of every layer for the mean number of cached positions while decoding `generate_length`
    tokens from an empty cache: n_layers * 2 * kv_dim * element_bytes * (generate_length + 1) / 2."""
    mean_positions = (generate_length + 1) / 2
    return int(config.n_layers * 2 * config.kv_dim * element_bytes * mean_positions)


def weight_bytes_per_token(tensor_bytes: dict[str, int], embedding: str, tied: bool, dim: int,
                           row_bytes: float) -> int:
    """Sum of all tensors, except that an untied embedding table contributes only the one row looked up.

    tensor_bytes: name -> bytes as stored; row_bytes: bytes of one embedding row."""
    total = sum(tensor_bytes.values())
    if not tied and embedding in tensor_bytes:
        total -= tensor_bytes[embedding] - int(row_bytes)
    return int(total)


def edgekit_tensor_bytes(path: Path) -> dict[str, int]:
    """Canonical tensor name -> stored bytes (packed data + scales + zeros) from a `.edgekit` file's
    header, without reading the tensors."""
    from safetensors import safe_open

    sizes: dict[str, int] = {}
    with safe_open(str(path), framework="numpy") as handle:
        for key in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
            if key == "__tokenizer__":
                continue
            view = handle.get_slice(key)
            count = int(np.prod(view.get_shape())) if view.get_shape() else 1
            item = np.dtype({"F32": "f4", "F16": "f2", "U8": "u1", "I8": "i1", "BF16": "u2"}[view.get_dtype()])
            name = key.split("::", 1)[0]
            sizes[name] = sizes.get(name, 0) + count * item.itemsize
    return sizes


def edgekit_element_counts(path: Path) -> dict[str, int]:
    """Canonical tensor name -> number of weights (packed tensors by their logical shape)."""
    from edgekit.model.loaders.edgekit_file import read_metadata

    meta = read_metadata(path)
    counts = {name: int(np.prod(info["shape"])) for name, info in meta["packed"].items()}
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        for key in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
            if "::" not in key and key != "__tokenizer__":
                counts[key] = int(np.prod(handle.get_slice(key).get_shape() or [1]))
    return counts


def gguf_tensor_bytes(path: Path) -> dict[str, int]:
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {t.name: int(t.n_bytes) for t in reader.tensors}


def token_bytes(sizes: dict[str, int], embedding: str, config: ModelConfig, kv_element_bytes: int,
                generate_length: int) -> TokenBytes:
    """Bytes per decoded token from per-tensor sizes (any of the three sources above)."""
    row = sizes.get(embedding, 0) / config.vocab_size
    weights = weight_bytes_per_token(sizes, embedding, config.tie_embeddings, config.dim, row)
    return TokenBytes(weights, kv_bytes_per_token(config, kv_element_bytes, generate_length))


def roofline_tokens_per_s(bandwidth_gb_per_s: float, bytes_per_token: int) -> float:
    return bandwidth_gb_per_s * 1e9 / bytes_per_token if bytes_per_token > 0 else 0.0
