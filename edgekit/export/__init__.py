"""Exporters from edgekit models to other runtimes' files (GGUF for llama.cpp; ONNX not built yet)."""
