"""The issue's int4 target, run for real: int4 group-32 stories260K within 3% of the float perplexity on the
40 held-out TinyStories documents the quality table scores (docs/QUALITY.md), with every block linear packed
as ek_i4 g32 (fp16 scales, Q4_0 codes) and the tied embedding at the default f16."""

from __future__ import annotations

import pytest
import torch

from edgekit.formats import QuantizedTensor
from edgekit.model import load
from edgekit.quantize.evaluate import compare_models
from edgekit.quantize.pipeline import is_block_linear
from edgekit.quantize.qat import QATConfig, quantize_qat
from edgekit.quantize.quality_table import EVAL_DOCUMENTS, INT4_TARGET_RECIPE, qat
from edgekit.runtime import open_backend


@pytest.fixture
def one_torch_thread():
    """The training trajectory depends on the order of float reductions: run it on one thread, as the quality
    table's workers do, so the test trains what docs/QUALITY.md measured."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The recipe (AWQ + QAT with learned searched scales, and 80K tokens sampled from the float teacher added to the
# training text) is trained on one torch thread, seeded: on a given CPU it trains the same weights every run.
# Measured 2026-12-03 on an AMD EPYC (AVX2): +2.43% at 1 torch thread and +2.43% at 2 (KL 0.0184), a 0.57% margin;
# the previous recipe (no teacher text) gave +2.96% on the same machine.
@pytest.mark.slow
def test_int4_g32_perplexity_is_within_3_percent_of_float(models, tinystories, one_torch_thread):
    stories = load(models / "stories260K.bin")
    fmt, group, _, steps, lr, options = INT4_TARGET_RECIPE
    config = qat(fmt, group, steps, lr, **options)
    packed = quantize_qat(stories, tinystories, config)
    linears = [name for name in packed.tensors if is_block_linear(name)]
    assert len(linears) == 7 * stories.config.n_layers
    for name in linears:
        tensor = packed.tensors[name]
        assert isinstance(tensor, QuantizedTensor) and (tensor.format, tensor.group_size) == ("ek_i4", 32), name
    assert QATConfig.from_json(packed.metadata["qat_config"]) == config
    report = compare_models(open_backend(stories), open_backend(packed), tinystories, max_documents=EVAL_DOCUMENTS)
    excess = report.perplexity / report.reference_perplexity - 1
    print(f"int4 g32: perplexity {report.perplexity:.4f} vs float {report.reference_perplexity:.4f} ({excess:+.2%}), "
          f"KL {report.mean_kl:.5f}")
    assert excess <= 0.03
