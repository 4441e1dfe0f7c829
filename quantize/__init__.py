"""Quantization workflows (edgekit.quantize).

`config.QuantizeConfig` is the recipe; `pipeline.quantize_model` applies it (optional Hadamard rotation,
then RTN / absmean / GPTQ per tensor) and `workflow.quantize_checkpoint` writes the `.edgekit` file.
`evaluate` measures perplexity, KL divergence, top-1 agreement and per-layer error; `quality_table`
regenerates docs/QUALITY.md; `memory_check` measures streaming memory on a 1B-parameter checkpoint.
QAT / distillation and the built-in default model are in progress (see ARCHITECTURE.md).
"""
