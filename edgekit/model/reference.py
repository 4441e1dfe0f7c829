"""The numpy float32 reference forward: the oracle every faster path in edgekit is held to.

It favours clarity over speed: one function per step, shapes written beside each reshape. A prefill of
T tokens and T single-token decodes over the same `KVCache` give the same logits.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgekit.errors import GenerationError
from edgekit.formats import PER_TENSOR, QuantizedTensor
from edgekit.model.config import ModelConfig
from edgekit.model.lazy import materialize
from edgekit.model.model import Model


class KVCache:
    """Keys and values per layer: [n_layers, max_len, n_kv_heads, head_dim] float32, filled up to `length`."""

    def __init__(self, config: ModelConfig, max_len: int | None = None):
        self.max_len = max_len or config.max_seq_len
        shape = (config.n_layers, self.max_len, config.n_kv_heads, config.head_dim)
        self.k = np.zeros(shape, dtype=np.float32)
        self.v = np.zeros(shape, dtype=np.float32)
        self.length = 0

    def reset(self) -> None:
        self.length = 0


def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (weight None: no learned scale)."""
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y if weight is None else y * weight


def bitlinear_norm(x: np.ndarray) -> np.ndarray:
    """bitllama2.c's weightless BitLinear input norm: x / (n * rms(x)) with no epsilon (zeros stay zero)."""
    rms = np.sqrt(np.mean(x * x, axis=-1, keepdims=True))
    return x / np.where(rms > 0, rms * x.shape[-1], 1.0)


def round_half_away(x: np.ndarray) -> np.ndarray:
    """C `roundf` (ties away from zero), as the C kernels and bitllama2.c round."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_absmax_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token absmax int8 (BitNet A8): x [T, n] -> (q [T, n] integers in [-127, 127], scale [T, 1])."""
    scale = np.max(np.abs(x), axis=-1, keepdims=True) / 127.0
    safe = np.where(scale > 0, scale, 1.0)
    return round_half_away(x / safe).astype(np.float32), scale.astype(np.float32)


def rope_inv_freq(config: ModelConfig, freq_factors: np.ndarray | None = None) -> np.ndarray:
    """Inverse frequencies [head_dim/2], with linear or Llama 3.1 scaling (transformers' rope utils)."""
    r = config.rope
    inv = 1.0 / (r.theta ** (np.arange(0, config.head_dim, 2, dtype=np.float32) / config.head_dim))
    if r.scaling == "linear":
        inv = inv / r.factor
    elif r.scaling == "llama3":
        wavelen = 2 * np.pi / inv
        low_wavelen = r.original_max_position / r.low_freq_factor
        high_wavelen = r.original_max_position / r.high_freq_factor
        scaled = np.where(wavelen > low_wavelen, inv / r.factor, inv)
        smooth = (r.original_max_position / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor)
        smoothed = (1 - smooth) * scaled / r.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv = np.where(medium, smoothed, scaled)
    if freq_factors is not None:
        inv = inv / freq_factors
    return inv.astype(np.float32)


def apply_rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """Rotate-half RoPE: x [T, heads, hd]; pairs are (i, i + hd/2), as in HF Llama."""
    angles = positions[:, None].astype(np.float32) * inv_freq[None, :]      # [T, hd/2]
    cos = np.cos(angles)[:, None, :]
    sin = np.sin(angles)[:, None, :]
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


Observer = Callable[[str, np.ndarray], None]


class ReferenceForward:
    """Runs a `Model` in float32 numpy; `forward(tokens, cache)` returns logits [T, vocab].

    An optional `observer(event, array)` sees every linear layer's input as it enters the matmul
    (event = the weight's name, array [T, in]) and every block's output (event "layers.{i}.output",
    [T, dim]): what calibration (GPTQ Hessians) and per-layer error tables need.

    Weights are unpacked on first use and kept by this instance: after replacing tensors in
    `model.tensors`, call `forget(name)` (or build a new instance).
    """

    def __init__(self, model: Model, observer: Observer | None = None):
        self.model = model
        self.config = model.config
        self.w = model.tensors
        self.observer = observer
        self.inv_freq = rope_inv_freq(self.config, self.w.get("rope_freqs"))
        self._dense: dict[str, tuple[np.ndarray, np.float32 | np.ndarray]] = {}

    def weight(self, name: str) -> tuple[np.ndarray, np.float32 | np.ndarray]:
        """(W, post_scale) with y = (x @ W.T) * post_scale, unpacked on first use and kept for this instance.

        Ternary weights with one scale keep W as exact trits, so with int8 activations the matmul is an
        exact integer sum and the scales are applied once, as the integer kernels do. Other packed
        tensors are dequantized (and lazy ones read) when first used.
        """
        if name not in self._dense:
            self._dense[name] = self._unpack(name)
        return self._dense[name]

    def forget(self, name: str | None = None) -> None:
        """Drop the unpacked copy of one weight (or all), so the next use reads `model.tensors` again."""
        if name is None:
            self._dense.clear()
        else:
            self._dense.pop(name, None)

    def _unpack(self, name: str) -> tuple[np.ndarray, np.float32 | np.ndarray]:
        w = self.w[name]
        if isinstance(w, QuantizedTensor):
            if w.group_size == PER_TENSOR and w.format.startswith("ek_t"):
                return w.values()[:, : w.cols].astype(np.float32), w.scales[0, 0].astype(np.float32)
            return w.dequantize(), np.float32(1.0)
        w = materialize(w)
        if self.config.ternary_weights and name + ".scale" in self.w:
            return w, self.w[name + ".scale"]
        return w, np.float32(1.0)

    def rows(self, name: str, index: np.ndarray) -> np.ndarray:
        """Rows of a (possibly packed) matrix as float32: the embedding lookup."""
        w = self.w[name]
        return w.take_rows(index).dequantize() if isinstance(w, QuantizedTensor) else w[index]

    def linear(self, x: np.ndarray, name: str, bias: str | None = None) -> np.ndarray:
        """x [T, in] @ W[out, in]^T, with bitllama2.c input norm and BitNet A8 activations if configured."""
        c = self.config
        if c.linear_input_norm:
            x = bitlinear_norm(x)
        if self.observer is not None:
            self.observer(name, x)
        weight, post_scale = self.weight(name)
        if c.act_quant == "int8_absmax":
            q, a_scale = quantize_absmax_int8(x)
            y = (q @ weight.T) * a_scale                                    # integer sums, exact in f32
        else:
            y = x @ weight.T
        y = y * post_scale
        if bias is not None:
            y = y + self.w[bias]
        return y.astype(np.float32)

    def norm(self, x: np.ndarray, name: str) -> np.ndarray:
        return rms_norm(x, self.w[name], self.config.norm_eps)

    def attention(self, x: np.ndarray, layer: int, positions: np.ndarray, cache: KVCache) -> np.ndarray:
        q, k, v = self.project_qkv(x, layer, positions)
        return self.project_output(self.attend(q, k, v, layer, positions, cache), layer)

    def project_qkv(self, x: np.ndarray, layer: int, positions: np.ndarray):
        """x [T, dim] -> q [T, heads, hd], k and v [T, kv_heads, hd], RoPE applied to q and k."""
        c, p = self.config, f"layers.{layer}."
        T = x.shape[0]
        bias = c.qkv_bias
        q = self.linear(x, p + "wq", p + "bq" if bias else None).reshape(T, c.n_heads, c.head_dim)
        k = self.linear(x, p + "wk", p + "bk" if bias else None).reshape(T, c.n_kv_heads, c.head_dim)
        v = self.linear(x, p + "wv", p + "bv" if bias else None).reshape(T, c.n_kv_heads, c.head_dim)
        if c.qk_norm:
            q, k = self.norm(q, p + "q_norm"), self.norm(k, p + "k_norm")
        return apply_rope(q, positions, self.inv_freq), apply_rope(k, positions, self.inv_freq), v

    def attend(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, layer: int, positions: np.ndarray,
               cache: KVCache) -> np.ndarray:
        """Store k, v at `positions` in the cache and attend causally: -> [T, heads*hd]."""
        c = self.config
        T = q.shape[0]
        start = int(positions[0])
        cache.k[layer, start:start + T] = k
        cache.v[layer, start:start + T] = v
        keys = cache.k[layer, :start + T]                                     # [S, kv_heads, hd]
        values = cache.v[layer, :start + T]
        group = c.n_heads // c.n_kv_heads
        keys = np.repeat(keys, group, axis=1).transpose(1, 2, 0)             # [heads, hd, S]
        values = np.repeat(values, group, axis=1).transpose(1, 0, 2)         # [heads, S, hd]
        scores = (q.transpose(1, 0, 2) @ keys) / np.sqrt(c.head_dim)        # [heads, T, S]
        causal = np.arange(start + T)[None, :] > positions[:, None]          # [T, S]
        scores = np.where(causal[None], -np.inf, scores)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = scores / scores.sum(axis=-1, keepdims=True)
        return (probs @ values).transpose(1, 0, 2).reshape(T, c.q_dim)     # [T, heads*hd]

    def project_output(self, out: np.ndarray, layer: int) -> np.ndarray:
        c, p = self.config, f"layers.{layer}."
        if c.sub_norms:
            out = self.norm(out, p + "attn_sub_norm")
        return self.linear(out, p + "wo", p + "bo" if c.o_bias else None)

    def feed_forward(self, x: np.ndarray, layer: int) -> np.ndarray:
        c, p = self.config, f"layers.{layer}."
        gate, up = self.linear(x, p + "w1"), self.linear(x, p + "w3")
        if c.activation == "silu":
            hidden = gate / (1.0 + np.exp(-gate)) * up
        else:  # relu2: squared ReLU
            hidden = np.square(np.maximum(gate, 0.0)) * up
        if c.sub_norms:
            hidden = self.norm(hidden, p + "ffn_sub_norm")
        return self.linear(hidden, p + "w2")

    def hidden_states(self, tokens: np.ndarray, cache: KVCache) -> np.ndarray:
        """Final-normed hidden states [T, dim] for `tokens` appended after the cache's contents."""
        c = self.config
        positions = np.arange(cache.length, cache.length + len(tokens))
        h = self.rows("tok_embeddings", tokens).astype(np.float32)          # [T, dim]
        for layer in range(c.n_layers):
            p = f"layers.{layer}."
            a_in = h if c.linear_input_norm else self.norm(h, p + "attn_norm")
            h = h + self.attention(a_in, layer, positions, cache)
            f_in = h if c.linear_input_norm else self.norm(h, p + "ffn_norm")
            h = h + self.feed_forward(f_in, layer)
            if self.observer is not None:
                self.observer(f"{p}output", h)
        cache.length += len(tokens)
        return self.norm(h, "norm")

    def forward(self, tokens, cache: KVCache) -> np.ndarray:
        """Logits [T, vocab] for `tokens` (ints) appended at positions cache.length ... ."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        check_tokens(tokens, self.config, cache)
        return self.logits(self.hidden_states(tokens, cache))

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        weight, post_scale = self.weight(self.model.output_name)
        return ((hidden @ weight.T) * post_scale).astype(np.float32)


def check_tokens(tokens: np.ndarray, config: ModelConfig, cache: KVCache) -> None:
    if tokens.size == 0:
        raise GenerationError("no tokens to run: the prompt is empty")
    if tokens.min() < 0 or tokens.max() >= config.vocab_size:
        raise GenerationError(f"token id {int(tokens.max() if tokens.max() >= config.vocab_size else tokens.min())} "
                              f"is outside the vocabulary [0, {config.vocab_size})")
    if cache.length + tokens.size > cache.max_len:
        raise GenerationError(f"{cache.length} cached + {tokens.size} new tokens exceed the context of "
                              f"{cache.max_len} tokens", fix="shorten the prompt or lower --max-tokens")
