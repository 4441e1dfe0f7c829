"""Export a `Model` to an onnxruntime directory: `edgekit export onnx MODEL -o DIR`.

DIR holds

    model.onnx            the decoder graph (`onnx_graph.py`): past/present KV per layer, MatMulNBits weights
    model.onnx.data       the initializers, when they exceed `external_data_threshold` (protobuf stops at 2 GB)
    model.ort             optional: the ORT-format (mobile) model, `ort_format=True`
    genai_config.json     onnxruntime-genai's description of the decoder (inputs, outputs, sizes, search)
    tokenizer.model | tokenizer.json, tokenizer_config.json   the tokenizer
    edgekit_onnx.json     what edgekit needs to run DIR again: ModelConfig, tokenizer spec, export options

The directory is built under a temporary name beside DIR and renamed into place at the end, so an
interrupted export leaves no partial DIR (`atomic_directory`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from edgekit.errors import ConfigError
from edgekit.export.onnx_graph import OnnxGraphConfig, WeightSummary, build_decoder
from edgekit.model.model import Model
from edgekit.model.tokenizer import tokenizer_to_blob

EXPORT_VERSION = 1
MODEL_FILE, DATA_FILE, ORT_FILE = "model.onnx", "model.onnx.data", "model.ort"
EDGEKIT_FILE, GENAI_FILE = "edgekit_onnx.json", "genai_config.json"
TWO_GB = 2 * 1024**3


@dataclass
class OnnxExportReport:
    path: Path
    weights: list[WeightSummary] = field(default_factory=list)
    external_data: bool = False
    ort_format: bool = False
    files: list[str] = field(default_factory=list)


@contextmanager
def atomic_directory(path: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it replaces `path`, on any error it is removed."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f"output directory {path} already exists", fix="choose a new -o DIR or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(directory: Path) -> None:
    for item in directory.iterdir():
        with open(item, "rb") as f:
            os.fsync(f.fileno())


def export_onnx(model: Model, path: str | Path, config: OnnxGraphConfig = OnnxGraphConfig(), *,
                external_data_threshold: int = TWO_GB, ort_format: bool = False, overwrite: bool = False,
                name: str = "edgekit") -> OnnxExportReport:
    """Write `model` as an onnxruntime directory at `path` (see the module doc) and say what each weight became."""
    import onnx

    proto, summary = build_decoder(model, config, name)
    path = Path(path)
    report = OnnxExportReport(path, summary)
    with atomic_directory(path, overwrite) as tmp:
        report.external_data = _initializer_bytes(proto) > external_data_threshold
        onnx.save_model(proto, str(tmp / MODEL_FILE), save_as_external_data=report.external_data,
                        all_tensors_to_one_file=True, location=DATA_FILE, size_threshold=1024)
        del proto
        tokenizer_file = write_tokenizer(model, tmp)
        write_json(tmp / GENAI_FILE, genai_config(model))
        write_json(tmp / EDGEKIT_FILE, edgekit_description(model, config, tokenizer_file))
        if ort_format:
            convert_to_ort(tmp / MODEL_FILE, tmp / ORT_FILE)
            report.ort_format = True
        report.files = sorted(p.name for p in tmp.iterdir())
    return report


def _initializer_bytes(proto) -> int:
    return sum(len(t.raw_data) for t in proto.graph.initializer)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1))


def write_tokenizer(model: Model, directory: Path) -> str:
    """tokenizer.model (sentencepiece) or tokenizer.json (tokenizers), plus a tokenizer_config.json."""
    spec, blob = tokenizer_to_blob(model.tokenizer)
    filename = "tokenizer.model" if spec["kind"] == "sentencepiece" else "tokenizer.json"
    (directory / filename).write_bytes(blob)
    tok = model.tokenizer
    pieces = {"bos_token": _piece(tok, tok.bos_id), "eos_token": _piece(tok, tok.eos_id)}
    write_json(directory / "tokenizer_config.json", {
        "tokenizer_class": "LlamaTokenizer" if spec["kind"] == "sentencepiece" else "PreTrainedTokenizerFast",
        "add_bos_token": tok.add_bos, "add_eos_token": False, "model_max_length": model.config.max_seq_len,
        **{k: v for k, v in pieces.items() if v is not None}})
    return filename


def _piece(tokenizer, token_id: int | None) -> str | None:
    if token_id is None:
        return None
    text = tokenizer.decode([token_id])
    return text or None


def genai_config(model: Model) -> dict:
    """onnxruntime-genai's genai_config.json for this decoder (its llama layout of names)."""
    c, tok = model.config, model.tokenizer
    decoder = {"session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
               "filename": MODEL_FILE, "head_size": c.head_dim, "hidden_size": c.dim,
               "num_attention_heads": c.n_heads, "num_hidden_layers": c.n_layers, "num_key_value_heads": c.n_kv_heads,
               "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                          "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
               "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                           "present_value_names": "present.%d.value"}}
    eos = list(tok.eos_ids) or [0]
    return {"model": {"bos_token_id": tok.bos_id if tok.bos_id is not None else 0, "context_length": c.max_seq_len,
                      "decoder": decoder, "eos_token_id": eos if len(eos) > 1 else eos[0], "pad_token_id": eos[0],
                      "type": "llama", "vocab_size": c.vocab_size},
            "search": {"diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
                       "max_length": c.max_seq_len, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
                       "num_return_sequences": 1, "past_present_share_buffer": False, "repetition_penalty": 1.0,
                       "temperature": 1.0, "top_k": 1, "top_p": 1.0}}


def edgekit_description(model: Model, config: OnnxGraphConfig, tokenizer_file: str) -> dict:
    spec, _ = tokenizer_to_blob(model.tokenizer)
    return {"format_version": EXPORT_VERSION, "model_config": model.config.to_dict(), "graph": asdict(config),
            "tokenizer": spec, "tokenizer_file": tokenizer_file, "source": str(model.source),
            "source_format": model.source_format}


def convert_to_ort(onnx_path: Path, ort_path: Path) -> None:
    """Save the ORT-format model onnxruntime Mobile loads (basic optimizations only, so it stays portable)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(ort_path)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
