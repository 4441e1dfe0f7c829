"""The llama.cpp back end: a GGUF file run by llama-cpp-python behind the `Backend` interface.

A `Model` loaded from a GGUF file runs that file; any other `Model` is first exported with
`edgekit.export.gguf_writer.export_gguf` to a temporary file (packed formats map to TQ1_0/TQ2_0/Q4_0/Q8_0
without requantizing). The context keeps logits for every evaluated token (`logits_all`), so `prefill`
returns float32 [T, vocab] like the other back ends and `decode` returns [vocab].
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from edgekit.errors import EdgekitError, GenerationError
from edgekit.model.model import Model


def default_threads(threads: int | None) -> int:
    """`threads`, else $EDGEKIT_NUM_THREADS, else llama-cpp-python's own default (half the logical CPUs):
    llama.cpp's threads spin at barriers, so on a busy machine extra threads cost far more than they give
    (measured here on 2 shared cores: stories260K decode 819 tok/s on 1 thread, 30 on 2)."""
    return threads or int(os.environ.get("EDGEKIT_NUM_THREADS", "0") or 0) or max(1, (os.cpu_count() or 2) // 2)


class LlamaCppBackend:
    """llama.cpp through llama-cpp-python on the model's GGUF file (exported on the fly when needed)."""

    name = "llama.cpp"

    def __init__(self, model: Model, context_length: int | None = None, threads: int | None = None,
                 batch: int = 512, export_options: dict | None = None):
        try:
            import llama_cpp
        except ImportError as exc:
            raise EdgekitError(f"the llama.cpp back end needs llama-cpp-python ({exc})",
                               fix='pip install "edgekit[llamacpp]"') from None
        self.model = model
        self._tmp: Path | None = None
        path = self._gguf_path(model, export_options or {})
        self._context = min(context_length or model.config.max_seq_len, model.config.max_seq_len)
        n = default_threads(threads)
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=self._context, n_batch=min(batch, self._context),
                                   n_ubatch=min(batch, self._context), n_threads=n, n_threads_batch=n,
                                   logits_all=True, verbose=False)
        if self.llm.n_vocab() != model.config.vocab_size:
            raise EdgekitError(f"llama.cpp reads a vocabulary of {self.llm.n_vocab()} from {path}, the model has "
                               f"{model.config.vocab_size}", path=path)

    def _gguf_path(self, model: Model, export_options: dict) -> Path:
        if model.source_format == "gguf" and Path(model.source).is_file():
            return Path(model.source)
        from edgekit.export.gguf_writer import export_gguf

        self._tmp = Path(tempfile.mkdtemp(prefix="edgekit-gguf-"))
        path = self._tmp / "model.gguf"
        export_gguf(model, path, **export_options)
        return path

    @property
    def position(self) -> int:
        return int(self.llm.n_tokens)

    @property
    def context_length(self) -> int:
        return self._context

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        tokens = [int(t) for t in tokens]
        self._check(tokens)
        start = self.position
        self.llm.eval(tokens)
        return np.array(self.llm.scores[start:start + len(tokens)], dtype=np.float32)

    def decode(self, token: int) -> np.ndarray:
        return self.prefill([token])[0]

    def _check(self, tokens: list[int]) -> None:
        if not tokens:
            raise GenerationError("no tokens to run: the prompt is empty")
        vocab = self.model.config.vocab_size
        if min(tokens) < 0 or max(tokens) >= vocab:
            raise GenerationError(f"token id outside the vocabulary [0, {vocab})")
        if self.position + len(tokens) > self._context:
            raise GenerationError(f"{self.position} cached + {len(tokens)} new tokens exceed the context of "
                                  f"{self._context} tokens", fix="shorten the prompt or lower --max-tokens")

    def reset(self) -> None:
        self.llm.reset()          # n_tokens = 0: the next eval overwrites the cached cells from position 0

    def close(self) -> None:
        if getattr(self, "llm", None) is not None:
            self.llm.close()
            self.llm = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
