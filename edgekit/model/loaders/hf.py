"""Hugging Face checkpoint directories: config.json + (sharded) safetensors + tokenizer.

Supported `model_type`s: llama (Llama 2/3, SmolLM, TinyLlama), qwen2, qwen3 and bitnet. Tensors may be
F32, F16 or BF16; all become float32. BitNet checkpoints with transformers' `quantization_config`
(`quant_method: bitnet`) load as ternary models (`BITNET_QUANT_MODES`): BitNet b1.58 2B4T's packed
uint8 weights with `weight_scale`, or float master weights ternarized on load (absmean) in "online" mode.
"""

from __future__ import annotations

import functools
import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import (ConfigError, CorruptCheckpointError, ModelNotFoundError, ShapeMismatchError,
                            UnsupportedModelError)
from edgekit.model.config import ModelConfig, RopeConfig
from edgekit.model.loaders.common import read_json, require_file
from edgekit.model.lazy import LazyArray, materialize
from edgekit.model.model import Model
from edgekit.model.ternary import absmean_ternarize, unpack_hf_bitnet
from edgekit.model.tokenizer import SentencePieceTokenizer, Tokenizer, load_tokenizer_json

HF_MODEL_TYPES = ("llama", "qwen2", "qwen3", "bitnet")

_LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm",
    "self_attn.q_proj.weight": "wq", "self_attn.k_proj.weight": "wk", "self_attn.v_proj.weight": "wv",
    "self_attn.o_proj.weight": "wo",
    "self_attn.q_proj.bias": "bq", "self_attn.k_proj.bias": "bk", "self_attn.v_proj.bias": "bv",
    "self_attn.o_proj.bias": "bo",
    "self_attn.q_norm.weight": "q_norm", "self_attn.k_norm.weight": "k_norm",
    "self_attn.attn_sub_norm.weight": "attn_sub_norm",
    "post_attention_layernorm.weight": "ffn_norm",
    "mlp.gate_proj.weight": "w1", "mlp.up_proj.weight": "w3", "mlp.down_proj.weight": "w2",
    "mlp.ffn_sub_norm.weight": "ffn_sub_norm",
}
_LAYER_TENSORS.update({k.replace(".weight", ".weight_scale"): v + ".weight_scale"
                       for k, v in list(_LAYER_TENSORS.items()) if v in ("wq", "wk", "wv", "wo", "w1", "w2", "w3")})
# (linear_class, quantization_mode) of transformers' BitNet quantizer -> how the weights are stored.
BITNET_QUANT_MODES = {("bitlinear", "offline"): "packed", ("autobitlinear", "offline"): "trits",
                      ("autobitlinear", "online"): "master"}
_GLOBAL_TENSORS = {"model.embed_tokens.weight": "tok_embeddings", "model.norm.weight": "norm",
                   "lm_head.weight": "output"}
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_IGNORED = re.compile(r"rotary_emb\.inv_freq$")


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load_hf(path: Path) -> Model:
    raw = read_json(path / "config.json")
    config = parse_hf_config(raw, path / "config.json")
    tensors = _read_tensors(path, config)
    mode = bitnet_quant_mode(raw, path / "config.json")
    if mode is not None:
        _ternarize(tensors, config, mode, path)
    tokenizer = _load_tokenizer(path, raw)
    return Model(config=config, tensors=tensors, tokenizer=tokenizer, source=path, source_format="hf")


def _get(raw: dict, key: str, kind: type | tuple, source: Path, default: Any = ...) -> Any:
    if key not in raw or raw[key] is None:
        if default is ...:
            raise ConfigError(f"config.json has no {key!r}", path=source,
                              fix="use the config.json that came with the checkpoint")
        return default
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"config field {key!r} = {value!r} has the wrong type", path=source)
    return value


def _rope(raw: dict, source: Path) -> RopeConfig:
    """transformers 5 `rope_parameters` or the older `rope_theta` + `rope_scaling`."""
    params = raw.get("rope_parameters") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"rope_parameters must be an object, got {params!r}", path=source)
    scaling = raw.get("rope_scaling") or {}
    if not isinstance(scaling, dict):
        raise ConfigError(f"rope_scaling must be an object, got {scaling!r}", path=source)
    merged = {**scaling, **params}
    theta = merged.get("rope_theta", raw.get("rope_theta", 10000.0))
    kind = merged.get("rope_type", merged.get("type", "default"))
    if kind not in ("default", "linear", "llama3"):
        raise UnsupportedModelError(f"rope type {kind!r} is not supported (supported: default, linear, llama3)",
                                    path=source)
    try:
        return RopeConfig(theta=float(theta), scaling=kind, factor=float(merged.get("factor", 1.0)),
                          low_freq_factor=float(merged.get("low_freq_factor", 1.0)),
                          high_freq_factor=float(merged.get("high_freq_factor", 4.0)),
                          original_max_position=int(merged.get("original_max_position_embeddings", 8192)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad rope parameters {merged!r}: {exc}", path=source) from None


def parse_hf_config(raw: dict, source: Path) -> ModelConfig:
    model_type = raw.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise UnsupportedModelError(f"model_type {model_type!r} is not supported; supported: {HF_MODEL_TYPES}",
                                    path=source)
    _reject_unsupported(raw, source)
    quantized = bitnet_quant_mode(raw, source) is not None
    n_heads = _get(raw, "num_attention_heads", int, source)
    bias = bool(raw.get("attention_bias", False))
    default_act = "relu2" if model_type == "bitnet" else "silu"
    act = raw.get("hidden_act", default_act)
    if act not in ("silu", "relu2"):
        raise UnsupportedModelError(f"hidden_act {act!r} is not supported (silu, relu2)", path=source)
    try:
        return ModelConfig(
            architecture=model_type,
            dim=_get(raw, "hidden_size", int, source),
            hidden_dim=_get(raw, "intermediate_size", int, source),
            n_layers=_get(raw, "num_hidden_layers", int, source),
            n_heads=n_heads,
            n_kv_heads=_get(raw, "num_key_value_heads", int, source, n_heads),
            vocab_size=_get(raw, "vocab_size", int, source),
            max_seq_len=_get(raw, "max_position_embeddings", int, source, 2048),
            head_dim=_get(raw, "head_dim", int, source, 0),
            norm_eps=float(_get(raw, "rms_norm_eps", (int, float), source, 1e-6)),
            rope=_rope(raw, source),
            tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
            qkv_bias=True if model_type == "qwen2" else bias,
            o_bias=False if model_type == "qwen2" else bias,
            qk_norm=model_type == "qwen3",
            sub_norms=model_type == "bitnet",
            activation=act,
            ternary_weights=quantized,
            act_quant="int8_absmax" if quantized else "none",
        )
    except ConfigError as exc:
        raise ConfigError(str(exc), path=source) from None


def _reject_unsupported(raw: dict, source: Path) -> None:
    if raw.get("mlp_bias"):
        raise UnsupportedModelError("mlp_bias=true is not supported", path=source)
    if raw.get("use_sliding_window"):
        raise UnsupportedModelError("sliding-window attention (use_sliding_window=true) is not supported",
                                    path=source)
    if raw.get("partial_rotary_factor", 1.0) != 1.0:
        raise UnsupportedModelError("partial_rotary_factor other than 1.0 is not supported", path=source)


def bitnet_quant_mode(raw: dict, source: Path) -> str | None:
    """None for float checkpoints; "packed", "trits" or "master" for transformers' BitNet quantization."""
    qc = raw.get("quantization_config")
    if not qc:
        return None
    method = qc.get("quant_method") if isinstance(qc, dict) else qc
    if method != "bitnet" or raw.get("model_type") != "bitnet":
        raise UnsupportedModelError(
            f"pre-quantized Hugging Face checkpoints (quantization_config {method!r}) are not loaded; only "
            "BitNet's own (quant_method 'bitnet' on model_type bitnet) is",
            path=source, fix="use the float (bf16/f16/f32) release of the model, or its GGUF")
    key = (qc.get("linear_class", "bitlinear"), qc.get("quantization_mode", "offline"))
    if key not in BITNET_QUANT_MODES or qc.get("use_rms_norm"):
        raise UnsupportedModelError(f"BitNet quantization_config {qc!r} is not supported; supported "
                                    f"(linear_class, quantization_mode): {sorted(BITNET_QUANT_MODES)} "
                                    "without use_rms_norm", path=source)
    return BITNET_QUANT_MODES[key]


def _ternarize(tensors: dict[str, np.ndarray], config: ModelConfig, mode: str, path: Path) -> None:
    """Turn each linear weight into exact trits plus `<name>.scale` (the factor applied after the matmul)."""
    for i in range(config.n_layers):
        for kind in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"):
            name = f"layers.{i}.{kind}"
            weight = materialize(tensors.get(name))
            if weight is None:
                continue  # reported as missing by Model validation
            weight_scale = tensors.pop(name + ".weight_scale", None)
            if mode == "master":
                tensors[name], scale = absmean_ternarize(weight)
            elif weight_scale is None or weight_scale.size != 1:
                raise ShapeMismatchError(f"tensor {name!r} needs a one-element weight_scale", path=path)
            elif mode == "packed":
                if weight.dtype != np.uint8:
                    raise ShapeMismatchError(f"packed BitNet tensor {name!r} must be uint8, got {weight.dtype}",
                                             path=path)
                tensors[name] = unpack_hf_bitnet(weight, path, name)
                scale = np.float32(1.0) / np.float32(weight_scale.reshape(()))  # BitLinear divides by it
            else:  # "trits": AutoBitLinear offline multiplies by weight_scale
                scale = np.float32(weight_scale.reshape(()))
            tensors[name + ".scale"] = np.array(scale, dtype=np.float32)


def _shard_files(path: Path) -> list[Path]:
    single = path / "model.safetensors"
    index = path / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CorruptCheckpointError("index has no 'weight_map' object", path=index)
        files = sorted({str(v) for v in weight_map.values()})
        for name in files:
            require_file(path / name, f"shard {name!r} listed in model.safetensors.index.json")
        return [path / name for name in files]
    raise ModelNotFoundError("no model.safetensors or model.safetensors.index.json in the directory", path=path,
                             fix="download the safetensors weights (pytorch .bin weights are not read)")


def _read_tensors(path: Path, config: ModelConfig) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    for shard in _shard_files(path):
        for hf_name, array in read_safetensors(shard).items():
            name = canonical_name(hf_name)
            if name is None:
                if _IGNORED.search(hf_name):
                    continue
                raise ShapeMismatchError(f"unexpected tensor {hf_name!r} for model_type {config.architecture}",
                                         path=shard)
            if name in tensors:
                raise CorruptCheckpointError(f"tensor {hf_name!r} appears in more than one shard", path=shard)
            tensors[name] = array
    if config.tie_embeddings:
        tensors.pop("output", None)  # some tied checkpoints store lm_head anyway
    return tensors


def canonical_name(hf_name: str) -> str | None:
    if hf_name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[hf_name]
    match = _LAYER_RE.match(hf_name)
    if match and match.group(2) in _LAYER_TENSORS:
        return f"layers.{int(match.group(1))}.{_LAYER_TENSORS[match.group(2)]}"
    return None


_SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "U8": "u1"}  # U8: packed BitNet weights


def read_safetensors(path: Path) -> dict[str, np.ndarray | LazyArray]:
    """The tensors of a safetensors file: matrices as `LazyArray`s, the rest read now, all float32
    (U8 tensors, packed BitNet trits, stay uint8).

    safetensors validates the header; the data is then read at the header's offsets, which also covers
    BF16, which safetensors' numpy API cannot return (a bf16 value is the top half of a float32).
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            names = list(handle.keys())
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
    except Exception as exc:  # safetensors raises SafetensorError / OSError / others on damaged files
        raise CorruptCheckpointError(f"not a readable safetensors file ({exc})", path=path,
                                     fix="re-download the file") from None
    out: dict[str, np.ndarray | LazyArray] = {}
    for name in names:
        info = header[name]
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise UnsupportedModelError(f"tensor {name!r} has dtype {info['dtype']}; supported: "
                                        f"{sorted(_SAFETENSORS_DTYPES)}", path=path)
        read = functools.partial(_read_entry, path, 8 + header_len, info)
        if len(info["shape"]) == 2 and info["dtype"] != "U8":
            out[name] = LazyArray(tuple(info["shape"]), read, path, name)
        else:
            try:
                out[name] = read()
            except (OSError, ValueError) as exc:
                raise CorruptCheckpointError(f"tensor {name!r} cannot be read ({exc})", path=path) from None
    return out


def _read_entry(path: Path, data_start: int, info: dict) -> np.ndarray:
    """One tensor at its header offsets, as float32 (uint8 for U8)."""
    dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
    start, end = info["data_offsets"]
    count = (end - start) // dtype.itemsize
    raw = np.fromfile(path, dtype=dtype, count=count, offset=data_start + start)
    if info["dtype"] == "U8":
        return raw.reshape(info["shape"])
    if info["dtype"] == "BF16":
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32).reshape(info["shape"])


def _token_id(value: Any) -> list[int]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _load_tokenizer(path: Path, raw: dict) -> Tokenizer:
    gen = read_json(path / "generation_config.json") if (path / "generation_config.json").is_file() else {}
    tok_cfg = read_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").is_file() else {}
    bos = (_token_id(gen.get("bos_token_id")) or _token_id(raw.get("bos_token_id")) or [None])[0]
    eos = _token_id(gen.get("eos_token_id")) or _token_id(raw.get("eos_token_id"))
    add_bos = tok_cfg.get("add_bos_token") if isinstance(tok_cfg.get("add_bos_token"), bool) else None
    if (path / "tokenizer.json").is_file():
        tok = load_tokenizer_json(path / "tokenizer.json", bos_id=bos, eos_ids=eos, add_bos=add_bos)
    elif (path / "tokenizer.model").is_file():
        tok = SentencePieceTokenizer(path / "tokenizer.model", bos_id=bos, eos_ids=eos,
                                     add_bos=True if add_bos is None else add_bos)
    else:
        raise ModelNotFoundError("no tokenizer.json or tokenizer.model in the checkpoint directory", path=path,
                                 fix="copy the tokenizer files from the model's release into the directory")
    return tok
