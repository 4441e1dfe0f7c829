"""The torch baseline: the same synthetic weights dequantized to fp32 or bf16, run by plain torch ops.

It mirrors `edgekit.model.reference` step by step (RMSNorm, rotate-half RoPE, grouped-query attention
over a preallocated KV cache, SwiGLU or squared ReLU, BitNet sub-norms), computing logits only for the
last prompt token as llama.cpp does. Only the bench worker imports this module (torch is not on the
edge path).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgekit.formats import QuantizedTensor
from edgekit.model.lazy import materialize
from edgekit.model.model import Model
from edgekit.model.reference import rope_inv_freq

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def to_torch(tensor, dtype: torch.dtype, chunk_rows: int = 8192) -> torch.Tensor:
    """One tensor at a time, in blocks of `chunk_rows` rows, so no float32 copy of the model (or of a
    128256 x 2560 embedding, 1.3 GB) ever exists beside the `dtype` weights."""
    if not isinstance(tensor, QuantizedTensor):
        return torch.from_numpy(np.ascontiguousarray(materialize(tensor), dtype=np.float32)).to(dtype)
    out = torch.empty(tensor.shape, dtype=dtype)
    for start in range(0, tensor.rows, chunk_rows):
        rows = np.arange(start, min(start + chunk_rows, tensor.rows))
        out[start:start + len(rows)] = torch.from_numpy(tensor.take_rows(rows).dequantize())
    return out


class TorchForward:
    """Decoder forward in torch over a KV cache [n_layers, 2, context, n_kv_heads, head_dim]."""

    def __init__(self, model: Model, dtype: str, context_length: int):
        self.config = c = model.config
        self.dtype = DTYPES[dtype]
        self.w = {name: to_torch(t, self.dtype) for name, t in model.tensors.items() if not name.endswith(".scale")}
        for name, t in model.tensors.items():                 # unpacked ternary weights: fold the scale in
            if name.endswith(".scale"):
                self.w[name[: -len(".scale")]] *= float(np.asarray(t))
        self.output = self.w["tok_embeddings" if c.tie_embeddings else "output"]
        inv = torch.from_numpy(rope_inv_freq(c, model.tensors.get("rope_freqs")))
        angles = torch.arange(context_length, dtype=torch.float32)[:, None] * inv[None, :]  # [ctx, hd/2]
        self.cos, self.sin = angles.cos().to(self.dtype), angles.sin().to(self.dtype)
        self.cache = torch.zeros(c.n_layers, 2, context_length, c.n_kv_heads, c.head_dim, dtype=self.dtype)
        self.length = 0

    def norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.w[name], self.config.norm_eps)

    def rope(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x [T, heads, hd], rotate-half pairs (i, i + hd/2)."""
        cos = self.cos[start:start + x.shape[0], None, :]
        sin = self.sin[start:start + x.shape[0], None, :]
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def attention(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        c, p, T, start = self.config, f"layers.{layer}.", x.shape[0], self.length
        q = F.linear(x, self.w[p + "wq"]).view(T, c.n_heads, c.head_dim)
        k = F.linear(x, self.w[p + "wk"]).view(T, c.n_kv_heads, c.head_dim)
        v = F.linear(x, self.w[p + "wv"]).view(T, c.n_kv_heads, c.head_dim)
        self.cache[layer, 0, start:start + T] = self.rope(k, start)
        self.cache[layer, 1, start:start + T] = v
        keys = self.cache[layer, 0, :start + T].transpose(0, 1)                  # [kv_heads, S, hd]
        values = self.cache[layer, 1, :start + T].transpose(0, 1)
        q = self.rope(q, start).transpose(0, 1)                                   # [heads, T, hd]
        mask = torch.arange(start + T)[None, :] <= torch.arange(start, start + T)[:, None]  # [T, S]
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
        out = out.transpose(0, 1).reshape(T, c.q_dim)
        if c.sub_norms:
            out = self.norm(out, p + "attn_sub_norm")
        return F.linear(out, self.w[p + "wo"])

    def feed_forward(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        c, p = self.config, f"layers.{layer}."
        gate, up = F.linear(x, self.w[p + "w1"]), F.linear(x, self.w[p + "w3"])
        hidden = F.silu(gate) * up if c.activation == "silu" else torch.relu(gate).square() * up
        if c.sub_norms:
            hidden = self.norm(hidden, p + "ffn_sub_norm")
        return F.linear(hidden, self.w[p + "w2"])

    @torch.inference_mode()
    def forward_last(self, tokens: list[int]) -> np.ndarray:
        """Logits [vocab] (float32) of the last of `tokens`, appended after the cached sequence."""
        h = self.w["tok_embeddings"][torch.tensor(tokens)]                       # [T, dim]
        for layer in range(self.config.n_layers):
            h = h + self.attention(self.norm(h, f"layers.{layer}.attn_norm"), layer)
            h = h + self.feed_forward(self.norm(h, f"layers.{layer}.ffn_norm"), layer)
        self.length += len(tokens)
        last = self.norm(h[-1:], "norm")
        return F.linear(last, self.output)[0].float().numpy()


class TorchSession:
    """The bench worker's session over `TorchForward`."""

    def __init__(self, model: Model, dtype: str, threads: int, context_length: int):
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        self.forward = TorchForward(model, dtype, context_length)

    def prefill(self, tokens: list[int]) -> np.ndarray:
        return self.forward.forward_last(tokens)

    def decode(self, token: int) -> np.ndarray:
        return self.forward.forward_last([token])

    def reset(self) -> None:
        self.forward.length = 0

    def close(self) -> None:
        self.forward = None
