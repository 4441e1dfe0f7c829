"""Runtimes: back ends that run a `Model`, and generation on top of them."""

from edgekit.runtime.backend import BACKENDS, Backend, ReferenceBackend, open_backend
from edgekit.runtime.generate import GenerationStats, TextStream, generate_tokens

__all__ = ["BACKENDS", "Backend", "GenerationStats", "ReferenceBackend", "TextStream", "generate_tokens",
           "open_backend"]
