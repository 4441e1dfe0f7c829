"""The onnxruntime back end: an exported decoder (`edgekit.export.onnx_writer`) in an InferenceSession.

`OnnxRuntimeBackend(model)` takes either an `OnnxExport` (a directory written by `edgekit export onnx`,
opened with `load_onnx_export`) or an edgekit `Model`, which it exports to a temporary directory first.
The KV cache lives in numpy arrays [1, n_kv_heads, past, head_dim] per layer, fed back as
`past_key_values.*` on the next call; `prefill` returns float32 logits [T, vocab], `decode` [vocab].

Only `edgekit.export.onnx_graph` needs the `onnx` package; running needs onnxruntime and numpy (no torch).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgekit.errors import CorruptCheckpointError, EdgekitError, GenerationError, ModelNotFoundError
from edgekit.model.config import ModelConfig
from edgekit.model.tokenizer import Tokenizer, tokenizer_from_blob

EDGEKIT_FILE, MODEL_FILES = "edgekit_onnx.json", ("model.onnx", "model.ort")


@dataclass
class OnnxExport:
    """An exported ONNX directory standing in for a `Model`: config and tokenizer, no edgekit tensors."""

    config: ModelConfig
    tokenizer: Tokenizer
    source: Path                 # the directory
    model_file: Path             # model.onnx or model.ort inside it
    source_format: str = "onnx"

    @property
    def tensors(self):
        raise EdgekitError(f"{self.source} is an ONNX export: it runs on the onnxruntime back end only",
                           fix="pass --backend onnxruntime, or give the .edgekit / source checkpoint instead")

    @property
    def output_name(self) -> str:
        return "tok_embeddings" if self.config.tie_embeddings else "output"


def export_dir_of(path: Path) -> Path | None:
    """The export directory `path` names (the directory itself or a model file in it), or None."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    if (directory / EDGEKIT_FILE).is_file() and (path.is_dir() or path.name in MODEL_FILES):
        return directory
    return None


def is_onnx_export(path: str | Path) -> bool:
    return export_dir_of(Path(path)) is not None


def load_onnx_export(path: str | Path) -> OnnxExport:
    """Read `edgekit_onnx.json` and the tokenizer of an export directory (or of the model file given)."""
    path = Path(path)
    directory = export_dir_of(path)
    if directory is None:
        raise ModelNotFoundError(f"not an edgekit ONNX export (no {EDGEKIT_FILE} beside it)", path=path,
                                 fix="export one with `edgekit export onnx MODEL -o DIR`")
    try:
        meta = json.loads((directory / EDGEKIT_FILE).read_text(encoding="utf-8"))
        config = ModelConfig.from_dict(meta["model_config"])
        blob = (directory / meta["tokenizer_file"]).read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(f"{EDGEKIT_FILE} or its tokenizer is unreadable ({exc})", path=directory) from None
    tokenizer = tokenizer_from_blob(meta["tokenizer"], blob, str(directory))
    model_file = path if path.is_file() else directory / "model.onnx"
    if not model_file.is_file():
        raise ModelNotFoundError(f"{model_file.name} is missing", path=directory)
    return OnnxExport(config, tokenizer, directory, model_file)


def session_options(threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    threads = threads or int(os.environ.get("EDGEKIT_NUM_THREADS", "0") or 0)
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OnnxRuntimeBackend:
    """onnxruntime on an exported decoder, behind the `Backend` interface (batch 1)."""

    name = "onnxruntime"

    def __init__(self, model, context_length: int | None = None, threads: int | None = None, graph_config=None):
        import onnxruntime as ort

        self._tmp: Path | None = None
        if not isinstance(model, OnnxExport):
            model = self._export(model, graph_config)
        self.model = model
        self.session = ort.InferenceSession(str(model.model_file), session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self._context = min(context_length or model.config.max_seq_len, model.config.max_seq_len)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.reset()

    def _export(self, model, graph_config) -> OnnxExport:
        from edgekit.export.onnx_graph import OnnxGraphConfig
        from edgekit.export.onnx_writer import export_onnx

        self._tmp = Path(tempfile.mkdtemp(prefix="edgekit-onnx-"))
        export_onnx(model, self._tmp / "model", graph_config or OnnxGraphConfig())
        return load_onnx_export(self._tmp / "model")

    @property
    def position(self) -> int:
        return self._position

    @property
    def context_length(self) -> int:
        return self._context

    def reset(self) -> None:
        c = self.model.config
        empty = np.zeros((1, c.n_kv_heads, 0, c.head_dim), np.float32)
        self.past = [(empty, empty) for _ in range(c.n_layers)]
        self._position = 0

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        ids = np.asarray(list(tokens), dtype=np.int64).reshape(1, -1)
        self._check(ids)
        start, count = self._position, ids.shape[1]
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, start + count), np.int64),
                 "position_ids": np.arange(start, start + count, dtype=np.int64).reshape(1, -1)}
        for i, (key, value) in enumerate(self.past):
            feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = key, value
        outputs = dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
        self.past = [(outputs[f"present.{i}.key"], outputs[f"present.{i}.value"]) for i in range(len(self.past))]
        self._position += count
        return np.asarray(outputs["logits"][0], dtype=np.float32)

    def decode(self, token: int) -> np.ndarray:
        return self.prefill([token])[0]

    def _check(self, ids: np.ndarray) -> None:
        if ids.size == 0:
            raise GenerationError("no tokens to run: the prompt is empty")
        vocab = self.model.config.vocab_size
        if ids.min() < 0 or ids.max() >= vocab:
            raise GenerationError(f"token id outside the vocabulary [0, {vocab})")
        if self._position + ids.size > self._context:
            raise GenerationError(f"{self._position} cached + {ids.size} new tokens exceed the context of "
                                  f"{self._context} tokens", fix="shorten the prompt or lower --max-tokens")

    def close(self) -> None:
        self.session = None
        self.past = []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
