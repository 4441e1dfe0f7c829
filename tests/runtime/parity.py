"""Helpers for back-end parity tests: edgekit's own engine (native when it is importable, else the
reference) against llama.cpp / onnxruntime, by greedy tokens and by top-1 agreement with KL."""

from __future__ import annotations

import importlib.util

import numpy as np

from edgekit.runtime import open_backend

STORIES260K_START = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
                     "One day, she saw a big, red ball.")


def edgekit_backend_name() -> str:
    try:
        return "native" if importlib.util.find_spec("edgekit.runtime.native") else "reference"
    except ImportError:
        return "reference"


def edgekit_backend(model):
    return open_backend(model, edgekit_backend_name())


def greedy(backend, prompt=(1,), steps: int = 64) -> list[int]:
    """`steps` greedy tokens after `prompt` (no EOS stop), from a fresh sequence."""
    backend.reset()
    logits, out = backend.prefill(list(prompt))[-1], []
    for _ in range(steps):
        out.append(int(np.argmax(logits)))
        logits = backend.decode(out[-1])
    return out


def check_protocol(backend, vocab: int) -> None:
    """prefill -> float32 [T, vocab]; decode -> [vocab]; reset starts over with identical logits."""
    first = backend.prefill([1, 20, 30])
    assert first.shape == (3, vocab) and first.dtype == np.float32
    step = backend.decode(int(np.argmax(first[-1])))
    assert step.shape == (vocab,) and step.dtype == np.float32 and backend.position == 4
    backend.reset()
    assert backend.position == 0
    np.testing.assert_allclose(backend.prefill([1, 20, 30]), first, rtol=0, atol=1e-5)
