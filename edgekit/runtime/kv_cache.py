"""KV caches of the native engine: float32, float16, or int8 with one scale per token and head.

Every cache stores head-major [n_layers, n_kv_heads, max_len, head_dim] so one head's keys for positions
0..S-1 are one contiguous [S, head_dim] block (what a batched matmul over heads wants), unlike the
reference's position-major [n_layers, max_len, n_kv_heads, head_dim].

`store(layer, start, k, v)` writes k, v [T, n_kv_heads, head_dim] at positions start..start+T-1;
`keys(layer, S)` / `values(layer, S)` return float32 [n_kv_heads, S, head_dim] for attention. The f32
cache hands out views; f16 and int8 convert into one preallocated float32 scratch buffer per kind, so a
returned block is valid until the next call for the same kind. `stored(layer, S)` gives the stored (keys,
values) blocks themselves (views, float32 or float16) for a reader that widens them itself (the C decode
attention, edgekit.kernels.ops.DecodeAttention), or None when the storage needs scales (int8).

The default (make_kv_cache's `default`, which the native engine sets per model) is f16 for models of real size
(what llama.cpp keeps too): decode attention reads the cache once per layer and token, from DRAM once the
context outgrows the caches, so half the bytes is ~half the time (docs/bench/notes.md, AMD EPYC AVX2 section).
f32 stays exact against the reference forward: the native engine keeps it for small models, whose cache is
cache-resident anyway and whose near-tied logits f16 does flip (bitllama2c 1M: greedy from BOS leaves the
reference's story at token 26 with f16, measured).

Storage per token and layer: f32 8 * kv_dim bytes, f16 4 * kv_dim, int8 2 * kv_dim + 16 * n_kv_heads.
Error per stored element: f16 rounds to 11 significant bits (relative 2^-11 = 4.9e-4); int8 rounds to
scale / 2 with scale = max|row| / 127 per (token, head), i.e. at most 1/254 of that head's largest value.

Arrays come from np.zeros, which maps untouched pages lazily: a long context costs memory only as it fills.
"""

from __future__ import annotations

import os

import numpy as np

from edgekit.errors import ConfigError
from edgekit.model.config import ModelConfig
from edgekit.model.reference import round_half_away

KV_CACHE_TYPES = ("f32", "f16", "int8")
KV_CACHE_ENV = "EDGEKIT_KV_CACHE"
DEFAULT_KV_CACHE = "f16"


def resolve_kv_type(kv_type: str | None, default: str = DEFAULT_KV_CACHE) -> str:
    """The cache type asked for: the argument, else $EDGEKIT_KV_CACHE, else `default` (f16)."""
    chosen = kv_type or os.environ.get(KV_CACHE_ENV, "").strip().lower() or default
    if chosen not in KV_CACHE_TYPES:
        source = "kv_cache" if kv_type else KV_CACHE_ENV
        raise ConfigError(f"{source}={chosen!r} is not a KV cache type; valid: {list(KV_CACHE_TYPES)}",
                          fix=f"use one of {', '.join(KV_CACHE_TYPES)}")
    return chosen


class KVCacheF32:
    """Exact float32 keys and values (what the reference forward keeps)."""

    kind = "f32"
    dtype = np.float32

    def __init__(self, config: ModelConfig, max_len: int):
        self.max_len = max_len
        self.length = 0
        self.shape = (config.n_layers, config.n_kv_heads, max_len, config.head_dim)
        self.k = np.zeros(self.shape, dtype=self.dtype)
        self.v = np.zeros(self.shape, dtype=self.dtype)

    def reset(self) -> None:
        self.length = 0

    @property
    def nbytes(self) -> int:
        return int(self.k.nbytes + self.v.nbytes)

    def store(self, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        # k, v [T, kv_heads, hd] -> [kv_heads, T, hd] slots of this layer
        end = start + k.shape[0]
        self.k[layer, :, start:end] = k.transpose(1, 0, 2)
        self.v[layer, :, start:end] = v.transpose(1, 0, 2)

    def keys(self, layer: int, length: int) -> np.ndarray:
        return self.k[layer, :, :length]

    def values(self, layer: int, length: int) -> np.ndarray:
        return self.v[layer, :, :length]

    def stored(self, layer: int, length: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The stored keys and values [n_kv_heads, length, head_dim] of `layer` as views (this class's dtype)."""
        return self.k[layer, :, :length], self.v[layer, :, :length]


class KVCacheF16(KVCacheF32):
    """float16 storage (half the bytes); attention reads it converted to float32."""

    kind = "f16"
    dtype = np.float16

    def __init__(self, config: ModelConfig, max_len: int):
        super().__init__(config, max_len)
        self._scratch = {"k": np.zeros(self.shape[1:], np.float32), "v": np.zeros(self.shape[1:], np.float32)}

    def _widen(self, which: str, stored: np.ndarray, length: int) -> np.ndarray:
        out = self._scratch[which][:, :length]
        np.copyto(out, stored[:, :length])
        return out

    def keys(self, layer: int, length: int) -> np.ndarray:
        return self._widen("k", self.k[layer], length)

    def values(self, layer: int, length: int) -> np.ndarray:
        return self._widen("v", self.v[layer], length)


def quantize_rows_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric absmax int8 over the last axis: x [..., hd] -> (int8 [..., hd], float32 scale [..., 1]).

    Rounds half away from zero like the activation quantizer (edgekit.model.reference)."""
    scale = (np.max(np.abs(x), axis=-1, keepdims=True) / 127.0).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    return round_half_away(x / safe).astype(np.int8), scale


class KVCacheInt8(KVCacheF32):
    """int8 keys and values with one float32 scale per (layer, head, token): about a quarter of f32."""

    kind = "int8"
    dtype = np.int8

    def __init__(self, config: ModelConfig, max_len: int):
        super().__init__(config, max_len)
        scale_shape = self.shape[:3] + (1,)
        self.k_scale = np.zeros(scale_shape, np.float32)
        self.v_scale = np.zeros(scale_shape, np.float32)
        self._scratch = {"k": np.zeros(self.shape[1:], np.float32), "v": np.zeros(self.shape[1:], np.float32)}

    @property
    def nbytes(self) -> int:
        return int(super().nbytes + self.k_scale.nbytes + self.v_scale.nbytes)

    def store(self, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        end = start + k.shape[0]
        for codes, scales, x in ((self.k, self.k_scale, k), (self.v, self.v_scale, v)):
            q, s = quantize_rows_int8(x.transpose(1, 0, 2))                   # [kv_heads, T, hd], [kv_heads, T, 1]
            codes[layer, :, start:end] = q
            scales[layer, :, start:end] = s

    def _dequantize(self, which: str, codes: np.ndarray, scales: np.ndarray, length: int) -> np.ndarray:
        out = self._scratch[which][:, :length]
        np.multiply(codes[:, :length], scales[:, :length], out=out)          # int8 * f32 -> f32 in one pass
        return out

    def keys(self, layer: int, length: int) -> np.ndarray:
        return self._dequantize("k", self.k[layer], self.k_scale[layer], length)

    def values(self, layer: int, length: int) -> np.ndarray:
        return self._dequantize("v", self.v[layer], self.v_scale[layer], length)

    def stored(self, layer: int, length: int) -> None:
        """None: int8 codes need their scales, so readers take keys()/values()."""
        return None


KV_CACHES = {"f32": KVCacheF32, "f16": KVCacheF16, "int8": KVCacheInt8}


def make_kv_cache(config: ModelConfig, max_len: int, kv_type: str | None = None,
                  default: str = DEFAULT_KV_CACHE) -> KVCacheF32:
    """The KV cache of `kv_type` (see resolve_kv_type) for `max_len` positions."""
    return KV_CACHES[resolve_kv_type(kv_type, default)](config, max_len)
