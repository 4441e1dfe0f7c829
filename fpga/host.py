"""The host side of the accelerator (the board's ARM cores, or this machine in C simulation): embedding
lookup, one `ek_top` call per prefill or decode step, final RMSNorm and LM head in numpy.

Buffers (hls/include/ek_layer.h layouts): weights uint64, params float32, rope float32, kv float32
[layers, 2, max_seq, kv_dim], hbuf float32 [max_seq, dim] (hidden states in and out).
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import GenerationError
from edgekit.fpga.driver import EkTopDriver
from edgekit.hls.design import Design
from edgekit.hls.model_data import DeviceData
from edgekit.model.model import Model
from edgekit.model.reference import ReferenceForward, rms_norm


def allocate_buffers(allocator, design: Design, data: DeviceData) -> dict:
    """Allocate the five device buffers, fill the constant ones and flush them to the device."""
    kv_floats = design.layers * 2 * design.max_seq * design.kv_dim
    buffers = {"weights": allocator.allocate(data.weights.shape, np.uint64),
               "params": allocator.allocate(data.params.shape, np.float32),
               "rope": allocator.allocate((data.rope.size,), np.float32),
               "kv": allocator.allocate((kv_floats,), np.float32),
               "hbuf": allocator.allocate((design.max_seq, design.dim), np.float32)}
    buffers["weights"][:] = data.weights
    buffers["params"][:] = data.params
    buffers["rope"][:] = data.rope.reshape(-1)
    for buffer in buffers.values():
        buffer.sync_to_device()
    return buffers


class FpgaSession:
    """One sequence on the accelerator: `run(tokens)` -> final-layer hidden states, `logits(h)`."""

    def __init__(self, model: Model, design: Design, data: DeviceData, driver: EkTopDriver, allocator):
        self.model, self.design, self.driver = model, design, driver
        self.forward = ReferenceForward(model)     # host: embedding rows and the LM head only
        self.buffers = allocate_buffers(allocator, design, data)
        driver.set_buffers(self.buffers)
        self.position = 0

    def run(self, tokens) -> np.ndarray:
        """Hidden states [T, dim] after every layer for `tokens` at positions position, position + 1, ..."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if tokens.size == 0:
            raise GenerationError("no tokens to run: the prompt is empty")
        if self.position + tokens.size > self.design.max_seq:
            raise GenerationError(f"{self.position} cached + {tokens.size} new tokens exceed the device KV "
                                  f"cache of {self.design.max_seq}", fix="shorten the prompt or lower --max-tokens")
        hbuf = self.buffers["hbuf"]
        hbuf[:tokens.size] = self.forward.rows("tok_embeddings", tokens)
        hbuf.sync_to_device()
        self.driver.run(int(tokens.size), self.position, 0, self.design.layers)
        hbuf.sync_from_device()
        self.position += int(tokens.size)
        return np.array(hbuf[:tokens.size], dtype=np.float32)

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        return self.forward.logits(rms_norm(hidden, self.model.tensors["norm"], self.model.config.norm_eps))
