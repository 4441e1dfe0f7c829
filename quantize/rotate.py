"""Randomized Hadamard rotation of the residual stream (QuaRot: Ashkboos et al. 2024, arXiv:2404.00456,
Section 4, Stage 1a; the invariance it rests on is SliceGPT's "computational invariance", Ashkboos et al.
2024, arXiv:2401.15024, Theorem 1).

A pre-norm decoder whose norms are RMSNorms computes the same function when its residual stream h is
replaced by h Q for any orthogonal Q, once every RMSNorm weight is folded into the linears that read it:

- RMSNorm(x) * w followed by W_in equals RMSNorm(x) followed by W_in diag(w) (fold, then norm weights = 1);
- RMSNorm(x Q) = RMSNorm(x) Q, because ||x Q|| = ||x|| (the epsilon term is unchanged too);
- so with rows as tokens: E <- E Q (embeddings), W_in <- W_in Q for wq/wk/wv/w1/w3 and the output
  matrix (they read the rotated stream), W_out <- Q^T W_out and b_o <- Q^T b_o for wo/w2 (they write it).

What acts inside a block leaves the rotation alone: q/k norms (Qwen3) act on per-head q and k, which
W_in Q keeps unchanged, and BitNet's sub-norms act on the attention output before wo and on the FFN
activation before w2, neither of which is the residual stream. Rotation spreads outlier channels of the
residual stream over all channels, which makes the weights that read it easier to quantize.

Q = H D / sqrt(n): H the Sylvester Hadamard matrix of order n = dim (a power of two), D a seeded random
diagonal of +-1. It is applied with the fast Walsh-Hadamard transform, O(n log n) per row.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np

from edgekit.errors import UnsupportedModelError
from edgekit.model.lazy import materialize
from edgekit.model.model import Model

log = logging.getLogger(__name__)

ROTATIONS = ("hadamard",)
READS_RESIDUAL = {"wq": "attn_norm", "wk": "attn_norm", "wv": "attn_norm", "w1": "ffn_norm", "w3": "ffn_norm"}
WRITES_RESIDUAL = ("wo", "w2", "bo")
FOLDED_NORMS = ("attn_norm", "ffn_norm", "norm")


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def hadamard_matrix(n: int) -> np.ndarray:
    """Sylvester's Hadamard matrix of order n (a power of two), float64 [n, n] of +-1:
    H_1 = [1], H_2k = [[H_k, H_k], [H_k, -H_k]]."""
    if not is_power_of_two(n):
        raise ValueError(f"Sylvester Hadamard matrices exist for powers of two, not {n}")
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def walsh_hadamard(x: np.ndarray) -> np.ndarray:
    """x @ H_n along the last axis (float64), by the fast Walsh-Hadamard transform: log2(n) butterfly
    passes; pass with span s pairs element i with i + s inside blocks of 2s ([m, n/2s, 2, s] view)."""
    n = x.shape[-1]
    y = np.array(x, dtype=np.float64).reshape(-1, n)
    span = 1
    while span < n:
        pairs = y.reshape(-1, n // (2 * span), 2, span)
        y = np.stack([pairs[:, :, 0] + pairs[:, :, 1], pairs[:, :, 0] - pairs[:, :, 1]], axis=2)
        span *= 2
    return y.reshape(x.shape)


def random_signs(n: int, seed: int) -> np.ndarray:
    """The diagonal of D: n seeded random +-1 (float64)."""
    return np.random.default_rng(seed).integers(0, 2, size=n) * 2.0 - 1.0


def rotation_matrix(n: int, seed: int) -> np.ndarray:
    """Q = H D / sqrt(n) [n, n] float64, orthogonal (explicit form, for checks and small dims)."""
    return hadamard_matrix(n) * random_signs(n, seed)[None, :] / np.sqrt(n)


def rotate_rows(x: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """x @ Q for x [..., n] (float64): (x H) D / sqrt(n)."""
    return walsh_hadamard(x) * signs / np.sqrt(len(signs))


def rotate_columns(w: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Q^T @ w for w [n, k] (float64): D H w / sqrt(n), i.e. (w^T Q)^T."""
    return rotate_rows(np.asarray(w, np.float64).T, signs).T


def check_rotatable(model: Model) -> None:
    """Raise `UnsupportedModelError` naming the reason when rotating `model` would not be exact."""
    c = model.config
    reasons = []
    if model.is_packed:
        reasons.append("its weights are already packed (rotate the float checkpoint, then quantize)")
    if c.linear_input_norm:
        reasons.append("it has bitllama2.c's weightless per-linear input norms instead of pre-norms with "
                       "weights to fold")
    if c.ternary_weights:
        reasons.append("its weights are natively ternary, and W Q is no longer ternary")
    if c.act_quant != "none":
        reasons.append(f"its activations are quantized ({c.act_quant}); per-token absmax is not rotation "
                       "invariant")
    if not is_power_of_two(c.dim):
        reasons.append(f"dim {c.dim} is not a power of two (the Sylvester Hadamard rotation needs 2^k)")
    if reasons:
        raise UnsupportedModelError("cannot rotate this model exactly: " + "; ".join(reasons), path=model.source,
                                    fix="quantize without rotate")


def rotated_tensor(name: str, value: np.ndarray, model: Model, signs: np.ndarray) -> np.ndarray:
    """One tensor of the rotated model (float32): norms folded into readers of the stream and set to 1,
    readers W Q, writers Q^T W, embeddings E Q; everything else unchanged."""
    kind = name.rsplit(".", 1)[-1]
    layer = name.rsplit(".", 1)[0]
    x = np.asarray(materialize(value), np.float64)
    if kind in READS_RESIDUAL:
        norm = np.asarray(model.tensors[f"{layer}.{READS_RESIDUAL[kind]}"], np.float64)
        x = rotate_rows(x * norm[None, :], signs)
    elif name == "output":
        x = rotate_rows(x * np.asarray(model.tensors["norm"], np.float64)[None, :], signs)
    elif name == "tok_embeddings" or kind == "bo":  # b_o is a row added to the stream: b Q = Q^T b
        x = rotate_rows(x, signs)
    elif kind in WRITES_RESIDUAL:
        x = rotate_columns(x, signs)
    elif kind in FOLDED_NORMS:
        x = np.ones_like(x)
    return x.astype(np.float32)


def rotate_model(model: Model, seed: int = 0) -> Model:
    """The model with its norms folded and its residual stream rotated by Q = H D / sqrt(dim) (same logits up
    to float rounding). A tied embedding is untied: `output` becomes the folded, rotated copy."""
    check_rotatable(model)
    signs = random_signs(model.config.dim, seed)
    tensors = {name: rotated_tensor(name, value, model, signs) for name, value in model.tensors.items()}
    if model.config.tie_embeddings:
        tensors["output"] = rotated_tensor("output", model.tensors["tok_embeddings"], model, signs)
    config = dataclasses.replace(model.config, tie_embeddings=False)
    metadata = {**model.metadata, "rotation": json.dumps({"kind": "hadamard", "seed": seed})}
    log.info("rotated the residual stream (dim %d) by a randomized Hadamard matrix, seed %d", config.dim, seed)
    return Model(config=config, tensors=tensors, tokenizer=model.tokenizer, source=model.source,
                 source_format=model.source_format, metadata=metadata)
