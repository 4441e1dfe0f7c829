"""Quantization workflows (edgekit.quantize).

Built so far: quality evaluation (`evaluate`: perplexity). Not built yet: packed formats, RTN /
absmean / GPTQ, rotations, QAT and distillation (see ARCHITECTURE.md).
"""
