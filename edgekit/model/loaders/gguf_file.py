"""GGUF files of llama.cpp's `llama` and `bitnet` architectures, read with the `gguf` package.

Tensor types: F32, F16 and BF16 matrices are read as float32 (lazily, through gguf-py's reference
`gguf.quants.dequantize`); TQ2_0, TQ1_0, Q4_0 and Q8_0 matrices become edgekit packed tensors holding the
same integers and fp16 block scales (`gguf_packed.py`: ek_t2 / ek_t1 / ek_i4 / ek_i8, nothing requantized);
Q4_K, Q5_K and Q6_K are accepted for `token_embd.weight` / `output.weight` only (what llama.cpp's quantizer
picks for them) and read as float32 through `gguf.quants.dequantize`; any other type (K-quants elsewhere,
IQ types, ...) is rejected by tensor name with an `UnsupportedModelError`.

Architectures (metadata keys are prefixed with the architecture's name, `llama.` or `bitnet.`):

- `llama`: llama.cpp's converter permutes q/k rows into adjacent-pair RoPE order; they are permuted back
  to the canonical rotate-half order here.
- `bitnet` (llama.cpp's LLM_ARCH_BITNET): NEOX RoPE, so q/k are already rotate-half; the sub-norms
  `attn_sub_norm` / `ffn_sub_norm` become `ModelConfig.sub_norms`; SiLU gate; activations are BitNet's
  per-token int8 (`act_quant="int8_absmax"`) unless the file says otherwise.

`edgekit.act_quant`, written by `edgekit.export.gguf_writer`, records the activation quantization the
model was exported with (llama.cpp ignores the key); without it `llama` files load with float activations.
The vocabulary embedded in the file becomes the tokenizer.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ConfigError, CorruptCheckpointError, EdgekitError, TokenizerError, UnsupportedModelError
from edgekit.model.config import ModelConfig, RopeConfig
from edgekit.model.lazy import LazyArray
from edgekit.formats import QuantizedTensor
from edgekit.model.loaders.common import interleaved_to_half
from edgekit.model.loaders.gguf_packed import PACKED_TYPES, packed_from_ggml
from edgekit.model.model import Model
from edgekit.model.tokenizer import Tokenizer, build_gpt2_bpe_tokenizer, build_spm_bpe_tokenizer

GGUF_MAGIC = b"GGUF"
GGUF_ARCHITECTURES = ("llama", "bitnet")
ACT_QUANT_KEY = "edgekit.act_quant"
GGUF_TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "TQ1_0", "TQ2_0")
# K-quants llama.cpp's quantizer picks for the embedding and output (and `edgekit export gguf
# --embedding-output-types llama.cpp` takes over): read as float32 through gguf-py's dequantize, there only
EMBEDDING_OUTPUT_TYPES = ("Q4_K", "Q5_K", "Q6_K")
EMBEDDING_OUTPUT_TENSORS = ("token_embd.weight", "output.weight")

_GLOBAL = {"token_embd.weight": "tok_embeddings", "output_norm.weight": "norm", "output.weight": "output",
           "rope_freqs.weight": "rope_freqs"}
_LAYER = {"attn_norm.weight": "attn_norm", "attn_q.weight": "wq", "attn_k.weight": "wk", "attn_v.weight": "wv",
          "attn_output.weight": "wo", "attn_q.bias": "bq", "attn_k.bias": "bk", "attn_v.bias": "bv",
          "attn_output.bias": "bo", "ffn_norm.weight": "ffn_norm", "ffn_gate.weight": "w1",
          "ffn_up.weight": "w3", "ffn_down.weight": "w2"}
_BITNET_LAYER = {"attn_sub_norm.weight": "attn_sub_norm", "ffn_sub_norm.weight": "ffn_sub_norm"}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(.+)$")


def is_gguf(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def load_gguf(path: Path) -> Model:
    reader = _open(path)
    fields = _fields(reader, path)
    arch = fields.get("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise UnsupportedModelError(f"GGUF architecture {arch!r} is not supported; supported: {GGUF_ARCHITECTURES}",
                                    path=path)
    entries = _entries(reader, arch, path)
    try:
        config = _config(fields, arch, set(entries), path)
        tokenizer = _tokenizer(fields, path)
    except (TypeError, ValueError) as exc:  # a metadata value of the wrong type
        raise CorruptCheckpointError(f"metadata value of the wrong type ({exc})", path=path) from None
    # llama's q/k rows are in adjacent-pair order; bitnet's NEOX RoPE keeps them rotate-half
    heads = {"wq": config.n_heads, "bq": config.n_heads, "wk": config.n_kv_heads, "bk": config.n_kv_heads} \
        if arch == "llama" else {}
    tensors = {name: _tensor(t, name, heads.get(name.rsplit(".", 1)[-1]), path) for name, t in entries.items()}
    return Model(config=config, tensors=tensors, tokenizer=tokenizer, source=path, source_format="gguf",
                 metadata={"gguf.tensor_types": ",".join(sorted({t.tensor_type.name for t in reader.tensors}))})


def _open(path: Path):
    from gguf import GGUFReader

    _check_header(path)
    try:
        return GGUFReader(path, "r")
    except Exception as exc:  # gguf-py raises ValueError, struct/numpy errors and more on damaged files
        raise CorruptCheckpointError(f"not a readable GGUF file ({type(exc).__name__}: {exc})", path=path,
                                     fix="re-download or re-convert the file") from None


def _check_header(path: Path) -> None:
    """Reject headers whose counts cannot fit in the file before gguf-py tries to allocate them."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        raise CorruptCheckpointError("file is too short or lacks the GGUF magic", path=path)
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    if version not in (2, 3):
        raise UnsupportedModelError(f"GGUF version {version} is not supported (2 or 3)", path=path)
    # Every tensor info takes at least 8+4+8+4+8 bytes and every key-value at least 8+1+4+1.
    if n_tensors * 32 + n_kv * 14 > size:
        raise CorruptCheckpointError(f"header claims {n_tensors} tensors and {n_kv} metadata entries, more "
                                     f"than a {size}-byte file can hold", path=path)


def _fields(reader, path: Path) -> dict[str, Any]:
    out = {}
    try:
        for key, field in reader.fields.items():
            out[key] = field.contents()
    except Exception as exc:
        raise CorruptCheckpointError(f"unreadable metadata ({type(exc).__name__}: {exc})", path=path) from None
    return out


def _entries(reader, arch: str, path: Path) -> dict:
    """Canonical name -> gguf-py tensor, rejecting unknown names and unsupported types by name."""
    entries = {}
    for t in reader.tensors:
        name = _canonical(t.name, arch)
        if name is None:
            raise UnsupportedModelError(f"unexpected tensor {t.name!r} for the {arch} architecture", path=path)
        allowed = GGUF_TENSOR_TYPES + (EMBEDDING_OUTPUT_TYPES if t.name in EMBEDDING_OUTPUT_TENSORS else ())
        if t.tensor_type.name not in allowed:
            raise UnsupportedModelError(f"tensor {t.name!r} has type {t.tensor_type.name}; supported: "
                                        f"{GGUF_TENSOR_TYPES} (and {EMBEDDING_OUTPUT_TYPES} for "
                                        f"{' / '.join(EMBEDDING_OUTPUT_TENSORS)}, read as float32)", path=path,
                                        fix="re-quantize with one of the supported types")
        entries[name] = t
    return entries


def _tensor(t, name: str, rope_heads: int | None, path: Path) -> np.ndarray | LazyArray | QuantizedTensor:
    """Float matrices stay `LazyArray`s (read on use), block-quantized ones become packed tensors; vectors are
    read now. q/k rows (and biases) are permuted back from llama.cpp's adjacent-pair order when `rope_heads`."""
    from gguf import quants

    shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dims fastest-first
    if len(shape) == 2 and t.tensor_type.name in PACKED_TYPES:
        return _packed(t, name, shape, rope_heads, path)

    def read() -> np.ndarray:
        array = np.asarray(quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        return _unpermute(array, rope_heads, name, path) if rope_heads else array

    if len(shape) > 1:
        if rope_heads and shape[0] % (2 * rope_heads):
            raise CorruptCheckpointError(f"tensor {name!r} has {shape[0]} rows, not a multiple of "
                                         f"2 x {rope_heads} heads", path=path)
        return LazyArray(shape, read, path, name)
    try:
        return read().reshape(-1)
    except EdgekitError:
        raise
    except Exception as exc:
        raise CorruptCheckpointError(f"tensor {t.name!r} cannot be read ({type(exc).__name__}: {exc})",
                                     path=path) from None


def _packed(t, name: str, shape: tuple[int, int], rope_heads: int | None, path: Path) -> QuantizedTensor:
    if rope_heads and shape[0] % (2 * rope_heads):
        raise CorruptCheckpointError(f"tensor {name!r} has {shape[0]} rows, not a multiple of "
                                     f"2 x {rope_heads} heads", path=path)
    try:
        tensor = packed_from_ggml(np.asarray(t.data), t.tensor_type.name, shape, path, t.name)
    except EdgekitError:
        raise
    except Exception as exc:
        raise CorruptCheckpointError(f"tensor {t.name!r} cannot be read ({type(exc).__name__}: {exc})",
                                     path=path) from None
    if rope_heads:  # a row permutation: packing is per row, so the packed rows move as they are
        tensor = tensor.take_rows(interleaved_to_half(np.arange(shape[0]), rope_heads))
    return tensor


def _canonical(name: str, arch: str = "llama") -> str | None:
    if name in _GLOBAL:
        return _GLOBAL[name]
    match = _BLOCK_RE.match(name)
    layer = {**_LAYER, **_BITNET_LAYER} if arch == "bitnet" else _LAYER
    if match and match.group(2) in layer:
        return f"layers.{int(match.group(1))}.{layer[match.group(2)]}"
    return None


def _unpermute(weight: np.ndarray, n_heads: int, name: str, path: Path) -> np.ndarray:
    if weight.shape[0] % (2 * n_heads):
        raise CorruptCheckpointError(f"tensor {name!r} has {weight.shape[0]} rows, not a multiple of "
                                     f"2 x {n_heads} heads", path=path)
    return interleaved_to_half(weight, n_heads)


def _int(fields: dict, key: str, path: Path, default: int | None = None) -> int:
    value = fields.get(key, default)
    if isinstance(value, (list, np.ndarray)):  # per-layer arrays are only supported when uniform
        values = set(int(v) for v in value)
        if len(values) != 1:
            raise UnsupportedModelError(f"per-layer values for {key!r} are not supported", path=path)
        value = values.pop()
    if value is None:
        raise ConfigError(f"GGUF metadata has no {key!r}", path=path)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"GGUF metadata {key!r} = {value!r} is not an integer", path=path) from None


def _config(fields: dict, arch: str, tensors: set[str], path: Path) -> ModelConfig:
    a = arch + "."
    dim = _int(fields, a + "embedding_length", path)
    n_heads = _int(fields, a + "attention.head_count", path)
    head_dim = _int(fields, a + "attention.key_length", path, dim // max(n_heads, 1))
    vocab = len(fields.get("tokenizer.ggml.tokens") or []) or _int(fields, a + "vocab_size", path)
    rope_kind = fields.get(a + "rope.scaling.type", "none")
    if rope_kind not in ("none", "linear"):
        raise UnsupportedModelError(f"GGUF rope scaling {rope_kind!r} is not supported", path=path)
    try:
        rope = RopeConfig(theta=float(fields.get(a + "rope.freq_base", 10000.0)),
                          scaling="linear" if rope_kind == "linear" else "default",
                          factor=float(fields.get(a + "rope.scaling.factor", 1.0)))
        return ModelConfig(
            architecture=arch, dim=dim, hidden_dim=_int(fields, a + "feed_forward_length", path),
            n_layers=_int(fields, a + "block_count", path), n_heads=n_heads,
            n_kv_heads=_int(fields, a + "attention.head_count_kv", path, n_heads), vocab_size=vocab,
            max_seq_len=_int(fields, a + "context_length", path, 2048), head_dim=head_dim,
            norm_eps=float(fields.get(a + "attention.layer_norm_rms_epsilon", 1e-5)), rope=rope,
            tie_embeddings="output" not in tensors, qkv_bias="layers.0.bq" in tensors,
            o_bias="layers.0.bo" in tensors, sub_norms="layers.0.attn_sub_norm" in tensors,
            act_quant=str(fields.get(ACT_QUANT_KEY, "int8_absmax" if arch == "bitnet" else "none")))
    except ConfigError as exc:
        raise ConfigError(str(exc), path=path) from None


def _tokenizer(fields: dict, path: Path) -> Tokenizer:
    kind = fields.get("tokenizer.ggml.model")
    tokens = fields.get("tokenizer.ggml.tokens")
    if not tokens:
        raise TokenizerError("the GGUF file embeds no vocabulary (tokenizer.ggml.tokens)", path=path)
    types = fields.get("tokenizer.ggml.token_type")
    bos = fields.get("tokenizer.ggml.bos_token_id")
    eos = fields.get("tokenizer.ggml.eos_token_id")
    eos_ids = [int(eos)] if eos is not None else []
    add_bos = bool(fields.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    common = dict(bos_id=int(bos) if bos is not None else None, eos_ids=eos_ids, add_bos=add_bos, source=str(path))
    if kind == "llama":
        scores = fields.get("tokenizer.ggml.scores")
        if scores is None:
            raise TokenizerError("a 'llama' (sentencepiece) vocabulary needs tokenizer.ggml.scores", path=path)
        unk = fields.get("tokenizer.ggml.unknown_token_id")
        return build_spm_bpe_tokenizer(list(tokens), [float(s) for s in scores], list(types) if types else None,
                                       unk_id=int(unk) if unk is not None else None,
                                       add_space_prefix=bool(fields.get("tokenizer.ggml.add_space_prefix", True)),
                                       **common)
    if kind == "gpt2":
        merges = fields.get("tokenizer.ggml.merges")
        if not merges:
            raise TokenizerError("a 'gpt2' (BPE) vocabulary needs tokenizer.ggml.merges", path=path)
        return build_gpt2_bpe_tokenizer(list(tokens), list(merges), list(types) if types else None,
                                        pre=str(fields.get("tokenizer.ggml.pre", "default")), **common)
    raise TokenizerError(f"GGUF tokenizer model {kind!r} is not supported (llama, gpt2)", path=path)
