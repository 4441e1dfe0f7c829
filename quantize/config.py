"""`QuantizeConfig`: the whole recipe of one quantization run, stored in the output file."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import ConfigError
from edgekit.formats import FORMATS, PER_CHANNEL, PER_TENSOR, get_format
from edgekit.model.config import ACT_QUANTS
from edgekit.quantize.scale_search import SCALE_SEARCHES

CONFIG_VERSION = 1
TERNARY_METHODS = ("absmean", "gptq")
INT_METHODS = ("rtn", "gptq")
ROTATIONS = ("hadamard",)
MIN_CALIBRATION_TOKENS = 128


class JsonConfig:
    """The JSON round trip every quantization config shares: `to_dict`/`to_json`, and `from_dict`/`from_json`
    that refuse unknown fields and non-objects, naming the config by `config_name`."""

    config_name = "config"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.config_name} fields {unknown}; valid: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cls.config_name} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.config_name} must be a JSON object")
        return cls.from_dict(data)


@dataclass
class QuantizeConfig(JsonConfig):
    """How to turn a float (or natively ternary) model into a packed one.

    - `format` / `method` / `group_size`: the linear weights (wq ... w3). `group_size` None takes the
      format's default: per tensor for ternary (BitNet's absmean), 32 for int2/3/4 (Q4_0's block),
      per channel for int8.
    - `embedding_format`, `output_format`: `tok_embeddings` and an untied `output` (llama.cpp keeps these
      at higher precision too: `--token-embedding-type`, `--output-tensor-type`).
    - `overrides`: regex over canonical tensor names (`layers.0.w2`, ...) -> format, applied in order, as
      llama.cpp's `--tensor-type`; `keep_float`: regexes of linear weights kept in f16.
    - `act_quant`: activations of the packed model ("none" or "int8_absmax"); None keeps the source's.
    - `rotate`: "hadamard" folds the norms and rotates the residual stream by a randomized Hadamard matrix
      (QuaRot) before quantizing, seeded by `rotate_seed`; None leaves the model as it is. A tied embedding
      becomes an untied `output` in `output_format`.
    - GPTQ (`method="gptq"`, for the block linears in `format`; embeddings and output use RTN/absmean):
      calibration text from `calib_path` (or `calib_text` passed to `quantize_model`), documents split at
      `<|endoftext|>` starting at document `calib_first_document`, each BOS-prefixed and cut to
      `calib_seq_len` tokens (None: the model's context), at most `calib_tokens` tokens in all;
      `gptq_block_size` columns per lazy batch update, `gptq_damp` the fraction of the mean Hessian
      diagonal added to it, `act_order` quantizes columns by decreasing Hessian diagonal (static groups).
    - `scale_search`: "none" fits each group's grid from its extremes (ggml's Q4_0 rule); "mse" searches
      the float16 scale (and zero point) of each group that minimises the squared rounding error
      (`scale_search.py`), weighted by diag(X^T X) under GPTQ. Codes and layout stay the same. It applies
      to the integer tensors in `format` (not to embeddings, the output or overrides).
    """

    config_name = "quantize config"
    format: str = "ek_t2"
    method: str = "absmean"
    group_size: int | None = None
    embedding_format: str = "f16"
    output_format: str = "ek_i8"
    overrides: dict[str, str] = field(default_factory=dict)
    keep_float: list[str] = field(default_factory=list)
    act_quant: str | None = None
    rotate: str | None = None
    rotate_seed: int = 0
    calib_path: str | None = None
    calib_first_document: int = 0
    calib_tokens: int = 8192
    calib_seq_len: int | None = None
    gptq_block_size: int = 128
    gptq_damp: float = 0.01
    act_order: bool = False
    scale_search: str = "none"
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"quantize config version {self.version} is not supported (expected {CONFIG_VERSION})")
        for fmt in (self.format, self.embedding_format, self.output_format, *self.overrides.values()):
            get_format(fmt)
        weight_fmt = get_format(self.format)
        methods = TERNARY_METHODS if weight_fmt.kind == "ternary" else INT_METHODS if weight_fmt.kind == "int" else ()
        if weight_fmt.kind != "float" and self.method not in methods:
            raise ConfigError(f"method {self.method!r} cannot produce format {self.format}; use one of {methods}")
        if self.group_size is not None and self.group_size not in weight_fmt.group_sizes:
            raise ConfigError(f"format {self.format} does not support group size {self.group_size}; supported: "
                              f"{list(weight_fmt.group_sizes)} (-1 per tensor, 0 per channel)")
        for pattern in (*self.overrides, *self.keep_float):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"bad tensor-name pattern {pattern!r}: {exc}") from None
        if self.act_quant is not None and self.act_quant not in ACT_QUANTS:
            raise ConfigError(f"act_quant {self.act_quant!r} is not one of {ACT_QUANTS}")
        self.validate_rotation()
        self.validate_gptq()
        self.validate_scale_search(weight_fmt.kind)

    def validate_scale_search(self, kind: str) -> None:
        if self.scale_search not in SCALE_SEARCHES:
            raise ConfigError(f"scale_search {self.scale_search!r} is not one of {SCALE_SEARCHES}")
        if self.scale_search != "none" and (kind != "int" or self.default_group_size(self.format) == PER_TENSOR):
            raise ConfigError(f"scale_search {self.scale_search!r} applies to integer formats with groups or "
                              f"channels, not {self.format} with group size {self.default_group_size(self.format)}",
                              fix="use scale_search='none'")

    def validate_rotation(self) -> None:
        if self.rotate is not None and self.rotate not in ROTATIONS:
            raise ConfigError(f"rotate {self.rotate!r} is not supported; use one of {ROTATIONS} or None")
        check_int("rotate_seed", self.rotate_seed, minimum=0)

    def validate_gptq(self) -> None:
        check_int("calib_first_document", self.calib_first_document, minimum=0)
        check_int("calib_tokens", self.calib_tokens, minimum=MIN_CALIBRATION_TOKENS)
        if self.calib_seq_len is not None:
            check_int("calib_seq_len", self.calib_seq_len, minimum=2)
        check_int("gptq_block_size", self.gptq_block_size, minimum=1)
        damp = self.gptq_damp
        if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not 0 < damp <= 1:
            raise ConfigError(f"gptq_damp must be a number in (0, 1] (a fraction of the mean Hessian diagonal), "
                              f"got {damp!r}", fix="the GPTQ paper uses 0.01")
        if not isinstance(self.act_order, bool):
            raise ConfigError(f"act_order must be true or false, got {self.act_order!r}")
        if self.calib_path is not None and not isinstance(self.calib_path, str):
            raise ConfigError(f"calib_path must be a path string, got {self.calib_path!r}")
        if self.method != "gptq" and (self.act_order or self.calib_path is not None):
            raise ConfigError(f"act_order and calib_path only apply to method 'gptq', not {self.method!r}",
                              fix="set method='gptq' or drop them")

    def default_group_size(self, fmt_name: str) -> int:
        fmt = get_format(fmt_name)
        if fmt_name == self.format and self.group_size is not None:
            return self.group_size
        if fmt.kind == "ternary":
            return PER_TENSOR
        if fmt.kind == "float":
            return PER_TENSOR
        return PER_CHANNEL if fmt.bits == 8 else 32

    def format_for(self, name: str) -> str:
        """Target format of one canonical tensor name (linear weights, embeddings and output)."""
        for pattern, fmt in self.overrides.items():
            if re.fullmatch(pattern, name):
                return fmt
        if name == "tok_embeddings":
            return self.embedding_format
        if name == "output":
            return self.output_format
        if any(re.fullmatch(p, name) for p in self.keep_float):
            return "f16"
        return self.format



def check_int(name: str, value: Any, minimum: int) -> None:
    """Raise `ConfigError` unless `value` is an integer >= `minimum` (booleans are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


ALL_FORMATS = tuple(sorted(FORMATS))
