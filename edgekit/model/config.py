"""`ModelConfig`: the one description of a decoder-only transformer that every loader fills in.

The reference forward (`edgekit.model.reference`) reads only this config and the canonical tensors, so
each architecture difference is a named field here rather than a branch on the architecture's name.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import ConfigError

ROPE_SCALINGS = ("default", "linear", "llama3")
ACTIVATIONS = ("silu", "relu2")
ACT_QUANTS = ("none", "int8_absmax")


@dataclass(frozen=True)
class RopeConfig:
    """Rotary position embedding parameters (HF rotate-half layout, see `reference.apply_rope`).

    `scaling` follows transformers' `rope_type`: "default", "linear" (inverse frequencies divided by
    `factor`) or "llama3" (Llama 3.1's band-wise smoothing with `low_freq_factor`, `high_freq_factor`
    and `original_max_position`).
    """

    theta: float = 10000.0
    scaling: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192

    def __post_init__(self) -> None:
        if self.scaling not in ROPE_SCALINGS:
            raise ConfigError(f"rope scaling {self.scaling!r} is not supported; use one of {ROPE_SCALINGS}")
        if not (self.theta > 0 and math.isfinite(self.theta)):
            raise ConfigError(f"rope theta must be a positive number, got {self.theta!r}")
        if self.scaling != "default" and not self.factor > 0:
            raise ConfigError(f"rope scaling factor must be positive, got {self.factor!r}")
        if self.scaling == "llama3" and not self.high_freq_factor > self.low_freq_factor:
            raise ConfigError("llama3 rope scaling needs high_freq_factor > low_freq_factor, got "
                              f"{self.high_freq_factor} and {self.low_freq_factor}")


@dataclass(frozen=True)
class ModelConfig:
    """Shape and behaviour of a Llama-family decoder.

    Architecture switches (each a plain field so one forward serves every family):

    - `qkv_bias` / `o_bias`: biases on the q, k, v (Qwen2, Llama `attention_bias`) and output projections.
    - `qk_norm`: RMSNorm over each head of q and k before RoPE (Qwen3).
    - `sub_norms`: BitNet b1.58's extra RMSNorms on the attention output (before `wo`) and on the gated
      FFN activation (before `w2`).
    - `activation`: "silu" (SwiGLU) or "relu2" (squared ReLU gate, BitNet).
    - `ternary_weights`: every linear weight is in {-1, 0, +1} with a per-tensor float scale stored
      as tensor `<name>.scale`; the effective weight is `scale * W`.
    - `act_quant`: "int8_absmax" quantizes each linear's input per token to int8 with scale
      max|x| / 127 (BitNet's A8) before the matmul; "none" keeps float activations.
    - `linear_input_norm`: each linear normalises its own input to x / (n * rms(x)) (no weights, no
      epsilon), and the blocks have no pre-norms of their own (bitllama2.c's BitLinear).
    """

    architecture: str
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    max_seq_len: int
    head_dim: int = 0
    norm_eps: float = 1e-5
    rope: RopeConfig = field(default_factory=RopeConfig)
    tie_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False
    sub_norms: bool = False
    activation: str = "silu"
    ternary_weights: bool = False
    act_quant: str = "none"
    linear_input_norm: bool = False

    def __post_init__(self) -> None:
        if self.head_dim == 0 and self.n_heads > 0:
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)
        for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                     "max_seq_len", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config field {name!r} must be a positive integer, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if not (0 < self.norm_eps < 1):
            raise ConfigError(f"norm_eps must be in (0, 1), got {self.norm_eps!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation {self.activation!r} is not supported; use one of {ACTIVATIONS}")
        if self.act_quant not in ACT_QUANTS:
            raise ConfigError(f"act_quant {self.act_quant!r} is not supported; use one of {ACT_QUANTS}")
        if self.sub_norms and self.n_heads * self.head_dim != self.dim:
            raise ConfigError("BitNet sub-norms need n_heads * head_dim == dim, got "
                              f"{self.n_heads} * {self.head_dim} != {self.dim}")

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config fields {unknown}; valid fields are {sorted(known)}")
        values = dict(data)
        if isinstance(values.get("rope"), dict):
            values["rope"] = RopeConfig(**values["rope"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"bad model config: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
