"""AWQ scales: folding them leaves the float model's function unchanged, the searched scales never raise the
calibration output error over no scaling, and models without norm weights to fold into are refused."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import UnsupportedModelError
from edgekit.model import load
from edgekit.model.lazy import materialize
from edgekit.model.reference import KVCache, ReferenceForward
from edgekit.quantize.awq import awq_fold, output_error, search_scale
from edgekit.quantize.calibration import calibration_sequences, collect_hessian, embed_sequences

CALIB_TOKENS = 1024


@pytest.fixture(scope="module")
def stories(models):
    return load(models / "stories260K.bin")


@pytest.fixture(scope="module")
def sequences(stories, tinystories):
    return calibration_sequences(stories.tokenizer, tinystories.read_text(encoding="utf-8"), seq_len=256,
                                 max_tokens=CALIB_TOKENS, first_document=40)


@pytest.fixture(scope="module")
def folded(stories, sequences):
    return awq_fold(stories, sequences, "ek_i4", 32)


def test_folded_float_model_computes_the_same_logits(stories, folded, tinystories):
    model, alphas = folded
    assert any(alpha > 0 for alpha in alphas.values())               # something was actually scaled
    changed = [n for n in stories.tensors if n.startswith("layers.") and
               not np.array_equal(materialize(stories.tensors[n]), model.tensors[n])]
    assert any(n.endswith("attn_norm") for n in changed) and any(n.endswith("w2") for n in changed)
    tokens = stories.tokenizer.encode(tinystories.read_text(encoding="utf-8").split("<|endoftext|>")[0].strip(),
                                      add_bos=True)[:200]
    before = ReferenceForward(stories).forward(tokens, KVCache(stories.config))
    after = ReferenceForward(model).forward(tokens, KVCache(model.config))
    np.testing.assert_allclose(after, before, atol=1e-4, rtol=0)
    assert (after.argmax(-1) == before.argmax(-1)).mean() == 1.0


def test_searched_scale_never_raises_the_output_error(stories, sequences):
    cache = KVCache(stories.config, max(len(s) for s in sequences))
    hessian = collect_hessian(stories, embed_sequences(stories, sequences), "layers.0.wq", "attention", cache)
    weights = [np.asarray(materialize(stories.tensors[f"layers.0.{n}"]), np.float32) for n in ("wq", "wk", "wv")]
    scale, alpha = search_scale(weights, hessian, CALIB_TOKENS, "ek_i4", 32, "none")
    plain = output_error(weights, np.float32(1.0), hessian, "ek_i4", 32, "none")
    assert output_error(weights, scale, hessian, "ek_i4", 32, "none") <= plain
    assert scale.shape == (stories.config.dim,) and np.all(scale > 0) and 0 <= alpha <= 1


def test_models_without_norm_weights_are_refused(models, sequences):
    bitnet = load(models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin")
    with pytest.raises(UnsupportedModelError, match="norm"):
        awq_fold(bitnet, sequences, "ek_i4", 32)


def test_qat_config_takes_awq_for_integer_formats_only():
    from edgekit.errors import ConfigError
    from edgekit.quantize.qat import QATConfig

    config = QATConfig(format="ek_i4", group_size=32, awq=True)
    assert QATConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="awq"):
        QATConfig(format="ek_t2", awq=True)
    with pytest.raises(ConfigError, match="awq"):
        QATConfig(format="ek_i4", awq="yes")
