"""Calibration for GPTQ: token sequences from text, and per-linear Hessians H = sum_t x_t^T x_t (float64) of
the inputs the reference forward feeds each linear, collected block by block.

Sequential, as in the GPTQ authors' code (`llama_sequential` with `--true-sequential`): block i is calibrated
on the hidden states that the already quantized blocks 0..i-1 produce, and inside a block each group of
linears sees the outputs of the linears quantized before it:

    q/k/v   (one input: attn_norm(h))   -> quantize -> wo (input: attention of the quantized q/k/v)
    -> quantize -> h' = h + attention;  w1/w3 (one input: ffn_norm(h')) -> quantize
    -> w2 (input: the gated activation of the quantized w1/w3) -> quantize -> next block's h = h' + ffn.

The hidden state entering each block is kept per sequence, so every block runs once per stage instead of
running the model from the embeddings each time. The two half-blocks below mirror the loop body of
`ReferenceForward.hidden_states` and reuse its `attention` / `feed_forward` / `norm`; a test holds their
composition to `ReferenceForward.forward` bit for bit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.errors import QuantizationError
from edgekit.fileio import read_utf8_text
from edgekit.formats import QuantizedTensor
from edgekit.model.config import ModelConfig
from edgekit.model.model import Model
from edgekit.model.reference import KVCache, ReferenceForward
from edgekit.model.tokenizer import Tokenizer
from edgekit.quantize.config import MIN_CALIBRATION_TOKENS
from edgekit.quantize.evaluate import DOCUMENT_SEPARATOR, split_documents

log = logging.getLogger(__name__)

# Linears that share one input, in the order the block computes them; the first name is the one observed.
# Each entry: (input group, linears reading it, the half-block that computes it).
INPUT_GROUPS = (("attn_in", ("wq", "wk", "wv"), "attention"), ("attn_out", ("wo",), "attention"),
                ("ffn_in", ("w1", "w3"), "ffn"), ("ffn_hidden", ("w2",), "ffn"))

StageQuantizer = Callable[[list[str], np.ndarray], dict[str, QuantizedTensor]]


def calibration_sequences(tokenizer: Tokenizer, text: str, *, seq_len: int, max_tokens: int,
                          first_document: int = 0) -> list[np.ndarray]:
    """Token sequences for calibration, as `evaluate` reads text: split at `<|endoftext|>`, strip, drop empty
    documents, skip the first `first_document`, BOS-prefix each, cut it to `seq_len`; stop once
    `max_tokens` tokens are taken (the last sequence is cut to fit). Sequences of one token are dropped."""
    sequences, total = [], 0
    for doc in split_documents(text, DOCUMENT_SEPARATOR)[first_document:]:
        if total >= max_tokens:
            break
        tokens = tokenizer.encode(doc, add_bos=True)[:seq_len][:max_tokens - total]
        if len(tokens) >= 2:
            sequences.append(np.asarray(tokens, dtype=np.int64))
            total += len(tokens)
    return sequences


def read_calibration_text(path: str | Path) -> str:
    """The calibration text file, as UTF-8."""
    return read_utf8_text(path, "calibration text file", decode_error=QuantizationError,
                          fix="set calib_path to a UTF-8 text file (documents separated by <|endoftext|>)")


def widest_input(config: ModelConfig) -> int:
    """The largest input width of any block linear (dim for q/k/v/w1/w3, q_dim for wo, hidden_dim for w2)."""
    return max(config.dim, config.q_dim, config.hidden_dim)


def required_tokens(config: ModelConfig) -> int:
    """Fewest calibration tokens GPTQ accepts: max(128, widest linear input), so that every Hessian
    X^T X [in, in] can have full rank."""
    return max(MIN_CALIBRATION_TOKENS, widest_input(config))


def check_calibration_tokens(sequences: list[np.ndarray], config: ModelConfig, max_tokens: int) -> int:
    """The number of calibration tokens; raise `QuantizationError` saying how many are needed if too few."""
    total = int(sum(len(s) for s in sequences))
    need = required_tokens(config)
    if total < need:
        limit = f"calib_tokens ({max_tokens})" if max_tokens < need else "the calibration text"
        raise QuantizationError(
            f"calibration gives {total} tokens but GPTQ on this model needs at least {need} "
            f"(the larger of {MIN_CALIBRATION_TOKENS} and the widest linear input, {widest_input(config)}); "
            f"{limit} is too small",
            fix=f"give more calibration text (calib_path or calib_text) and set calib_tokens >= {need}")
    return total


class _StopForward(Exception):
    """Raised by `HessianCollector` once it has seen the input it needs: the rest of the block is skipped."""


class HessianCollector:
    """Observer for `ReferenceForward`: accumulates H += x^T x (float64) for the input of linear `name`
    and stops the forward right after it."""

    def __init__(self, name: str, width: int):
        self.name = name
        self.hessian = np.zeros((width, width), np.float64)

    def __call__(self, event: str, x: np.ndarray) -> None:
        if event != self.name:
            return
        x64 = x.astype(np.float64)                                             # [T, in]
        self.hessian += x64.T @ x64
        raise _StopForward


def run_half_block(forward: ReferenceForward, h: np.ndarray, layer: int, half: str, cache: KVCache) -> np.ndarray:
    """One half of block `layer` on hidden states h [T, dim] at positions 0..T-1, as in
    `ReferenceForward.hidden_states`: "attention" gives h + attention(attn_norm(h)), "ffn" gives
    h + feed_forward(ffn_norm(h))."""
    c, p = forward.config, f"layers.{layer}."
    if half == "attention":
        a_in = h if c.linear_input_norm else forward.norm(h, p + "attn_norm")
        return h + forward.attention(a_in, layer, np.arange(len(h)), cache)
    f_in = h if c.linear_input_norm else forward.norm(h, p + "ffn_norm")
    return h + forward.feed_forward(f_in, layer)


def embed_sequences(model: Model, sequences: list[np.ndarray]) -> list[np.ndarray]:
    """Hidden states entering block 0: the (possibly packed) token embeddings [T, dim] per sequence."""
    forward = ReferenceForward(model)
    return [forward.rows("tok_embeddings", tokens).astype(np.float32) for tokens in sequences]


def advance_states(model: Model, states: list[np.ndarray], layer: int, half: str, cache: KVCache) -> list[np.ndarray]:
    """Run one half-block over every sequence's hidden states (a fresh forward sees the current weights)."""
    forward = ReferenceForward(model)
    return [run_half_block(forward, h, layer, half, cache) for h in states]


def collect_hessian(model: Model, states: list[np.ndarray], name: str, half: str, cache: KVCache) -> np.ndarray:
    """H = sum over sequences of X^T X [in, in] float64, X the input of linear `name` (e.g. "layers.3.wo")
    when its half-block runs on `states`."""
    layer = int(name.split(".")[1])
    width = model.tensors[name].shape[1]
    collector = HessianCollector(name, width)
    forward = ReferenceForward(model, observer=collector)
    for h in states:
        try:
            run_half_block(forward, h, layer, half, cache)
        except _StopForward:
            continue
        raise QuantizationError(f"{name}: the reference forward never fed this linear an input")
    return collector.hessian


def quantize_block_linears(model: Model, states: list[np.ndarray], layer: int, half: str, targets: set[str],
                           quantize_stage: StageQuantizer, cache: KVCache) -> None:
    """Quantize the linears of one half-block, input group by input group: each group's Hessian comes from
    the block with the groups before it already quantized (true-sequential); `model` is updated in place."""
    for _, linears, group_half in INPUT_GROUPS:
        names = [f"layers.{layer}.{linear}" for linear in linears if f"layers.{layer}.{linear}" in targets]
        if group_half != half or not names:
            continue
        observed = f"layers.{layer}.{linears[0]}"  # the linears of a group share this input
        hessian = collect_hessian(model, states, observed, half, cache)
        for name, packed in quantize_stage(names, hessian).items():
            model.tensors[name] = packed
            model.tensors.pop(name + ".scale", None)


def quantize_sequentially(model: Model, sequences: list[np.ndarray], targets: set[str],
                          quantize_stage: StageQuantizer) -> None:
    """Sequential GPTQ over the blocks of `model` (its tensors are replaced in place by the packed ones
    `quantize_stage(names, hessian)` returns): block i is calibrated on the outputs of the quantized blocks
    0..i-1, and inside a block group by group (see the module docstring)."""
    cache = KVCache(model.config, max(len(s) for s in sequences))
    states = embed_sequences(model, sequences)
    for layer in range(model.config.n_layers):
        for half in ("attention", "ffn"):
            quantize_block_linears(model, states, layer, half, targets, quantize_stage, cache)
            states = advance_states(model, states, layer, half, cache)
        log.info("GPTQ: block %d of %d quantized", layer + 1, model.config.n_layers)
