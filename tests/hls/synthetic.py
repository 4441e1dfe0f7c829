"""Synthetic ternary models at chosen shapes (random trits, real tokenizer of the built-in model), for the
shapes and switches the shared checkpoints do not cover: sub-norms, squared ReLU, RMSNorm weights, GQA,
dimensions that are not multiples of the group or lane counts."""

from __future__ import annotations

from importlib import resources

import numpy as np

from edgekit.model import load
from edgekit.model.config import ModelConfig, RopeConfig
from edgekit.model.model import LINEAR_NAMES, Model, expected_shapes


def builtin_tokenizer():
    return load(resources.files("edgekit.data").joinpath("default.edgekit")).tokenizer


def synthetic_model(seed: int = 0, **overrides) -> Model:
    fields = dict(architecture="bitnet", dim=100, hidden_dim=172, n_layers=2, n_heads=5, n_kv_heads=1,
                  vocab_size=512, max_seq_len=48, norm_eps=1e-5, rope=RopeConfig(theta=10000.0),
                  tie_embeddings=True, ternary_weights=True, act_quant="int8_absmax", sub_norms=True,
                  activation="relu2", linear_input_norm=False)
    fields.update(overrides)
    config = ModelConfig(**fields)
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in expected_shapes(config).items():
        base = name.split(".")[-1]
        if name.endswith(".scale"):
            tensors[name] = np.float32(rng.uniform(0.02, 0.2))
        elif base in LINEAR_NAMES:
            tensors[name] = rng.integers(-1, 2, shape).astype(np.float32)
        elif "norm" in base:
            tensors[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            tensors[name] = rng.normal(0, 1, shape).astype(np.float32)
    return Model(config=config, tensors=tensors, tokenizer=builtin_tokenizer(), source="synthetic",
                 source_format="synthetic")
