"""What a benchmark run measures: model shapes, weight formats, back ends, threads, lengths.

`BenchConfig` is validated in `__post_init__` and round-trips through JSON (it is stored in every
results file, so a table can always say exactly what produced it). `ShapeSpec` presets are real model
shapes filled with synthetic random weights (speed only, never quality: see `synthetic.py`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError
from edgekit.model.config import ModelConfig, RopeConfig

CONFIG_VERSION = 1


@dataclass(frozen=True)
class ShapeSpec:
    """A decoder's shape and the architecture switches that change its work per token."""

    name: str
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    activation: str = "silu"
    sub_norms: bool = False
    tie_embeddings: bool = True
    rope_theta: float = 500000.0
    description: str = ""

    def model_config(self, ternary: bool, max_seq_len: int = 4096) -> ModelConfig:
        """The edgekit config of this shape; ternary BitNet-style shapes get per-token int8 activations."""
        bitnet = self.sub_norms
        return ModelConfig(architecture="bitnet" if bitnet else "llama", dim=self.dim, hidden_dim=self.hidden_dim,
                           n_layers=self.n_layers, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads,
                           vocab_size=self.vocab_size, max_seq_len=max_seq_len, rope=RopeConfig(theta=self.rope_theta),
                           tie_embeddings=self.tie_embeddings, sub_norms=self.sub_norms, activation=self.activation,
                           ternary_weights=ternary, act_quant="int8_absmax" if ternary and bitnet else "none")

    @property
    def linear_weights(self) -> int:
        """Weights in the transformer blocks' seven linear layers (what ternary/int formats pack)."""
        head_dim = self.dim // self.n_heads
        attn = 2 * self.dim * self.dim + 2 * self.n_kv_heads * head_dim * self.dim
        return self.n_layers * (attn + 3 * self.dim * self.hidden_dim)


SHAPES: dict[str, ShapeSpec] = {s.name: s for s in (
    ShapeSpec("bitnet-2b4t", 2560, 6912, 30, 20, 5, 128256, activation="relu2", sub_norms=True,
              description="BitNet b1.58 2B4T: squared ReLU, sub-norms, tied embeddings (output at int8/Q8_0)"),
    ShapeSpec("llama-3.2-1b", 2048, 8192, 16, 32, 8, 128256, description="Llama 3.2 1B: SwiGLU, tied embeddings"),
    ShapeSpec("bitnet-700m", 1536, 4096, 24, 16, 16, 32002, tie_embeddings=False, rope_theta=10000.0,
              description="bitnet_b1_58-large (~700M): SwiGLU, untied output"),
    ShapeSpec("small", 1536, 4096, 4, 16, 16, 32002, tie_embeddings=False, rope_theta=10000.0,
              description="quick check: bitnet-700m's layer shapes, 4 layers"),
    ShapeSpec("tiny", 256, 512, 2, 4, 2, 512, activation="relu2", sub_norms=True,
              description="test shape: BitNet switches at toy size (seconds)"),
)}

# Packed weight formats of the synthetic models, and what each peer runs them as.
WEIGHT_FORMATS = {"t2": ("ek_t2", -1), "t1": ("ek_t1", -1), "i4": ("ek_i4", 32), "i8": ("ek_i8", 32)}
TORCH_DTYPES = ("fp32", "bf16")
BACKENDS = ("native", "llama.cpp", "onnxruntime", "torch", "reference")
KV_TYPES = ("f16", "f32")

PRESETS: dict[str, dict[str, Any]] = {
    "full": {"shapes": ("bitnet-2b4t", "llama-3.2-1b", "bitnet-700m"), "threads": (2, 1),
                 "prompt_lengths": (128, 512), "generate_length": 128, "repetitions": 3},
    "quick": {"shapes": ("small",), "threads": (2, 1), "prompt_lengths": (64,), "generate_length": 32, "repetitions": 2,
                  "backends": ("native", "llama.cpp", "onnxruntime", "torch"), "torch_dtypes": ("bf16",)},
    "tiny": {"shapes": ("tiny",), "threads": (1,), "prompt_lengths": (16,), "generate_length": 8, "repetitions": 1,
                 "backends": ("reference", "llama.cpp"), "formats": ("t2", "i4")},
}


def default_work_dir() -> Path:
    """Where synthetic models are cached: $EDGEKIT_CACHE/bench or ~/.cache/edgekit/bench."""
    root = os.environ.get("EDGEKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgekit")
    return Path(root) / "bench"


@dataclass
class BenchConfig:
    """One benchmark run. Every (shape, back end, weight format, threads) cell is measured in its own process.

    - `prompt_lengths`: prefill lengths (pp128, pp512); the first one is also the time-to-first-token prompt.
    - `generate_length`: decode steps from an empty context (tg128).
    - `formats`: packed formats of the synthetic weights (t2 = ek_t2/TQ2_0, t1 = ek_t1/TQ1_0, i4 = ek_i4 g32/Q4_0,
      i8 = ek_i8 g32/Q8_0); torch runs the t2 weights dequantized to `torch_dtypes`.
    - `memory_limit_gb`: a cell whose estimated resident size exceeds this is skipped with the reason.
    """

    shapes: tuple[str, ...] = ("bitnet-2b4t",)
    backends: tuple[str, ...] = ("native", "llama.cpp", "onnxruntime", "torch")
    formats: tuple[str, ...] = ("t2", "t1", "i4", "i8")
    torch_dtypes: tuple[str, ...] = TORCH_DTYPES
    threads: tuple[int, ...] = (2, 1)
    prompt_lengths: tuple[int, ...] = (128, 512)
    generate_length: int = 128
    repetitions: int = 3
    kv_type: str = "f16"
    output_dir: Path = Path("docs/bench")
    work_dir: Path = field(default_factory=default_work_dir)
    memory_limit_gb: float = 8.0
    bandwidth_mib: int = 512
    timeout_s: float = 1800.0
    seed: int = 0
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        for name in ("shapes", "backends", "formats", "torch_dtypes", "threads", "prompt_lengths"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise ConfigError(f"bench config field {name!r} must be a list, got {value!r}")
            setattr(self, name, tuple(value))
        self.output_dir, self.work_dir = Path(self.output_dir), Path(self.work_dir)
        _check_names("shapes", self.shapes, SHAPES)
        _check_names("backends", self.backends, BACKENDS)
        _check_names("formats", self.formats, WEIGHT_FORMATS)
        _check_names("torch_dtypes", self.torch_dtypes, TORCH_DTYPES, allow_empty=True)
        for name in ("threads", "prompt_lengths"):
            for value in getattr(self, name):
                _check_positive(name, value)
        for name in ("generate_length", "repetitions", "bandwidth_mib"):
            _check_positive(name, getattr(self, name))
        if self.kv_type not in KV_TYPES:
            raise ConfigError(f"bench config field 'kv_type' must be one of {KV_TYPES}, got {self.kv_type!r}",
                              fix="pass --kv-type f16 or f32")
        for name in ("memory_limit_gb", "timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"bench config field {name!r} must be a positive number, got {value!r}")
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"bench config version {self.version!r} is not supported (this edgekit writes "
                              f"{CONFIG_VERSION})", fix="re-run the benchmark with this edgekit")

    @property
    def context_length(self) -> int:
        """KV-cache length every back end is opened with: the longest prompt or generation, plus warm-up room."""
        return max(max(self.prompt_lengths), self.generate_length) + 8

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> BenchConfig:
        """A named preset ("full", "quick", "tiny") with some fields replaced (None values are ignored)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown bench preset {name!r}; presets: {sorted(PRESETS)}",
                              fix=f"pass --preset with one of {sorted(PRESETS)}")
        values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (lists, strings), so a report equals itself after a JSON round trip."""
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        data["output_dir"], data["work_dir"] = str(self.output_dir), str(self.work_dir)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown bench config fields {unknown}; valid fields are {sorted(known)}")
        return cls(**data)


def _check_names(field_name: str, values: tuple, valid, allow_empty: bool = False) -> None:
    if not values and not allow_empty:
        raise ConfigError(f"bench config field {field_name!r} is empty", fix=f"pick from {sorted(valid)}")
    for value in values:
        if value not in valid:
            raise ConfigError(f"bench config field {field_name!r}: unknown value {value!r}; valid: {sorted(valid)}",
                              fix=f"pick from {sorted(valid)}")
    if len(set(values)) != len(values):
        raise ConfigError(f"bench config field {field_name!r} repeats a value: {list(values)}")


def _check_positive(field_name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"bench config field {field_name!r} must hold positive integers, got {value!r}")
