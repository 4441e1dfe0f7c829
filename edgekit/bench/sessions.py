"""Worker-side adapters: each back end behind the same four calls the timing loop uses.

    prefill(tokens) -> logits [vocab] of the last token     decode(token) -> logits [vocab]
    reset()         -> forget the sequence                  close()

A session is opened inside the bench worker process (`worker.py`), so its imports (llama_cpp, onnxruntime,
torch) and its memory stay in that process and peak RSS is its own.
"""

from __future__ import annotations

import inspect
import logging
from typing import Protocol

import numpy as np

from edgekit.errors import EdgekitError

log = logging.getLogger(__name__)

GGML_TYPES = {"f32": 0, "f16": 1}   # ggml_type ids of the KV cache element types


class Session(Protocol):
    def prefill(self, tokens: list[int]) -> np.ndarray: ...

    def decode(self, token: int) -> np.ndarray: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class EdgekitSession:
    """An edgekit runtime back end (reference, native, onnxruntime) opened through `open_backend`.

    Back ends that take a thread count in their constructor (`threads` / `n_threads`) get it; the
    worker also sets OMP/OpenBLAS/EDGEKIT thread variables before anything is imported."""

    def __init__(self, backend: str, model_path: str, threads: int, context_length: int):
        from edgekit.model import load
        from edgekit.runtime.backend import backend_class

        model = load(model_path)
        cls = backend_class(backend)
        params = inspect.signature(cls).parameters
        extra = {name: threads for name in ("threads", "n_threads") if name in params}
        self.backend = cls(model, context_length, **extra)
        self.last_only = "last_only" in inspect.signature(self.backend.prefill).parameters

    def prefill(self, tokens: list[int]) -> np.ndarray:
        if self.last_only:  # back ends that can skip the output layer for all but the last token
            return np.asarray(self.backend.prefill(tokens, last_only=True)).reshape(-1, self.vocab)[-1]
        return np.asarray(self.backend.prefill(tokens))[-1]

    @property
    def vocab(self) -> int:
        return self.backend.model.config.vocab_size

    def decode(self, token: int) -> np.ndarray:
        return np.asarray(self.backend.decode(token))

    def reset(self) -> None:
        self.backend.reset()

    def close(self) -> None:
        self.backend.close()


class LlamaCppSession:
    """llama.cpp through llama-cpp-python on a GGUF file: n_threads and n_threads_batch both set, a batch
    of at least 512 (one ubatch holds pp512), the KV cache in F16 or F32, logits for the last token only."""

    def __init__(self, gguf_path: str, threads: int, context_length: int, kv_type: str, batch: int):
        try:
            import llama_cpp
        except ImportError as exc:
            raise EdgekitError(f"llama.cpp back end needs llama-cpp-python ({exc})",
                               fix='pip install "edgekit[llamacpp]"') from None
        self.llama_cpp = llama_cpp
        batch = max(512, batch)
        self.llm = llama_cpp.Llama(model_path=gguf_path, n_ctx=context_length, n_batch=batch, n_ubatch=batch,
                                   n_threads=threads, n_threads_batch=threads, type_k=GGML_TYPES[kv_type],
                                   type_v=GGML_TYPES[kv_type], logits_all=False, verbose=False)
        self.vocab = self.llm.n_vocab()

    def _last_logits(self) -> np.ndarray:
        pointer = self.llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.vocab,)).copy()

    def prefill(self, tokens: list[int]) -> np.ndarray:
        self.llm.eval(tokens)
        return self._last_logits()

    def decode(self, token: int) -> np.ndarray:
        self.llm.eval([token])
        return self._last_logits()

    def reset(self) -> None:
        self.llm.reset()   # n_tokens = 0; the next eval drops the cached cells past it

    def close(self) -> None:
        self.llm.close()


class OnnxRuntimeSession(EdgekitSession):
    """edgekit's onnxruntime back end on the cached ONNX export of the synthetic model (MatMulNBits,
    accuracy_level 4), intra-op threads = the thread count."""

    def __init__(self, onnx_path: str, threads: int, context_length: int):
        from edgekit.runtime.onnxrt import OnnxRuntimeBackend, load_onnx_export

        self.backend = OnnxRuntimeBackend(load_onnx_export(onnx_path), context_length, threads=threads)
        self.last_only = False


def open_session(spec: dict) -> Session:
    """The session a worker spec asks for (see `worker.py` for the spec's fields)."""
    backend, threads, context = spec["backend"], int(spec["threads"]), int(spec["context_length"])
    if backend == "llama.cpp":
        return LlamaCppSession(spec["gguf_path"], threads, context, spec["kv_type"], max(spec["prompt_lengths"]))
    if backend == "onnxruntime" and spec.get("onnx_path"):
        return OnnxRuntimeSession(spec["onnx_path"], threads, context)
    if backend == "torch":
        from edgekit.bench.torch_peer import TorchSession
        from edgekit.model import load

        return TorchSession(load(spec["model_path"]), spec["weights"], threads, context)
    return EdgekitSession(backend, spec["model_path"], threads, context)
