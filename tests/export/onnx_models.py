"""Small random `Model`s for export tests: every architecture switch of `ModelConfig`, float or packed."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgekit.bench.synthetic import synthetic_tokenizer
from edgekit.formats import PER_TENSOR, pack_values
from edgekit.model.config import ModelConfig, RopeConfig
from edgekit.model.model import LINEAR_NAMES, Model, expected_shapes

VOCAB = 300      # the synthetic sentencepiece vocabulary needs 259 fixed pieces


def tiny_config(**overrides) -> ModelConfig:
    base = dict(architecture="llama", dim=64, hidden_dim=96, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=VOCAB,
                max_seq_len=96, rope=RopeConfig(theta=10000.0))
    base.update(overrides)
    return ModelConfig(**base)


def random_model(config: ModelConfig, seed: int = 0) -> Model:
    """Float32 weights scaled to keep activations near unit RMS; norms and biases perturbed so they matter."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in expected_shapes(config).items():
        kind = name.rsplit(".", 1)[-1]
        if name.endswith(".scale"):
            tensors[name] = np.float32(rng.uniform(0.02, 0.05))
        elif config.ternary_weights and kind in LINEAR_NAMES:
            tensors[name] = rng.integers(-1, 2, size=shape).astype(np.float32)
        elif len(shape) == 2:
            tensors[name] = (rng.standard_normal(shape) / math.sqrt(shape[1])).astype(np.float32)
        elif kind.startswith("b"):
            tensors[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            tensors[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if config.ternary_weights:    # keep the output layer in range with trits of a fixed scale
        tensors["tok_embeddings"] *= np.float32(3.0)
    return Model(config=config, tensors=tensors, tokenizer=synthetic_tokenizer(config.vocab_size),
                 source=Path("random"), source_format="random")


def packed_model(model: Model, fmt_name: str, group: int) -> Model:
    """The same model with every linear layer RTN-packed into `fmt_name` (values exactly what it holds)."""
    tensors = dict(model.tensors)
    for name in list(tensors):
        if name.rsplit(".", 1)[-1] in LINEAR_NAMES:
            tensors[name] = rtn_pack(tensors[name], fmt_name, group)
    return replace(model, tensors=tensors)


def rtn_pack(weight: np.ndarray, fmt_name: str, group: int):
    from edgekit.formats import get_format

    fmt = get_format(fmt_name)
    rows, cols = weight.shape
    if fmt.kind == "ternary":
        scale = np.float32(np.abs(weight).mean())
        return pack_values(fmt_name, np.clip(np.round(weight / scale), -1, 1), np.full((1, 1), scale, np.float32),
                           PER_TENSOR)
    width = -(-cols // group) * group if group > 0 else cols
    padded = np.zeros((rows, width), np.float32)
    padded[:, :cols] = weight
    blocks = padded.reshape(rows, -1, group if group > 0 else width)
    if not fmt.symmetric:                     # min/max with a zero point per block
        top = (1 << fmt.bits) - 1
        low_v, high_v = blocks.min(axis=2), blocks.max(axis=2)
        scales = np.maximum((high_v - low_v) / top, 1e-6).astype(np.float16)
        zeros = np.clip(np.round(-low_v / scales.astype(np.float32)), 0, top).astype(np.uint8)
        codes = np.round(blocks / scales.astype(np.float32)[:, :, None]) + zeros[:, :, None]
        values = np.clip(codes, 0, top).reshape(rows, width)[:, :cols]
        return pack_values(fmt_name, values, scales, group, zeros)
    low, high = fmt.code_range()
    scales = (np.abs(blocks).max(axis=2) / high).astype(np.float16)
    safe = np.where(scales == 0, 1, scales).astype(np.float32)[:, :, None]
    values = np.clip(np.round(blocks / safe), low, high).reshape(rows, width)[:, :cols]
    return pack_values(fmt_name, values, scales, group)
