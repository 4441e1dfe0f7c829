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

Ternary matrices whose rows are not a multiple of 256 (TQ's block) become Q8_0 blocks holding the trits
themselves with d = fp16(scale): every trit kept, the same fp16 rounding as TQ, listed in the summary.
Float trit matrices with a `.scale` (bitllama2.c) are packed the same way as ek_t2. `linear_type`,
`embedding_type` and `output_type` override the type of the linear layers, the token embedding and the
output layer (gguf-py cannot write K-quants, so Q8_0 is the nearest to llama.cpp's choice on offer there).
`embedding_output_types="llama.cpp"` instead lets llama.cpp's own quantizer (`llama_model_quantize` through
llama-cpp-python) pick and write those two tensors from an F32 copy, for the ftype of the linear layers: Q6_K for
the output / a tied embedding, Q4_K for an untied embedding under TQ1_0 / TQ2_0, the file's own type otherwise,
Q8_0 where Q6_K's 256 does not divide the rows; every other tensor keeps edgekit's bytes.

Architectures (`architecture="auto"` picks one):

- `llama`: everything without BitNet sub-norms; q/k permuted to adjacent-pair RoPE.
- `bitnet` (llama.cpp's LLM_ARCH_BITNET: RMSNorm before attention, after attention (attn_sub_norm), before
  the FFN and after its SiLU gate (ffn_sub_norm); NEOX RoPE, so q/k stay in rotate-half order; tied
  output). BitNet models with sub-norms map one to one. bitllama2.c's weightless BitLinear norm
  x / (n * rms(x)) in front of every linear is exactly an RMSNorm with weight 1/n (n its input width), so
  its blocks become bitnet blocks with constant norm weights 1/dim, 1/q_dim, 1/dim and 1/hidden; llama.cpp
  adds its one `rms_eps` inside each of them (`bitnet_norm_eps`, default 1e-20 where bitllama2.c has none).
  The eps must be far below the smallest mean square a BitLinear input reaches: bitllama2.c's FFN hidden
  (silu(gate) * up) goes down to 4e-10 (3M) and has a median of 4e-8 (1M) on TinyStories, so the earlier
  1e-10 rescaled w2's input by up to 10%. The same eps then sits in the final RMSNorm (bitllama2.c: 1e-5);
  there it only scales each token's logits by one positive factor (<= 1.2% measured), so the argmax is kept.

The model's activation quantization is recorded as `edgekit.act_quant` (llama.cpp ignores it), so edgekit's
loader reads the file back as the model it was (`edgekit.model.loaders.gguf_file`). Models with per-token
int8 activations (BitNet A8, bitllama2.c) export with a note: llama.cpp quantizes
activations its own way (Q8_K blocks of 256 for TQ types, Q8_0 blocks of 32 for Q8_0, f16 for F16), so
logits agree closely but not bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import ConfigError, UnsupportedModelError
from edgekit.fileio import atomic_path
from edgekit.formats import PER_TENSOR, QuantizedTensor, pack_values
from edgekit.model.lazy import materialize
from edgekit.model.loaders.common import half_to_interleaved
from edgekit.model.loaders.gguf_file import ACT_QUANT_KEY
from edgekit.model.model import LINEAR_NAMES, Model
from edgekit.model.tokenizer import HFTokenizer, SentencePieceTokenizer

GGUF_NAMES = {"tok_embeddings": "token_embd.weight", "norm": "output_norm.weight", "output": "output.weight",
              "rope_freqs": "rope_freqs.weight"}
LAYER_NAMES = {"attn_norm": "attn_norm.weight", "wq": "attn_q.weight", "wk": "attn_k.weight",
               "wv": "attn_v.weight", "wo": "attn_output.weight", "bq": "attn_q.bias", "bk": "attn_k.bias",
               "bv": "attn_v.bias", "bo": "attn_output.bias", "ffn_norm": "ffn_norm.weight",
               "w1": "ffn_gate.weight", "w3": "ffn_up.weight", "w2": "ffn_down.weight"}
BITNET_LAYER_NAMES = {"attn_sub_norm": "attn_sub_norm.weight", "ffn_sub_norm": "ffn_sub_norm.weight"}
REQUANTIZE_TYPES = ("Q8_0", "Q4_0", "F16", "F32")
FLOAT_TYPES = ("F32", "F16")
OVERRIDE_TYPES = ("TQ2_0", "TQ1_0", "Q8_0", "Q4_0", "F16", "F32")
ARCHITECTURES = ("auto", "llama", "bitnet")
EMBEDDING_OUTPUT_CHOICES = ("edgekit", "llama.cpp")
# the llama.cpp file type a file "mostly" of this linear type gets (llama.h's LLAMA_FTYPE_*)
LLAMA_FTYPES = {"F32": "LLAMA_FTYPE_ALL_F32", "F16": "LLAMA_FTYPE_MOSTLY_F16", "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
                "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "TQ1_0": "LLAMA_FTYPE_MOSTLY_TQ1_0",
                "TQ2_0": "LLAMA_FTYPE_MOSTLY_TQ2_0"}
CHOSEN_BY_LLAMA_CPP = ("token_embd.weight", "output.weight")


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
    architecture: str = "llama"
    notes: list[str] = field(default_factory=list)

    @property
    def fallbacks(self) -> list[TensorExport]:
        return [t for t in self.tensors if t.note]


def gguf_name(name: str) -> str:
    if name in GGUF_NAMES:
        return GGUF_NAMES[name]
    _, layer, kind = name.split(".", 2)
    return f"blk.{layer}.{LAYER_NAMES.get(kind) or BITNET_LAYER_NAMES[kind]}"


def choose_architecture(model: Model, architecture: str) -> str:
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"architecture {architecture!r} must be one of {ARCHITECTURES}")
    if architecture == "auto":
        return "bitnet" if model.config.sub_norms or model.config.linear_input_norm else "llama"
    return architecture


def check_exportable(model: Model, architecture: str = "llama") -> None:
    c = model.config
    common = ((c.qk_norm, "q/k norms (qwen3)"), (c.activation != "silu", f"{c.activation} activation"),
              (c.rope.scaling == "llama3", "llama3 rope scaling"))
    if architecture == "llama":
        checks = common + ((c.sub_norms, "BitNet sub-norms"),
                           (c.linear_input_norm, "bitllama2.c's per-linear input norm"))
    else:
        checks = common + ((not c.tie_embeddings, "an untied output layer"),
                           (c.qkv_bias or c.o_bias, "attention biases"),
                           (c.q_dim != c.dim, "n_heads * head_dim != dim"),
                           (c.sub_norms and c.linear_input_norm, "sub-norms together with BitLinear input norms"))
    reasons = [why for flag, why in checks if flag]
    if reasons:
        raise UnsupportedModelError(f"the {architecture} GGUF architecture cannot express {', '.join(reasons)}",
                                    path=model.source, fix="export a llama/qwen2-style model (or a BitNet one with "
                                    "SiLU and tied embeddings), or use the .edgekit file with edgekit's runtime")


@dataclass(frozen=True)
class _Options:
    float_type: str
    requantize: str | None
    overrides: dict
    permute: bool             # q/k to adjacent-pair RoPE order (llama); bitnet's NEOX RoPE keeps rotate-half

    def override_for(self, name: str) -> str | None:
        kind = name.rsplit(".", 1)[-1]
        key = "embedding" if name == "tok_embeddings" else "output" if name == "output" else \
            "linear" if kind in LINEAR_NAMES else None
        return self.overrides.get(key)


def _check_types(float_type: str, requantize: str | None, overrides: dict) -> None:
    if float_type not in FLOAT_TYPES:
        raise ConfigError(f"float_type {float_type!r} must be one of {FLOAT_TYPES}")
    if requantize is not None and requantize not in REQUANTIZE_TYPES:
        raise ConfigError(f"requantize {requantize!r} must be one of {REQUANTIZE_TYPES}")
    for key, value in overrides.items():
        if value is not None and value not in OVERRIDE_TYPES:
            raise ConfigError(f"{key}_type {value!r} must be one of {OVERRIDE_TYPES}")


def export_gguf(model: Model, path: str | Path, *, float_type: str = "F32", requantize: str | None = None,
                name: str = "edgekit", architecture: str = "auto", linear_type: str | None = None,
                embedding_type: str | None = None, output_type: str | None = None,
                bitnet_norm_eps: float = 1e-20, embedding_output_types: str = "edgekit") -> GGUFExportReport:
    """Write `model` to `path` atomically and return what each tensor became (see the module doc)."""
    overrides = {"linear": linear_type, "embedding": embedding_type, "output": output_type}
    _check_types(float_type, requantize, overrides)
    if embedding_output_types not in EMBEDDING_OUTPUT_CHOICES:
        raise ConfigError(f"embedding_output_types {embedding_output_types!r} must be one of "
                          f"{EMBEDDING_OUTPUT_CHOICES}")
    if embedding_output_types == "llama.cpp" and (embedding_type or output_type):
        raise ConfigError("embedding_output_types='llama.cpp' lets llama.cpp's quantizer choose the embedding and "
                          "output types; it cannot be combined with embedding_type / output_type",
                          fix="drop one of the two")
    arch = choose_architecture(model, architecture)
    check_exportable(model, arch)
    options = _Options(float_type, requantize, {k: v for k, v in overrides.items() if v}, arch == "llama")
    path = Path(path)
    report = GGUFExportReport(path, architecture=arch, notes=_notes(model, arch))
    eps = bitnet_norm_eps if model.config.linear_input_norm else model.config.norm_eps
    written = []
    for tensor_name, tensor in export_tensors(model, arch).items():
        data, qtype, entry = _convert(model, tensor_name, tensor, options)
        written.append((gguf_name(tensor_name), data, qtype))
        report.tensors.append(entry)
    if embedding_output_types == "llama.cpp":
        _llama_cpp_embedding_output(model, arch, name, eps, options, written, report)
    with atomic_path(path) as tmp:
        _write_file(tmp, model, arch, name, eps, written)
    return report


def _write_file(tmp: Path, model: Model, arch: str, name: str, eps: float, written: list) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(tmp), arch)
    _write_metadata(writer, model, name, eps)
    _write_tokenizer(writer, model)
    for tensor_name, data, qtype in written:
        if qtype is None:
            writer.add_tensor(tensor_name, data)
        else:
            writer.add_tensor(tensor_name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def file_type(report: GGUFExportReport) -> str:
    """The GGUF type most of the linear layers got: the ftype llama.cpp's quantizer would be asked for."""
    from collections import Counter

    linear = Counter(t.gguf_type for t in report.tensors if t.name.rsplit(".", 1)[-1] in LINEAR_NAMES)
    return linear.most_common(1)[0][0] if linear else "F32"


def _llama_cpp_embedding_output(model: Model, arch: str, name: str, eps: float, opts: _Options,
                                written: list, report: GGUFExportReport) -> None:
    """Replace token_embd / output in `written` by what llama.cpp's own quantizer makes of them.

    An F32 copy of the model (same metadata, tokenizer and layout) goes through `llama_model_quantize` with
    the ftype of edgekit's linear layers; llama.cpp's `llama_tensor_get_type` then picks the embedding and
    output types it would for that ftype (Q6_K for the output / tied embedding, Q4_K for an untied embedding
    under TQ1_0 / TQ2_0, Q8_0 for Q8_0 files or rows its block does not divide, ...) and its quantizer writes
    them. Those two tensors are taken over byte for byte; every other tensor stays what edgekit packed."""
    import tempfile

    import gguf

    try:
        import llama_cpp
    except ImportError as exc:
        raise ConfigError("embedding_output_types='llama.cpp' needs llama-cpp-python (llama.cpp's quantizer)",
                          fix="pip install llama-cpp-python, or keep the default 'edgekit' (Q8_0)") from exc
    ftype = file_type(report)
    f32 = _Options("F32", opts.requantize, {"linear": "F32", "embedding": "F32", "output": "F32"}, opts.permute)
    sources = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-gguf-") as tmpdir:
        plain, quantized = Path(tmpdir) / "f32.gguf", Path(tmpdir) / "quantized.gguf"
        copy = []
        for tensor_name, tensor in export_tensors(model, arch).items():
            data, qtype, _ = _convert(model, tensor_name, tensor, f32)
            copy.append((gguf_name(tensor_name), data, qtype))
            if gguf_name(tensor_name) in CHOSEN_BY_LLAMA_CPP:
                sources[gguf_name(tensor_name)] = (tensor_name, np.asarray(data, np.float32))
        _write_file(plain, model, arch, name, eps, copy)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, LLAMA_FTYPES[ftype])
        params.nthread = 1
        status = llama_cpp.llama_model_quantize(str(plain).encode(), str(quantized).encode(), params)
        if status != 0:
            raise ConfigError(f"llama.cpp's quantizer failed (status {status}) on the F32 copy for ftype {ftype}",
                              fix="export with embedding_output_types='edgekit'")
        chosen = {t.name: (np.array(t.data), t.tensor_type) for t in gguf.GGUFReader(quantized).tensors
                  if t.name in CHOSEN_BY_LLAMA_CPP}
    entries = {t.name: t for t in report.tensors}
    for i, (tensor_name, _, _) in enumerate(written):
        if tensor_name not in chosen:
            continue
        data, qtype = chosen[tensor_name]
        source_name, values = sources[tensor_name]
        back = np.asarray(gguf.quants.dequantize(data, qtype), np.float32).reshape(values.shape)
        float_type = qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
        written[i] = (tensor_name, data.reshape(values.shape) if float_type else data, None if float_type else qtype)
        entry = entries[source_name]
        entry.gguf_type, entry.exact = qtype.name, qtype == gguf.GGMLQuantizationType.F32
        entry.max_abs_error = _max_error(values, back)
        entry.note = f"{qtype.name} chosen by llama.cpp's quantizer for ftype {ftype}"


def _notes(model: Model, arch: str) -> list[str]:
    c, notes = model.config, []
    if c.act_quant != "none":
        notes.append("per-token int8 activations: llama.cpp quantizes activations its own way (Q8_K / Q8_0 "
                     "blocks, f16 for F16 weights), so logits agree closely, not bit for bit")
    if c.linear_input_norm:
        notes.append("bitllama2.c BitLinear norms written as bitnet RMSNorms with weights 1/n (llama.cpp adds "
                     "its rms_eps inside them)")
    return notes


def export_tensors(model: Model, arch: str) -> dict:
    """The tensors to write: float trits with a `.scale` packed as ek_t2 (exact), and for bitllama2.c on the
    bitnet architecture the constant RMSNorm weights 1/n that stand for its BitLinear norms."""
    c, out = model.config, {}
    for name, tensor in model.tensors.items():
        if name.endswith(".scale"):
            continue
        scale = model.tensors.get(name + ".scale")
        if scale is not None and not isinstance(tensor, QuantizedTensor):
            trits = np.asarray(materialize(tensor), np.float32).astype(np.int8)
            tensor = pack_values("ek_t2", trits, np.full((1, 1), float(scale), np.float32), PER_TENSOR)
        out[name] = tensor
    if arch == "bitnet" and c.linear_input_norm:
        widths = {"attn_norm": c.dim, "attn_sub_norm": c.q_dim, "ffn_norm": c.dim, "ffn_sub_norm": c.hidden_dim}
        for layer in range(c.n_layers):
            for kind, width in widths.items():
                out[f"layers.{layer}.{kind}"] = np.full(width, 1.0 / width, np.float32)
    return out


def _write_metadata(writer, model: Model, name: str, eps: float) -> None:
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
    writer.add_layer_norm_rms_eps(eps)
    writer.add_rope_freq_base(c.rope.theta)
    if c.rope.scaling == "linear":
        import gguf

        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(c.rope.factor)
    writer.add_vocab_size(c.vocab_size)
    # llama.cpp ignores this key; edgekit's GGUF loader reads it so the model comes back with the activation
    # quantization it was exported with (the bitnet architecture implies int8, llama float, without it)
    writer.add_string(ACT_QUANT_KEY, c.act_quant)


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
    writer.add_add_eos_token(False)


def _llama_cpp_layout(name: str, array: np.ndarray, model: Model, permute: bool = True) -> np.ndarray:
    kind = name.rsplit(".", 1)[-1]
    if permute and kind in ("wq", "bq"):
        return half_to_interleaved(array, model.config.n_heads)
    if permute and kind in ("wk", "bk"):
        return half_to_interleaved(array, model.config.n_kv_heads)
    return array


def _convert(model: Model, name: str, tensor, opts: _Options):
    """(data, raw GGUF type or None for plain float arrays, report entry) for one tensor."""
    import gguf

    if not isinstance(tensor, QuantizedTensor):
        return _convert_float(model, name, np.asarray(materialize(tensor), np.float32), opts)
    target, exact = _target_type(tensor)
    note, override = "", opts.override_for(name)
    if override is not None and override != target:
        target, exact, note = override, False, f"{override} asked for"
    elif target is None:
        if opts.requantize is None:
            raise UnsupportedModelError(
                f"tensor {name!r} is {tensor.format} (group {tensor.group_size}), which GGUF cannot hold exactly; "
                "exact mappings: ek_t2/ek_t1 -> TQ2_0/TQ1_0 (rows of 256), ek_i4 -> Q4_0, ek_i8 -> Q8_0 "
                "(rows of 32), f16, f32", path=model.source,
                fix=f"re-quantize to one of those, or export with requantize= one of {REQUANTIZE_TYPES}")
        target, exact, note = opts.requantize, False, f"requantized from {tensor.format}"
    ternary = tensor.format.startswith("ek_t")
    if target in ("TQ2_0", "TQ1_0") and not ternary:
        raise ConfigError(f"tensor {name!r} is {tensor.format}: {target} holds ternary weights only",
                          fix="choose Q8_0, Q4_0, F16 or F32 for it")
    if target in ("TQ2_0", "TQ1_0") and tensor.cols % 256:
        target, note = "Q8_0", f"{tensor.cols} columns are not a multiple of 256: Q8_0 blocks of the trits"
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[target]][0]
    if tensor.cols % block:
        target, exact, note = "F16", False, f"{tensor.cols} columns are not a multiple of {target}'s {block}"
    values = _llama_cpp_layout(name, tensor.dequantize(), model, opts.permute)
    if target in FLOAT_TYPES:
        data = values.astype(np.float16 if target == "F16" else np.float32)
        return data, None, TensorExport(name, tensor.format, target, exact and target == "F32" or tensor.format == "f16",
                                        _max_error(values, data), note)
    qtype = gguf.GGMLQuantizationType[target]
    if target == "Q8_0" and ternary:
        data = _ternary_q8_0(tensor, name, model, opts.permute)
    elif target in ("Q4_0", "Q8_0") and _target_type(tensor)[0] == target:
        data = _repack_q(tensor, name, model, target, opts.permute)
    else:
        data = gguf.quants.quantize(values, qtype)
    written = gguf.quants.dequantize(data, qtype).reshape(values.shape)
    error = _max_error(values, written)
    return data, qtype, TensorExport(name, tensor.format, target, exact and error == 0.0, error, note)


def _convert_float(model: Model, name: str, array: np.ndarray, opts: _Options):
    """A float32 array: F32 / F16 (`float_type` for matrices), or the override type requantized."""
    import gguf

    array = _llama_cpp_layout(name, array, model, opts.permute)
    target = (opts.override_for(name) or opts.float_type) if array.ndim == 2 else "F32"
    note = "" if target in FLOAT_TYPES else f"requantized from f32 to {target}"
    if target in ("TQ2_0", "TQ1_0"):
        raise ConfigError(f"tensor {name!r} is float: {target} holds ternary weights only",
                          fix="quantize the model to ek_t2 / ek_t1 first, or choose Q8_0, Q4_0, F16 or F32")
    if target not in FLOAT_TYPES and array.shape[1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[target]][0]:
        target, note = "F16", f"{array.shape[1]} columns do not fit {target}'s blocks"
    if target == "F32":
        return array, None, TensorExport(name, "f32", "F32", True)
    if target == "F16":
        data = array.astype(np.float16)
        return data, None, TensorExport(name, "f32", "F16", False, _max_error(array, data), note)
    qtype = gguf.GGMLQuantizationType[target]
    data = gguf.quants.quantize(array, qtype)
    written = gguf.quants.dequantize(data, qtype).reshape(array.shape)
    return data, qtype, TensorExport(name, "f32", target, False, _max_error(array, written), note)


def _target_type(tensor: QuantizedTensor) -> tuple[str | None, bool]:
    if tensor.format in ("ek_t2", "ek_t1") and tensor.group_size in (PER_TENSOR, 0, 256):
        return ("TQ2_0" if tensor.format == "ek_t2" else "TQ1_0"), True
    if tensor.format in ("ek_i4", "ek_i8") and tensor.group_size >= 0:  # every group is a whole number of 32-blocks
        return ("Q4_0" if tensor.format == "ek_i4" else "Q8_0"), True
    if tensor.format in ("f16", "f32"):
        return tensor.format.upper(), True
    return None, False


def _block_scales(tensor: QuantizedTensor, name: str, model: Model, permute: bool) -> np.ndarray:
    """fp16 scale of every 32-block [rows, cols/32]: the group (or row, or tensor) scale it lies in."""
    scales = tensor.scales.astype(np.float16)
    if tensor.group_size == PER_TENSOR:
        scales = np.broadcast_to(scales, (tensor.rows, 1))
    per_block = np.repeat(scales, tensor.group_width // 32 if tensor.group_size > 0 else tensor.cols // 32, axis=1)
    return _llama_cpp_layout(name, np.ascontiguousarray(per_block[:, : tensor.cols // 32]), model, permute)


def _q_blocks(values: np.ndarray, scales: np.ndarray, target: str) -> np.ndarray:
    """int values [rows, cols] + fp16 d [rows, cols/32] -> Q4_0 / Q8_0 rows (ggml-common.h block_q4_0 /
    block_q8_0: fp16 d, then 16 bytes of q + 8 with element j low and j + 16 high, or 32 int8)."""
    rows = values.shape[0]
    blocks = values.reshape(rows, -1, 32)
    d = np.ascontiguousarray(scales.astype(np.float16)).reshape(rows, -1, 1).view(np.uint8).reshape(rows, -1, 2)
    if target == "Q4_0":
        q = (blocks + 8).astype(np.uint8)
        qs = q[:, :, :16] | (q[:, :, 16:] << 4)
    else:
        qs = blocks.astype(np.int8).view(np.uint8)
    return np.concatenate([d, qs], axis=2).reshape(rows, -1)


def _repack_q(tensor: QuantizedTensor, name: str, model: Model, target: str, permute: bool = True) -> np.ndarray:
    """ek_i4 / ek_i8 -> Q4_0 / Q8_0 blocks, no rounding: each 32-block takes the fp16 scale of its group."""
    values = _llama_cpp_layout(name, tensor.values()[:, : tensor.cols].astype(np.int16), model, permute)
    return _q_blocks(values, _block_scales(tensor, name, model, permute), target)


def _ternary_q8_0(tensor: QuantizedTensor, name: str, model: Model, permute: bool) -> np.ndarray:
    """Ternary -> Q8_0 with q = the trit and d = fp16(scale): every trit kept, as in TQ1_0/TQ2_0."""
    trits = _llama_cpp_layout(name, tensor.values()[:, : tensor.cols].astype(np.int16), model, permute)
    return _q_blocks(trits, _block_scales(tensor, name, model, permute), "Q8_0")


def _max_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float32) - b.astype(np.float32)))) if a.size else 0.0
