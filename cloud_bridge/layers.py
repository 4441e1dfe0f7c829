"""A partial forward: run any layer range [start, stop) on given hidden states with its own KV cache.

Edge and cloud both run the packed model through this one class, so both use the same packed format
and the same compiled kernels (`edgekit.kernels.prepare_linear`); attention, norms and RoPE are the
numpy reference's own code (`ReferenceForward.attention`, `.feed_forward`, `.norm`), reused by
subclassing and overriding only `linear`.

    stack = LayerStack(model)
    cache = stack.new_cache()                        # KVCache [n_layers, max_len, kv_heads, hd]
    h = stack.embed(tokens)                          # [T, dim] residual stream
    h = stack.run_layers(h, 0, k, positions, cache)  # edge half: layers [0, k)
    h = stack.run_layers(h, k, L, positions, cache2) # cloud half, its own cache
    logits = stack.final_logits(h)                   # final norm + output head  [T, vocab]

`LayerStack(model, linears="triton", device="cuda")` runs the linears on the Triton kernels for the same
packed bytes instead (`triton_kernels.TritonLinear`, the cloud's GPU path); "cpu" (default) is the LUT
kernels, "numpy" their numpy reference (for tests).

A cache always has every layer's slot (each side fills only its own layers): simple indexing, at the
cost of unused memory on tiny models; the memory per side is what `KVCache` allocates.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import ConfigError, GenerationError
from edgekit.formats import QuantizedTensor
from edgekit.formats import get_format
from edgekit.kernels import PreparedLinear, prepare_linear, reference
from edgekit.kernels.api import as_quantized
from edgekit.model.lazy import materialize
from edgekit.model.model import Model
from edgekit.model.reference import KVCache, ReferenceForward, apply_rope, bitlinear_norm, check_tokens


LINEAR_BACKENDS = ("cpu", "triton", "numpy")   # numpy: edgekit.kernels.reference, the oracle of both


class LayerStack(ReferenceForward):
    """`ReferenceForward` whose linear layers run on edgekit's kernels, callable by layer range."""

    def __init__(self, model: Model, linears: str = "cpu", device: str = "cpu"):
        super().__init__(model)
        if linears not in LINEAR_BACKENDS:
            raise ConfigError(f"linears={linears!r} is not one of {list(LINEAR_BACKENDS)}",
                              fix="use 'cpu' (LUT kernels), 'triton' (GPU kernels; TRITON_INTERPRET=1 on "
                                  "CPU) or 'numpy' (the reference)")
        self.act_quant = "int8_absmax" if self.config.act_quant == "int8_absmax" else "none"
        self.linears, self.device = linears, device
        self._kernels: dict[str, tuple[PreparedLinear, np.float32]] = {}

    @property
    def n_layers(self) -> int:
        return self.config.n_layers

    def new_cache(self, max_len: int | None = None) -> KVCache:
        return KVCache(self.config, max_len)

    def kernel(self, name: str, act_quant: str | None = None) -> tuple[PreparedLinear, np.float32]:
        """(prepared kernel, post scale) for weight `name`: packed tensors carry their scales; float ternary
        weights (bitllama2.c) keep a scalar `<name>.scale` applied after the integer product."""
        if name not in self._kernels:
            weight = self.w[name]
            post = np.float32(1.0)
            if not isinstance(weight, QuantizedTensor):
                weight = np.ascontiguousarray(materialize(weight), dtype=np.float32)
                if self.config.ternary_weights and name + ".scale" in self.w:
                    post = np.float32(self.w[name + ".scale"])
            self._kernels[name] = (self._prepare(weight, act_quant or self.act_quant), post)
        return self._kernels[name]

    def _prepare(self, weight, act_quant: str):
        if self.linears == "triton":
            from edgekit.cloud_bridge.triton_kernels import TritonLinear

            return TritonLinear(weight, act_quant, self.device)
        if self.linears == "numpy":
            return _reference_linear(weight, act_quant)
        return prepare_linear(weight, act_quant)

    def linear(self, x: np.ndarray, name: str, bias: str | None = None) -> np.ndarray:
        """Same contract as ReferenceForward.linear (x [T, in] -> [T, out]), computed by the kernels."""
        if self.config.linear_input_norm:
            x = bitlinear_norm(x)
        kernel, post = self.kernel(name)
        y = kernel(np.ascontiguousarray(x, dtype=np.float32))
        if post != 1.0:
            y *= post
        if bias is not None:
            y += self.w[bias]
        return y

    def embed(self, tokens) -> np.ndarray:
        """Token ids -> embedding rows [T, dim] float32 (ids checked against the vocabulary)."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        check_tokens(tokens, self.config, _NO_LIMIT)
        return np.ascontiguousarray(self.rows("tok_embeddings", tokens), dtype=np.float32)

    def run_layers(self, h: np.ndarray, start: int, stop: int, positions: np.ndarray, cache: KVCache) -> np.ndarray:
        """Blocks [start, stop) on the residual stream h [T, dim] at `positions` (contiguous, ascending).

        Writes K/V for those layers and positions into `cache`; attention reads the cache up to the last
        position, so every earlier position of these layers must already be in the cache."""
        self._check_range(start, stop, positions, cache)
        c = self.config
        for layer in range(start, stop):
            p = f"layers.{layer}."
            a_in = h if c.linear_input_norm else self.norm(h, p + "attn_norm")
            h = h + self.attention(a_in, layer, positions, cache)
            f_in = h if c.linear_input_norm else self.norm(h, p + "ffn_norm")
            h = h + self.feed_forward(f_in, layer)
        return h.astype(np.float32, copy=False)

    def run_layers_batched(self, segments: list[tuple[np.ndarray, np.ndarray, KVCache]], start: int,
                           stop: int) -> list[np.ndarray]:
        """Blocks [start, stop) for several sequences at once: segments of (h [T_i, dim], positions, cache).

        The linears (q/k/v, o, FFN) run once on all rows stacked [sum T_i, dim]; attention runs per
        segment on its own cache. Every step is row-wise except attention, so each segment gets what
        `run_layers` alone gives (bit for bit on the integer kernels, whose activations are quantized
        per token)."""
        for h, positions, cache in segments:
            self._check_range(start, stop, positions, cache)
        c = self.config
        sizes = np.cumsum([0] + [len(h) for h, _, _ in segments])
        h = np.vstack([seg[0] for seg in segments])                              # [sum T_i, dim]
        all_positions = np.concatenate([seg[1] for seg in segments])
        for layer in range(start, stop):
            p = f"layers.{layer}."
            a_in = h if c.linear_input_norm else self.norm(h, p + "attn_norm")
            q, k, v = self.project_qkv(a_in, layer, all_positions)                # RoPE is per row
            out = np.vstack([self.attend(q[a:b], k[a:b], v[a:b], layer, positions, cache)
                             for (a, b), (_, positions, cache) in zip(zip(sizes[:-1], sizes[1:]), segments)])
            h = h + self.project_output(out, layer)
            f_in = h if c.linear_input_norm else self.norm(h, p + "ffn_norm")
            h = h + self.feed_forward(f_in, layer)
        h = h.astype(np.float32, copy=False)
        return [h[a:b] for a, b in zip(sizes[:-1], sizes[1:])]

    def fill_kv_copy(self, h: np.ndarray, start: int, stop: int, positions: np.ndarray, cache: KVCache) -> None:
        """State copy (CALM's propagation): K/V of layers [start, stop) from the exited state h [T, dim]
        instead of the layers' true inputs; costs two projections per layer instead of a whole block."""
        self._check_range(start, stop, positions, cache)
        c = self.config
        T = h.shape[0]
        for layer in range(start, stop):
            p = f"layers.{layer}."
            a_in = h if c.linear_input_norm else self.norm(h, p + "attn_norm")
            k = self.linear(a_in, p + "wk", p + "bk" if c.qkv_bias else None).reshape(T, c.n_kv_heads, c.head_dim)
            v = self.linear(a_in, p + "wv", p + "bv" if c.qkv_bias else None).reshape(T, c.n_kv_heads, c.head_dim)
            if c.qk_norm:
                k = self.norm(k, p + "k_norm")
            first = int(positions[0])
            cache.k[layer, first:first + T] = apply_rope(k, positions, self.inv_freq)
            cache.v[layer, first:first + T] = v

    def final_logits(self, h: np.ndarray) -> np.ndarray:
        """Final norm + output head on the kernels: h [T, dim] -> logits [T, vocab]."""
        kernel, post = self.kernel(self.model.output_name, act_quant="none")
        y = kernel(np.ascontiguousarray(self.norm(h, "norm"), dtype=np.float32))
        return y * post if post != 1.0 else y

    def _check_range(self, start: int, stop: int, positions: np.ndarray, cache: KVCache) -> None:
        if not 0 <= start <= stop <= self.n_layers:
            raise ConfigError(f"layer range [{start}, {stop}) is outside the model's {self.n_layers} layers",
                              fix=f"choose 0 <= start <= stop <= {self.n_layers}")
        if len(positions) and int(positions[-1]) >= cache.max_len:
            raise GenerationError(f"position {int(positions[-1])} exceeds the context of {cache.max_len} tokens",
                                  fix="start a new session or raise the context length")


def _reference_linear(weight, act_quant: str):
    """The numpy reference kernels (edgekit.kernels.reference) with PreparedLinear's call contract."""
    tensor = as_quantized(weight)

    def call(x: np.ndarray) -> np.ndarray:
        if get_format(tensor.format).kind == "float":
            w = reference.float_weights(tensor)
            if act_quant == "int8_absmax":
                q, a_scale = reference.quantize_absmax_int8(x)
                return reference.linear_float(w, q.astype(np.float32)) * a_scale[:, None]
            return reference.linear_float(w, x)
        q, a_scale = reference.quantize_absmax_int8(x)
        padded = np.zeros((x.shape[0], tensor.padded_cols), dtype=np.int8)
        padded[:, : tensor.cols] = q
        return reference.linear_int8(tensor, padded, a_scale)
    return call


class _Unlimited:
    """A stand-in cache for `check_tokens` that only checks ids (contexts are checked per layer range)."""

    length = 0
    max_len = 1 << 62


_NO_LIMIT = _Unlimited()


def full_forward(stack: LayerStack, tokens, cache: KVCache | None = None) -> np.ndarray:
    """All layers for `tokens` (the cloud-only baseline): logits [T, vocab]; advances `cache.length`."""
    cache = cache if cache is not None else stack.new_cache()
    h = stack.embed(tokens)
    positions = np.arange(cache.length, cache.length + len(h))
    h = stack.run_layers(h, 0, stack.n_layers, positions, cache)
    cache.length += len(h)
    return stack.final_logits(h)
