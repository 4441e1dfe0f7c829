"""The host side of the accelerator (the board's ARM cores, or this machine in C simulation): embedding
lookup, one `ek_top` call per prefill or decode step, final RMSNorm and LM head in numpy.

Buffers (hls/include/ek_layer.h layouts): weights uint64 words, params float32, rope float32, kv float32
[layers, 2, max_seq, kv_dim] or int8 codes + float32 scales per layer (ek_kvcache.h, `kv_bits` 8), hbuf float32
[max_seq, dim] (hidden states in and out). The weights, the KV cache and the head words are striped over the
four wide AXI ports (hls/include/ek_axi.h, `stripe_ports`): read them back with `unstripe_ports`.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import ConfigError, GenerationError
from edgekit.fpga.driver import EkTopDriver
from edgekit.hls.design import Design
from edgekit.hls.model_data import DeviceData
from edgekit.hls.packing import stripe_ports
from edgekit.hls.resources import HEAD_LOGIT_ROWS
from edgekit.model.model import Model
from edgekit.model.reference import ReferenceForward, rms_norm


LOGIT_ROWS = HEAD_LOGIT_ROWS       # logits rows one head call writes back (evaluation only; decode returns top-k)


def allocate_buffers(allocator, design: Design, data: DeviceData) -> dict:
    """Allocate the device buffers (ek_top's arguments), fill the constant ones and flush them to the device."""
    kv_type = np.float32 if design.hls.kv_bits == 32 else np.int8
    kv_items = design.layers * design.kv_layer_bytes // np.dtype(kv_type).itemsize
    k = design.hls.top_k
    weights, head = stripe_ports(data.weights), stripe_ports(data.head_words)   # four AXI port regions each
    buffers = {"weights": allocator.allocate(weights.shape, np.uint8),
               "params": allocator.allocate(data.params.shape, np.float32),
               "rope": allocator.allocate((data.rope.size,), np.float32),
               "kv": allocator.allocate(stripe_ports(np.zeros(kv_items, kv_type)).shape, np.uint8),
               "hbuf": allocator.allocate((design.max_seq, design.dim), np.float32),
               "head": allocator.allocate(head.shape, np.uint8),
               "head_params": allocator.allocate(data.head_params.shape, np.float32),
               "top_ids": allocator.allocate((LOGIT_ROWS, k), np.int32),
               "top_logits": allocator.allocate((LOGIT_ROWS, k), np.float32),
               "logits": allocator.allocate((LOGIT_ROWS, design.vocab), np.float32)}
    buffers["weights"][:] = weights
    buffers["params"][:] = data.params
    buffers["rope"][:] = data.rope.reshape(-1)
    buffers["head"][:] = head
    buffers["head_params"][:] = data.head_params
    for buffer in buffers.values():
        buffer.sync_to_device()
    return buffers


class Int8LmHead:
    """The host's LM head in int8: weights per-row absmax int8 [vocab, dim] (a quarter of the float bytes
    the ARM cores stream per token), activations per-token absmax int8, int32 sums, float scales."""

    def __init__(self, weight: np.ndarray):
        weight = np.asarray(weight, dtype=np.float32)                     # [vocab, dim]
        self.scale = np.max(np.abs(weight), axis=1) / np.float32(127.0)   # [vocab]
        safe = np.where(self.scale > 0, self.scale, np.float32(1.0))
        self.codes = np.clip(np.rint(weight / safe[:, None]), -127, 127).astype(np.int8)

    def __call__(self, hidden: np.ndarray) -> np.ndarray:
        a_scale = np.max(np.abs(hidden), axis=1, keepdims=True) / np.float32(127.0)   # [T, 1]
        q = np.rint(hidden / np.where(a_scale > 0, a_scale, np.float32(1.0))).astype(np.int32)
        sums = q @ self.codes.T.astype(np.int32)                          # [T, vocab] exact int32
        return (sums.astype(np.float32) * a_scale * self.scale[None, :]).astype(np.float32)


LM_HEADS = ("fpga", "f32", "int8")   # on the fabric (ek_lmhead.h), or on the host in float32 / int8


class FpgaSession:
    """One sequence on the accelerator: `run(tokens)` -> final-layer hidden states; `prefill_logits`,
    `decode_logits` through the chosen LM head ("fpga": the device's head; "f32"/"int8": the host's)."""

    def __init__(self, model: Model, design: Design, data: DeviceData, driver: EkTopDriver, allocator,
                 lm_head: str = "fpga"):
        if lm_head not in LM_HEADS:
            raise ConfigError(f"LM head {lm_head!r} is not one of {LM_HEADS}", fix="use fpga, f32 or int8")
        self.model, self.design, self.driver, self.lm_head = model, design, driver, lm_head
        self.forward = ReferenceForward(model)     # host: embedding rows (and the host LM heads)
        self.int8_head = Int8LmHead(self.forward.weight(model.output_name)[0]) if lm_head == "int8" else None
        self.buffers = allocate_buffers(allocator, design, data)
        driver.set_buffers(self.buffers)
        self.position = 0

    def run(self, tokens, head_rows: int = 0) -> np.ndarray:
        """Hidden states [T, dim] after every layer for `tokens` at positions position, position + 1, ...;
        the device's head then runs on the last `head_rows` of them (top-k only: `top_k`)."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if tokens.size == 0:
            raise GenerationError("no tokens to run: the prompt is empty")
        if self.position + tokens.size > self.design.max_seq:
            raise GenerationError(f"{self.position} cached + {tokens.size} new tokens exceed the device KV "
                                  f"cache of {self.design.max_seq}", fix="shorten the prompt or lower --max-tokens")
        if not 0 <= head_rows <= min(tokens.size, LOGIT_ROWS):
            raise GenerationError(f"head_rows {head_rows} must be in [0, {min(tokens.size, LOGIT_ROWS)}]")
        hbuf = self.buffers["hbuf"]
        hbuf[:tokens.size] = self.forward.rows("tok_embeddings", tokens)
        hbuf.sync_to_device()
        self.driver.run(int(tokens.size), self.position, 0, self.design.layers, head_rows)
        hbuf.sync_from_device()
        self.position += int(tokens.size)
        return np.array(hbuf[:tokens.size], dtype=np.float32)

    def top_k(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids int32 [rows, k], logits float32 [rows, k]) the device's head wrote last, largest first."""
        for name in ("top_ids", "top_logits"):
            self.buffers[name].sync_from_device()
        return np.array(self.buffers["top_ids"][:rows]), np.array(self.buffers["top_logits"][:rows])

    def device_logits(self, n_rows: int) -> np.ndarray:
        """Logits [n_rows, vocab] of hbuf rows [0, n_rows) from head-only calls, LOGIT_ROWS at a time."""
        out = np.empty((n_rows, self.design.vocab), dtype=np.float32)
        for start in range(0, n_rows, LOGIT_ROWS):
            stop = min(n_rows, start + LOGIT_ROWS)
            self.driver.run(stop, 0, 0, 0, stop - start, write_logits=True)
            self.buffers["logits"].sync_from_device()
            out[start:stop] = self.buffers["logits"][:stop - start]
        return out

    def prefill_logits(self, tokens) -> np.ndarray:
        """Logits [T, vocab] of every prompt token (the runtime interface; evaluation reads them all)."""
        hidden = self.run(tokens)
        return self.device_logits(len(hidden)) if self.lm_head == "fpga" else self.logits(hidden)

    def last_logits(self, tokens) -> np.ndarray:
        """Logits [vocab] of the last of `tokens` (a decode step, or the end of a prompt). With the device's
        head only its top-k come back: the other entries are -inf, so greedy decoding is exact and sampling
        draws from the top-k (host sampling)."""
        if self.lm_head != "fpga":
            return self.logits(self.run(tokens)[-1:])[0]
        self.run(tokens, head_rows=1)
        ids, values = self.top_k(1)
        logits = np.full(self.design.vocab, -np.inf, dtype=np.float32)
        logits[ids[0]] = values[0]
        return logits

    def decode_logits(self, token: int) -> np.ndarray:
        return self.last_logits([token])

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """The host's LM head ("f32" or "int8") on final-layer hidden states."""
        normed = rms_norm(hidden, self.model.tensors["norm"], self.model.config.norm_eps)
        if self.int8_head is None:
            return self.forward.logits(normed)
        _, post_scale = self.forward.weight(self.model.output_name)
        return (self.int8_head(normed) * post_scale).astype(np.float32)
