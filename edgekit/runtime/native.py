"""The native engine: edgekit.model.reference.ReferenceForward's transformer on packed weights and C kernels.

Every linear layer (output included) runs through edgekit.kernels.prepare_linear (native_weights.py);
attention, norms and RoPE are vectorized numpy over all heads and positions at once, with the same float
expressions as the reference where that keeps results identical (RMSNorm, BitLinear norm, RoPE's
rotate-half, SiLU / squared ReLU). The KV cache is f16 (the default; f32 for small models, see default_kv_cache),
f32 or int8 (kv_cache.py); C decode attention reads f32 and f16 rows as stored (f16 widened in registers, F16C).
Where the kernel library has them (edgekit.kernels.ops, src/ops.c), RMSNorm, RoPE and the squared-ReLU gate run
in C with the same float32 operations (bit-identical to the numpy steps) and decode attention (T = 1) runs in C
(float32 sums in another order: equal to float32 rounding); `c_ops=False` keeps every step in numpy.

How close it is to the reference (the oracle), by model kind:
- ternary weights with int8 activations (bitllama2.c, BitNet A8, the built-in model): every linear is
  bit-exact on the same input; attention's float sums are ordered differently (float32 here, float64 in
  the reference, whose `/ np.sqrt(head_dim)` promotes to float64), so now and then an activation within
  ~1e-7 of a rounding midpoint takes the neighbouring int8 code. Greedy tokens agree (tests: 64 tokens on
  every shared model); logits mostly agree to 1e-5, after such a flip to ~1% of their range.
- float weights: float32 C dot products instead of BLAS, logits within ~1e-5.
- integer weights under float activations (ek_i4 ... packed by edgekit.quantize): the reference dequantizes
  and stays float; the engine feeds the int8 kernels x and its int8 rounding residual (act_passes=2), so
  top-1 agreement over the TinyStories sample is 99.998% for stories260K int4 g32 (98.4% with one pass).

    backend = NativeBackend(model, context_length=512, kv_cache="f16", threads=2)
    logits = backend.prefill([1, 403, 407])      # [3, vocab]
    logits = backend.decode(int(logits[-1].argmax()))
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from edgekit.errors import ConfigError, GenerationError
from edgekit.formats import QuantizedTensor
from edgekit.kernels import get_num_threads, ops, set_num_threads
from edgekit.model.lazy import materialize
from edgekit.model.model import Model
from edgekit.model.reference import check_tokens, rope_inv_freq
from edgekit.runtime.blas_threads import set_blas_threads
from edgekit.runtime.kv_cache import make_kv_cache
from edgekit.runtime.native_ops import (apply_rope, bitlinear_norm, relu2_gate, rms_norm, silu_gate,
                                        softmax_inplace)
from edgekit.runtime.native_weights import LayerWeights, prepare_layer, prepare_output

logger = logging.getLogger(__name__)


SMALL_MATRIX_WEIGHTS = 1 << 20


def choose_threads(model: Model, threads: int | None) -> int:
    """Kernel threads: `threads` if given, else $EDGEKIT_NUM_THREADS, else 1 for small models, else every core.

    Why 1 for small models: the kernels share each call's rows among the threads, and waking a worker costs
    more than a small matrix's whole product (measured here, 2 busy cores: a 64 x 64 f32 call takes 20 us on
    one thread and 0.6-0.9 ms on two; stories260K decodes at 540 tok/s on 1 thread, 110 on 2). A model whose
    largest matrix has fewer than SMALL_MATRIX_WEIGHTS weights gains nothing from a second thread."""
    if threads is not None:
        return threads
    if os.environ.get("EDGEKIT_NUM_THREADS", "").strip():
        return get_num_threads()                                              # the kernels validated and applied it
    if is_small_model(model):
        logger.info("small model (largest matrix < %d weights): kernels run on 1 thread", SMALL_MATRIX_WEIGHTS)
        return 1
    return os.cpu_count() or 1


def is_small_model(model: Model) -> bool:
    """True when the model's largest matrix has fewer than SMALL_MATRIX_WEIGHTS weights."""
    return max(int(np.prod(t.shape)) for t in model.tensors.values() if len(t.shape) == 2) < SMALL_MATRIX_WEIGHTS


def default_kv_cache(model: Model) -> str:
    """The KV cache when neither kv_cache nor $EDGEKIT_KV_CACHE names one: f16, but f32 for small models.

    f16 halves the bytes decode attention reads per layer and token (docs/bench/notes.md, AMD EPYC AVX2
    section: BitNet 2B4T shapes); small models' caches stay in the CPU caches, so f16 gains them nothing, and
    it flips near-tied greedy tokens (bitllama2c 1M from BOS: token 26 differs from the reference, measured),
    so they keep the exact f32."""
    return "f32" if is_small_model(model) else "f16"


ACT_PASSES_ENV = "EDGEKIT_ACT_PASSES"


def resolve_act_passes(passes: int | None) -> int:
    """1 or 2 int8 passes for float activations on integer weights: the argument, $EDGEKIT_ACT_PASSES, else 2."""
    source = "act_passes"
    if passes is None:
        source, passes = ACT_PASSES_ENV, os.environ.get(ACT_PASSES_ENV, "").strip() or "2"
    if str(passes) not in ("1", "2"):
        raise ConfigError(f"{source}={passes!r} must be 1 or 2", fix="use 2 (int8 + residual) or 1 (one int8 pass)")
    return int(passes)


class NativeBackend:
    """The native engine behind the `Backend` interface (see edgekit.runtime.backend).

    kv_cache: "f16", "f32" or "int8" (or $EDGEKIT_KV_CACHE; default: default_kv_cache); threads: kernel threads for the whole
    process (edgekit.kernels.set_num_threads; None: see choose_threads); fuse: one kernel call for q/k/v and
    for gate/up where that is exact (native_weights.py); blas_threads: OpenBLAS threads for the attention
    matmuls, process-wide (blas_threads.py says why 1; None leaves them); act_passes: for integer weights in
    a model with float activations (act_quant "none"), 2 (default, or $EDGEKIT_ACT_PASSES) runs the kernels
    on x and its int8 residual, ~15-bit activations that track the reference, 1 is a single int8 pass
    (native_weights.split_rows). int8-activation models (BitNet A8) always take one pass, exactly."""

    name = "native"

    def __init__(self, model: Model, context_length: int | None = None, *, kv_cache: str | None = None,
                 threads: int | None = None, fuse: bool = True, blas_threads: int | None = 1,
                 act_passes: int | None = None, c_ops: bool = True):
        c = model.config
        self.model, self.config = model, c
        set_num_threads(choose_threads(model, threads))
        if blas_threads is not None:
            set_blas_threads(blas_threads)
        max_len = c.max_seq_len if context_length is None else context_length
        if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1:
            raise GenerationError(f"context_length must be a positive integer, got {context_length!r}",
                                  fix="pass e.g. --context 512")
        self.cache = make_kv_cache(c, max_len, kv_cache, default_kv_cache(model))
        self.act_passes = resolve_act_passes(act_passes)
        self.layers: list[LayerWeights] = [prepare_layer(model, i, fuse, self.act_passes) for i in range(c.n_layers)]
        self.output = prepare_output(model, self.act_passes)
        self.final_norm = np.asarray(materialize(model.tensors["norm"]), np.float32)
        self.embeddings = self._embedding_table()
        self._rope_tables(rope_inv_freq(c, model.tensors.get("rope_freqs")), max_len)
        self.group = c.n_heads // c.n_kv_heads
        self.score_scale = np.float32(1.0 / np.sqrt(c.head_dim))
        self.split_qkv = (c.q_dim, c.q_dim + c.kv_dim)
        self.c_ops = c_ops and ops.available()
        self.decode_attention = ops.DecodeAttention(c.n_heads, c.n_kv_heads, c.head_dim, max_len, self.score_scale) \
            if self.c_ops else None
        # decode attention reads the cache's own f32 or f16 rows (no float32 copy) when the library can
        self.direct_kv = self.c_ops and (self.cache.kind == "f32" or (self.cache.kind == "f16" and ops.reads_f16_kv()))

    # -- the Backend interface ------------------------------------------------------------------------------

    @property
    def position(self) -> int:
        return self.cache.length

    @property
    def context_length(self) -> int:
        return self.cache.max_len

    @property
    def kv_cache(self) -> str:
        return self.cache.kind

    def prefill(self, tokens: Sequence[int], last_only: bool = False) -> np.ndarray:
        """Logits [T, vocab] for `tokens` after the cached ones ([1, vocab] of the last with last_only)."""
        if self.output is None:
            raise GenerationError("this native back end was closed", fix="open a new one with open_backend(model)")
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        check_tokens(tokens, self.config, self.cache)
        hidden = self.hidden_states(tokens)
        return self.logits(hidden[-1:] if last_only else hidden)

    def decode(self, token: int) -> np.ndarray:
        """Logits [vocab] after one more token."""
        return self.prefill([token])[0]

    def reset(self) -> None:
        self.cache.reset()

    def close(self) -> None:
        """Free the cache and the prepared weights; the back end cannot be used afterwards."""
        self.cache = make_kv_cache(self.config, 1, self.cache.kind)
        self.layers, self.output = [], None

    # -- the forward ----------------------------------------------------------------------------------------

    def rms_norm(self, x: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
        """native_ops.rms_norm with the model's eps (in C for [T, dim] rows when available: bit-identical)."""
        if self.c_ops and x.ndim == 2:
            return ops.rms_norm(x, weight, self.config.norm_eps)
        return rms_norm(x, weight, self.config.norm_eps)

    def _rope_tables(self, inv_freq: np.ndarray, max_len: int) -> None:
        """cos/sin [max_len, 1, hd/2] for every position, computed as apply_rope computes them (bit-identical)."""
        angles = np.arange(max_len)[:, None].astype(np.float32) * inv_freq[None, :]
        self.cos, self.sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]

    def _embedding_table(self) -> QuantizedTensor | np.ndarray:
        """The table rows are read from: a tied float table shares the output kernel's copy (one in memory)."""
        table = self.model.tensors["tok_embeddings"]
        if isinstance(table, QuantizedTensor):
            return table
        if self.config.tie_embeddings and len(self.output.parts) == 1:
            return self.output.parts[0].tensor                               # f32/f16 pass-through rows
        return np.asarray(materialize(table), dtype=np.float32)

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        """Embedding rows [T, dim] float32 (packed tables dequantize only the rows asked for)."""
        table = self.embeddings
        if isinstance(table, QuantizedTensor):
            return table.take_rows(tokens).dequantize()
        return table[tokens]

    def hidden_states(self, tokens: np.ndarray) -> np.ndarray:
        """Final-normed hidden states [T, dim] for `tokens` appended after the cache's contents."""
        c = self.config
        start = self.cache.length
        h = self.embed(tokens)                                                # [T, dim], our own copy
        pre_norm = not c.linear_input_norm
        for index, layer in enumerate(self.layers):
            a_in = self.rms_norm(h, layer.attn_norm) if pre_norm else h
            h += self.attention(a_in, index, layer, start)
            f_in = self.rms_norm(h, layer.ffn_norm) if pre_norm else h
            h += self.feed_forward(f_in, layer)
        self.cache.length = start + len(tokens)
        return self.rms_norm(h, self.final_norm)

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        return self.output(np.ascontiguousarray(hidden)).copy()             # copy: decode reuses the buffer

    def linear_input(self, x: np.ndarray) -> np.ndarray:
        """bitllama2.c's per-linear input norm (done once for linears sharing an input), else x as is."""
        return bitlinear_norm(x) if self.config.linear_input_norm else x

    def attention(self, x: np.ndarray, index: int, layer: LayerWeights, start: int) -> np.ndarray:
        c = self.config
        T, H, KV, hd = x.shape[0], c.n_heads, c.n_kv_heads, c.head_dim
        qkv = layer.qkv(self.linear_input(x))                                 # [T, q_dim + 2 kv_dim]
        q_end, k_end = self.split_qkv
        qk = qkv[:, :k_end].reshape(T, H + KV, hd)                            # q heads then k heads: one RoPE
        if c.qk_norm:
            qk = np.concatenate([rms_norm(qk[:, :H], layer.q_norm, c.norm_eps),
                                 rms_norm(qk[:, H:], layer.k_norm, c.norm_eps)], axis=1)
        rope = ops.rope if self.c_ops else apply_rope
        qk = rope(qk, self.cos[start:start + T], self.sin[start:start + T])
        self.cache.store(index, start, qk[:, H:], qkv[:, k_end:].reshape(T, KV, hd))
        out = self.attend(qk[:, :H], index, start)                           # [T, q_dim]
        if c.sub_norms:
            out = self.rms_norm(out, layer.attn_sub_norm)
        return layer.wo(self.linear_input(out))

    def attend(self, q: np.ndarray, index: int, start: int) -> np.ndarray:
        """Causal softmax attention of q [T, heads, hd] over the cache's S = start + T positions -> [T, q_dim].

        Heads are grouped by the KV head they read (GQA: head h reads KV head h // group), so one batched
        matmul [kv_heads, group * T, hd] @ [kv_heads, hd, S] serves all heads without repeating K or V."""
        c, g = self.config, self.group
        KV, hd = c.n_kv_heads, c.head_dim
        T, S = q.shape[0], start + q.shape[0]
        if T == 1 and self.decode_attention is not None:
            stored = self.cache.stored(index, S) if self.direct_kv else None  # f32/f16 rows read as stored
            keys, values = stored if stored is not None else (self.cache.keys(index, S), self.cache.values(index, S))
            return self.decode_attention(np.ascontiguousarray(q), keys, values)
        keys = self.cache.keys(index, S)                                      # [kv_heads, S, hd]
        values = self.cache.values(index, S)
        if T == 1:
            qg = q.reshape(KV, g, hd)                                         # decode: no transposes
        else:
            qg = q.reshape(T, KV, g, hd).transpose(1, 2, 0, 3).reshape(KV, g * T, hd)
        scores = np.matmul(qg, keys.transpose(0, 2, 1))                       # [kv_heads, g * T, S]
        scores *= self.score_scale
        if T > 1:                                                             # query t sees positions <= start + t
            future = np.arange(S)[None, :] > (start + np.arange(T))[:, None]  # [T, S]
            scores.reshape(KV, g, T, S)[:, :, future] = -np.inf
        out = np.matmul(softmax_inplace(scores), values)                      # [kv_heads, g * T, hd]
        if T == 1:
            return out.reshape(1, c.q_dim)
        return out.reshape(KV, g, T, hd).transpose(2, 0, 1, 3).reshape(T, c.q_dim)

    def feed_forward(self, x: np.ndarray, layer: LayerWeights) -> np.ndarray:
        c = self.config
        gate_up = layer.gate_up(self.linear_input(x))                         # [T, 2 hidden]
        gate, up = gate_up[:, :c.hidden_dim], gate_up[:, c.hidden_dim:]
        if c.activation == "silu":
            hidden = silu_gate(gate, up)
        else:
            hidden = ops.relu2_gate(gate, up) if self.c_ops else relu2_gate(gate, up)
        if c.sub_norms:
            hidden = self.rms_norm(hidden, layer.ffn_sub_norm)
        return layer.w2(self.linear_input(hidden))
