"""The runtime back-end interface and the numpy reference back end.

Every back end (reference, native, llama.cpp, onnxruntime, fpga, bridge) offers the same small surface:
`prefill(tokens)` runs a batch of tokens after whatever is cached and returns their logits,
`decode(token)` runs one token, `reset()` forgets the sequence and `close()` frees resources.
"""

from __future__ import annotations

import importlib
from typing import Protocol, Sequence

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.model.model import Model
from edgekit.model.reference import KVCache, ReferenceForward


class Backend(Protocol):
    name: str
    model: Model

    @property
    def position(self) -> int: ...

    @property
    def context_length(self) -> int: ...

    def prefill(self, tokens: Sequence[int]) -> np.ndarray: ...

    def decode(self, token: int) -> np.ndarray: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class ReferenceBackend:
    """The numpy float32 reference forward behind the `Backend` interface (the oracle; slow)."""

    name = "reference"

    def __init__(self, model: Model, context_length: int | None = None):
        self.model = model
        self.forward = ReferenceForward(model)
        self.cache = KVCache(model.config, context_length)

    @property
    def position(self) -> int:
        return self.cache.length

    @property
    def context_length(self) -> int:
        return self.cache.max_len

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        return self.forward.forward(tokens, self.cache)

    def decode(self, token: int) -> np.ndarray:
        return self.forward.forward([token], self.cache)[0]

    def reset(self) -> None:
        self.cache.reset()

    def close(self) -> None:
        self.cache = KVCache(self.model.config, 1)


# name -> the class, or "module:Class" imported on first use (so a back end's own dependencies,
# llama-cpp-python or onnxruntime, are only imported when it is chosen).
BACKENDS: dict[str, type | str] = {
    "reference": ReferenceBackend,
    "native": "edgekit.runtime.native:NativeBackend",
    "llama.cpp": "edgekit.runtime.llamacpp:LlamaCppBackend",
    "onnxruntime": "edgekit.runtime.onnxrt:OnnxRuntimeBackend",
    "bridge": "edgekit.cloud_bridge.backend:BridgeBackend",
    "fpga": "edgekit.fpga.backend:FpgaBackend",
}

BACKEND_EXTRAS = {"llama.cpp": 'pip install "edgekit[llamacpp]"', "onnxruntime": 'pip install "edgekit[onnx]"'}


def backend_class(name: str) -> type:
    """The back-end class registered under `name` (imported on first use)."""
    if name not in BACKENDS:
        raise EdgekitError(f"unknown back end {name!r}; available: {sorted(BACKENDS)}",
                           fix=f"pass --backend with one of {sorted(BACKENDS)}")
    entry = BACKENDS[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        try:
            entry = getattr(importlib.import_module(module), attr)
        except ImportError as exc:       # the back end's own dependency (llama_cpp, onnxruntime) is missing
            raise EdgekitError(f"back end {name!r} cannot be loaded: {exc}",
                               fix=f"install what it needs ({BACKEND_EXTRAS.get(name, 'see the README')})") from None
        BACKENDS[name] = entry
    return entry


def open_backend(model: Model, name: str = "reference", context_length: int | None = None) -> Backend:
    """Open `model` on the named back end; each back end's constructor takes (model, context_length)."""
    return backend_class(name)(model, context_length)
