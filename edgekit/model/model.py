"""`Model`: a config, canonical float32 tensors and a tokenizer, whatever file they came from.

Canonical tensor names and layout (rows are output features, as in `torch.nn.Linear.weight`):

    tok_embeddings            [vocab, dim]
    layers.{i}.attn_norm      [dim]             (absent when config.linear_input_norm)
    layers.{i}.wq             [n_heads*head_dim, dim]     q/k rows in HF rotate-half order
    layers.{i}.wk, .wv        [n_kv_heads*head_dim, dim]
    layers.{i}.bq, .bk, .bv   [q_dim] / [kv_dim]  (config.qkv_bias)
    layers.{i}.q_norm, .k_norm [head_dim]        (config.qk_norm)
    layers.{i}.attn_sub_norm  [dim]             (config.sub_norms)
    layers.{i}.wo             [dim, n_heads*head_dim]     (+ .bo [dim] with config.o_bias)
    layers.{i}.ffn_norm       [dim]             (absent when config.linear_input_norm)
    layers.{i}.w1 (gate), .w3 (up) [hidden, dim]; .w2 (down) [dim, hidden]
    layers.{i}.ffn_sub_norm   [hidden]          (config.sub_norms)
    norm                      [dim]
    output                    [vocab, dim]      (absent when config.tie_embeddings)
    rope_freqs                [head_dim/2]      optional per-frequency divisors (llama.cpp's rope_freqs)

With config.ternary_weights each linear weight (wq, wk, wv, wo, w1, w2, w3) given as a float array holds
exactly -1, 0 or +1 and has a scalar companion `<name>.scale`.

Large float matrices may be `LazyArray`s, read from the checkpoint when used (see `lazy.py`).

Packed models (`.edgekit` files, or the output of `edgekit.quantize`) hold `QuantizedTensor`s instead of
float arrays for the linear weights and may for `tok_embeddings` and `output`; a packed tensor carries
its own scales, so it has no `.scale` companion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import ShapeMismatchError, TokenizerError
from edgekit.formats import QuantizedTensor
from edgekit.model.config import ModelConfig
from edgekit.model.lazy import LazyArray, materialize
from edgekit.model.tokenizer import Tokenizer

LINEAR_NAMES = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a model with this config must have, with its canonical shape."""
    c = config
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings": (c.vocab_size, c.dim), "norm": (c.dim,)}
    if not c.tie_embeddings:
        shapes["output"] = (c.vocab_size, c.dim)
    linear = {"wq": (c.q_dim, c.dim), "wk": (c.kv_dim, c.dim), "wv": (c.kv_dim, c.dim),
              "wo": (c.dim, c.q_dim), "w1": (c.hidden_dim, c.dim), "w3": (c.hidden_dim, c.dim),
              "w2": (c.dim, c.hidden_dim)}
    for i in range(c.n_layers):
        p = f"layers.{i}."
        for name, shape in linear.items():
            shapes[p + name] = shape
            if c.ternary_weights:
                shapes[p + name + ".scale"] = ()
        if not c.linear_input_norm:
            shapes[p + "attn_norm"] = (c.dim,)
            shapes[p + "ffn_norm"] = (c.dim,)
        if c.qkv_bias:
            shapes.update({p + "bq": (c.q_dim,), p + "bk": (c.kv_dim,), p + "bv": (c.kv_dim,)})
        if c.o_bias:
            shapes[p + "bo"] = (c.dim,)
        if c.qk_norm:
            shapes.update({p + "q_norm": (c.head_dim,), p + "k_norm": (c.head_dim,)})
        if c.sub_norms:
            shapes.update({p + "attn_sub_norm": (c.dim,), p + "ffn_sub_norm": (c.hidden_dim,)})
    return shapes


OPTIONAL_SHAPES = {"rope_freqs": lambda c: (c.head_dim // 2,)}


@dataclass
class Model:
    """A loaded checkpoint: `config`, canonical float32 `tensors` (see module doc) and `tokenizer`."""

    config: ModelConfig
    tensors: dict[str, np.ndarray | QuantizedTensor | LazyArray]
    tokenizer: Tokenizer
    source: Path
    source_format: str
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_tensors(self.config, self.tensors, self.source)
        if self.tokenizer.vocab_size > self.config.vocab_size:
            raise TokenizerError(
                f"tokenizer has {self.tokenizer.vocab_size} tokens but the model's vocabulary is "
                f"{self.config.vocab_size}; pass the tokenizer that belongs to this checkpoint",
                path=self.source)

    @property
    def n_params(self) -> int:
        return int(sum(int(np.prod(t.shape)) for name, t in self.tensors.items() if not name.endswith(".scale")))

    @property
    def nbytes(self) -> int:
        return int(sum(t.nbytes for t in self.tensors.values()))

    @property
    def output_name(self) -> str:
        return "tok_embeddings" if self.config.tie_embeddings else "output"

    @property
    def is_packed(self) -> bool:
        return any(isinstance(t, QuantizedTensor) for t in self.tensors.values())


def validate_tensors(config: ModelConfig, tensors: dict[str, np.ndarray], source: Path | str) -> None:
    """Check names, shapes, dtype and finiteness; raise `ShapeMismatchError` naming the first bad tensor."""
    want = expected_shapes(config)
    for name, tensor in tensors.items():  # a packed ternary weight carries its scale inside
        if isinstance(tensor, QuantizedTensor):
            want.pop(name + ".scale", None)
    missing = sorted(set(want) - set(tensors))
    if missing:
        raise ShapeMismatchError(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                                 f"for a {config.architecture} model with this config", path=source)
    optional = {name: fn(config) for name, fn in OPTIONAL_SHAPES.items()}
    extra = sorted(set(tensors) - set(want) - set(optional))
    if extra:
        raise ShapeMismatchError(f"unexpected tensors {extra[:5]}; the config does not use them", path=source)
    for name, array in tensors.items():
        shape = want.get(name, optional.get(name))
        if tuple(array.shape) != shape:
            raise ShapeMismatchError(f"tensor {name!r} has shape {tuple(array.shape)} but the config "
                                     f"implies {shape}", path=source)
        if isinstance(array, QuantizedTensor):
            array.validate(name)
        elif array.dtype != np.float32:
            raise ShapeMismatchError(f"tensor {name!r} has dtype {array.dtype}, expected float32", path=source)
    if config.ternary_weights:
        for name in tensors:
            if name.rsplit(".", 1)[-1] in LINEAR_NAMES and not isinstance(tensors[name], QuantizedTensor):
                weight = materialize(tensors[name])
                if not ((weight == 0) | (np.abs(weight) == 1)).all():
                    raise ShapeMismatchError(f"ternary tensor {name!r} holds values other than -1, 0, +1",
                                             path=source)
