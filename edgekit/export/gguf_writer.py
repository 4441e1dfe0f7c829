"""Write a `Model` (float or packed) as a llama-architecture GGUF file that llama.cpp runs on its own.

Tensor types follow the packed format without requantizing wherever the bytes map exactly:

| edgekit tensor                              | GGUF type | how                                            |
|---------------------------------------------|-----------|------------------------------------------------|
| ek_t2 / ek_t1, rows a multiple of 256       | TQ2_0 / TQ1_0 | trits kept; scale stored as each 256-block's fp16 d |
| ek_i4, per channel or group 32/64/128       | Q4_0      | codes kept; each 32-block gets its group's fp16 scale |
| ek_i8, per channel or group 32              | Q8_0      | codes kept; each 32-block gets its group's fp16 scale |
| f16 / f32 and unpacked float tensors        | F16 / F32 | as is (`float_type` for unpacked matrices)       |

Ternary blocks are written through gguf-py's reference quantizer fed with trit x scale values: with the
block's max |x| equal to its scale, ggml's TQ quantizer recovers the trits exactly and stores d =
fp16(scale), so the bytes are ggml's own; the fp16 rounding of the scale is the only change and is
reported. Other formats (int2/int3, zero points, other group sizes) cannot be represented exactly: they
are refused with the alternatives listed, unless `requantize` names a GGUF type to requantize them to
(the error is then measured and reported). Matrices whose rows do not fit the type's block fall back to
F16 and are listed in the summary. q/k rows are permuted to llama.cpp's RoPE layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import ConfigError, UnsupportedModelError
from edgekit.fileio import atomic_path
from edgekit.formats import PER_TENSOR, QuantizedTensor
from edgekit.model.lazy import materialize
from edgekit.model.loaders.common import half_to_interleaved
from edgekit.model.model import Model
from edgekit.model.tokenizer import HFTokenizer, SentencePieceTokenizer

GGUF_NAMES = {"tok_embeddings": "token_embd.weight", "norm": "output_norm.weight", "output": "output.weight",
              "rope_freqs": "rope_freqs.weight"}
LAYER_NAMES = {"attn_norm": "attn_norm.weight", "wq": "attn_q.weight", "wk": "attn_k.weight",
               "wv": "attn_v.weight", "wo": "attn_output.weight", "bq": "attn_q.bias", "bk": "attn_k.bias",
               "bv": "attn_v.bias", "bo": "attn_output.bias", "ffn_norm": "ffn_norm.weight",
               "w1": "ffn_gate.weight", "w3": "ffn_up.weight", "w2": "ffn_down.weight"}
REQUANTIZE_TYPES = ("Q8_0", "Q4_0", "F16", "F32")
FLOAT_TYPES = ("F32", "F16")


@dataclass
class TensorExport:
    name: str
    source_format: str
    gguf_type: str
    exact: bool
    max_abs_error: float = 0.0
    note: str = ""


@dataclass
class GGUFExportReport:
    path: Path
    tensors: list[TensorExport] = field(default_factory=list)

    @property
    def fallbacks(self) -> list[TensorExport]:
        return [t for t in self.tensors if t.note]


def gguf_name(name: str) -> str:
    if name in GGUF_NAMES:
        return GGUF_NAMES[name]
    _, layer, kind = name.split(".", 2)
    return f"blk.{layer}.{LAYER_NAMES[kind]}"


def check_exportable(model: Model) -> None:
    c = model.config
    reasons = [why for flag, why in ((c.qk_norm, "q/k norms (qwen3)"), (c.sub_norms, "BitNet sub-norms"),
                                     (c.activation != "silu", f"{c.activation} activation"),
                                     (c.linear_input_norm, "bitllama2.c's per-linear input norm"),
                                     (c.act_quant != "none", "per-token int8 activations"),
                                     (c.rope.scaling == "llama3", "llama3 rope scaling"))
               if flag]
    if reasons:
        raise UnsupportedModelError(f"the llama GGUF architecture cannot express {', '.join(reasons)}",
                                    path=model.source, fix="export a llama/qwen2-style model, or use the .edgekit "
                                    "file with edgekit's runtime")


def export_gguf(model: Model, path: str | Path, *, float_type: str = "F32", requantize: str | None = None,
                name: str = "edgekit") -> GGUFExportReport:
    """Write `model` to `path` atomically and return what each tensor became."""
    import gguf

    if float_type not in FLOAT_TYPES:
        raise ConfigError(f"float_type {float_type!r} must be one of {FLOAT_TYPES}")
    if requantize is not None and requantize not in REQUANTIZE_TYPES:
        raise ConfigError(f"requantize {requantize!r} must be one of {REQUANTIZE_TYPES}")
    check_exportable(model)
    path = Path(path)
    report = GGUFExportReport(path)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), "llama")
        _write_metadata(writer, model, name)
        _write_tokenizer(writer, model)
        for tensor_name, tensor in model.tensors.items():
            if tensor_name.endswith(".scale"):
                continue
            data, qtype, entry = _convert(model, tensor_name, tensor, float_type, requantize)
            if qtype is None:
                writer.add_tensor(gguf_name(tensor_name), data)
            else:
                writer.add_tensor(gguf_name(tensor_name), data, raw_dtype=qtype)
            report.tensors.append(entry)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return report


def _write_metadata(writer, model: Model, name: str) -> None:
    c = model.config
    writer.add_name(name)
    writer.add_context_length(c.max_seq_len)
    writer.add_embedding_length(c.dim)
    writer.add_feed_forward_length(c.hidden_dim)
    writer.add_block_count(c.n_layers)
    writer.add_head_count(c.n_heads)
    writer.add_head_count_kv(c.n_kv_heads)
    writer.add_rope_dimension_count(c.head_dim)
    writer.add_key_length(c.head_dim)
    writer.add_value_length(c.head_dim)
    writer.add_layer_norm_rms_eps(c.norm_eps)
    writer.add_rope_freq_base(c.rope.theta)
    if c.rope.scaling == "linear":
        import gguf

        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(c.rope.factor)
    writer.add_vocab_size(c.vocab_size)


def _write_tokenizer(writer, model: Model) -> None:
    tok = model.tokenizer
    if isinstance(tok, SentencePieceTokenizer):
        sp = tok.sp
        vocab = {"model": "llama", "tokens": [sp.id_to_piece(i) for i in range(sp.vocab_size())],
                 "scores": [sp.get_score(i) for i in range(sp.vocab_size())],
                 "types": [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i)
                           else 5 if sp.is_unused(i) else 1 for i in range(sp.vocab_size())],
                 "add_space_prefix": True, "unk_id": sp.unk_id()}
    elif isinstance(tok, HFTokenizer) and tok.vocab is not None:
        vocab = tok.vocab
    else:
        raise UnsupportedModelError("this tokenizer (a tokenizer.json without a known GGUF vocabulary mapping) "
                                    "cannot be written to GGUF yet", path=model.source,
                                    fix="use a checkpoint with a sentencepiece tokenizer.model or a GGUF vocabulary")
    if len(vocab["tokens"]) != model.config.vocab_size:
        raise UnsupportedModelError(f"the tokenizer has {len(vocab['tokens'])} tokens but the model "
                                    f"{model.config.vocab_size}; llama.cpp needs them equal", path=model.source)
    writer.add_tokenizer_model(vocab["model"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    if vocab["model"] == "llama":
        writer.add_token_scores(vocab["scores"])
        writer.add_add_space_prefix(bool(vocab.get("add_space_prefix", True)))
        if vocab.get("unk_id") is not None:
            writer.add_unk_token_id(int(vocab["unk_id"]))
    else:
        writer.add_tokenizer_pre(vocab["pre"])
        writer.add_token_merges(vocab["merges"])
    if tok.bos_id is not None:
        writer.add_bos_token_id(tok.bos_id)
    if tok.eos_id is not None:
        writer.add_eos_token_id(tok.eos_id)
    writer.add_add_bos_token(tok.add_bos)


def _llama_cpp_layout(name: str, array: np.ndarray, model: Model) -> np.ndarray:
    kind = name.rsplit(".", 1)[-1]
    if kind in ("wq", "bq"):
        return half_to_interleaved(array, model.config.n_heads)
    if kind in ("wk", "bk"):
        return half_to_interleaved(array, model.config.n_kv_heads)
    return array


def _convert(model: Model, name: str, tensor, float_type: str, requantize: str | None):
    """(data, raw GGUF type or None for plain float arrays, report entry) for one tensor."""
    import gguf

    if not isinstance(tensor, QuantizedTensor):
        array = _llama_cpp_layout(name, np.asarray(materialize(tensor), np.float32), model)
        if array.ndim == 2 and float_type == "F16":
            return array.astype(np.float16), None, TensorExport(name, "f32", "F16", False,
                                                                 _max_error(array, array.astype(np.float16)))
        return array, None, TensorExport(name, "f32", "F32", True)
    target, exact = _target_type(tensor)
    note = ""
    if target is None:
        if requantize is None:
            raise UnsupportedModelError(
                f"tensor {name!r} is {tensor.format} (group {tensor.group_size}), which GGUF cannot hold exactly; "
                "exact mappings: ek_t2/ek_t1 -> TQ2_0/TQ1_0 (rows of 256), ek_i4 -> Q4_0, ek_i8 -> Q8_0 "
                "(rows of 32), f16, f32", path=model.source,
                fix=f"re-quantize to one of those, or export with requantize= one of {REQUANTIZE_TYPES}")
        target, exact, note = requantize, False, f"requantized from {tensor.format}"
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[target]][0]
    if tensor.cols % block:
        target, exact, note = "F16", False, f"{tensor.cols} columns are not a multiple of {target}'s {block}"
    values = _llama_cpp_layout(name, tensor.dequantize(), model)
    if target in FLOAT_TYPES:
        data = values.astype(np.float16 if target == "F16" else np.float32)
        return data, None, TensorExport(name, tensor.format, target, exact and target == "F32" or tensor.format == "f16",
                                        _max_error(values, data), note)
    qtype = gguf.GGMLQuantizationType[target]
    if target in ("Q4_0", "Q8_0") and exact:
        data = _repack_q(tensor, name, model, target)
    else:
        data = gguf.quants.quantize(values, qtype)
    written = gguf.quants.dequantize(data, qtype).reshape(values.shape)
    error = _max_error(values, written)
    return data, qtype, TensorExport(name, tensor.format, target, exact and error == 0.0, error, note)


def _target_type(tensor: QuantizedTensor) -> tuple[str | None, bool]:
    if tensor.format in ("ek_t2", "ek_t1") and tensor.group_size in (PER_TENSOR, 0, 256):
        return ("TQ2_0" if tensor.format == "ek_t2" else "TQ1_0"), True
    if tensor.format in ("ek_i4", "ek_i8") and tensor.group_size >= 0:  # every group is a whole number of 32-blocks
        return ("Q4_0" if tensor.format == "ek_i4" else "Q8_0"), True
    if tensor.format in ("f16", "f32"):
        return tensor.format.upper(), True
    return None, False


def _repack_q(tensor: QuantizedTensor, name: str, model: Model, target: str) -> np.ndarray:
    """ek_i4 / ek_i8 -> Q4_0 / Q8_0 blocks (fp16 d, then 16 nibble bytes or 32 int8), no rounding: each
    32-block takes the fp16 scale of the group (or row) it lies in.

    Q4_0 stores q + 8 with element j of a block in the low nibble of byte j and element j + 16 in its
    high nibble (ggml-common.h block_q4_0)."""
    rows = tensor.rows
    values = _llama_cpp_layout(name, tensor.values()[:, : tensor.cols].astype(np.int16), model)
    per_block = np.repeat(tensor.scales.astype(np.float16), tensor.group_width // 32, axis=1)[:, : tensor.cols // 32]
    scales = _llama_cpp_layout(name, per_block, model)
    blocks = values.reshape(rows, -1, 32)
    d = np.ascontiguousarray(scales).reshape(rows, -1, 1).view(np.uint8).reshape(rows, -1, 2)
    if target == "Q4_0":
        q = (blocks + 8).astype(np.uint8)
        qs = q[:, :, :16] | (q[:, :, 16:] << 4)
    else:
        qs = blocks.astype(np.int8).view(np.uint8)
    return np.concatenate([d, qs], axis=2).reshape(rows, -1)


def _max_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float32) - b.astype(np.float32)))) if a.size else 0.0
