"""Hadamard rotation: an exact change of basis of the residual stream, held to the float model's logits and
to transformers on tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.errors import UnsupportedModelError
from edgekit.model import load
from edgekit.model.loaders.edgekit_file import save_model
from edgekit.model.reference import KVCache, ReferenceForward
from edgekit.quantize.config import QuantizeConfig
from edgekit.quantize.pipeline import quantize_model
from edgekit.quantize.rotate import (hadamard_matrix, random_signs, rotate_columns, rotate_model, rotate_rows,
                                     rotation_matrix, walsh_hadamard)

from ..model.hf_tiny import hf_logits, make_model, save_hf_dir

TOKENS = [1, 5, 17, 3, 88, 42, 9, 60, 2, 33, 71, 14]
STORY = "Once upon a time, there was a little dog named Max. He liked to run in the park."

TINY = {  # every tiny model has dim 64, a power of two
    "llama": ("llama", {}),
    "llama-tied": ("llama", dict(tie_word_embeddings=True, num_key_value_heads=4)),
    "llama-attention-bias": ("llama", dict(attention_bias=True)),
    "qwen2-qkv-bias": ("qwen2", {}),
    "qwen3-qk-norm": ("qwen3", dict(head_dim=16)),
    "bitnet-sub-norms": ("bitnet", {}),
}


def logits(model, tokens) -> np.ndarray:
    return ReferenceForward(model).forward(tokens, KVCache(model.config))


@pytest.fixture(scope="module")
def stories(models):
    return load(models / "stories260K.bin")


@pytest.mark.parametrize("n", [1, 2, 8, 64, 256])
def test_randomized_hadamard_is_orthogonal_and_the_fast_transform_matches(n):
    rng = np.random.default_rng(n)
    h, q = hadamard_matrix(n), rotation_matrix(n, seed=7)
    np.testing.assert_array_equal(h @ h.T, n * np.eye(n))
    np.testing.assert_allclose(q @ q.T, np.eye(n), atol=1e-12)
    x, w = rng.standard_normal((3, 5, n)), rng.standard_normal((n, 9))
    np.testing.assert_allclose(walsh_hadamard(x), x @ h, atol=1e-9)
    np.testing.assert_allclose(rotate_rows(x, random_signs(n, 7)), x @ q, atol=1e-12)
    np.testing.assert_allclose(rotate_columns(w, random_signs(n, 7)), q.T @ w, atol=1e-12)


def test_seed_picks_the_random_diagonal():
    assert np.array_equal(random_signs(64, 3), random_signs(64, 3))
    assert not np.array_equal(random_signs(64, 3), random_signs(64, 4))
    assert set(np.unique(random_signs(64, 3))) == {-1.0, 1.0}
    with pytest.raises(ValueError, match="power"):
        hadamard_matrix(48)


def test_rotated_stories260k_gives_the_same_logits(stories):
    rotated = rotate_model(stories, seed=1)
    tokens = stories.tokenizer.encode(STORY, add_bos=True)
    assert np.abs(logits(rotated, tokens) - logits(stories, tokens)).max() <= 1e-4
    assert stories.config.tie_embeddings and not rotated.config.tie_embeddings
    assert "output" in rotated.tensors and "output" not in stories.tensors
    for name in ("norm", "layers.0.attn_norm", "layers.4.ffn_norm"):
        np.testing.assert_array_equal(rotated.tensors[name], np.ones_like(rotated.tensors[name]))
    q = rotation_matrix(64, seed=1)  # the embedding is E Q
    np.testing.assert_allclose(rotated.tensors["tok_embeddings"], stories.tensors["tok_embeddings"] @ q, atol=1e-6)
    assert json.loads(rotated.metadata["rotation"]) == {"kind": "hadamard", "seed": 1}


@pytest.fixture(scope="module", params=sorted(TINY))
def tiny(request, tmp_path_factory):
    model_type, overrides = TINY[request.param]
    hf = make_model(model_type, seed=11, hidden_size=64, **overrides)
    return hf, load(save_hf_dir(hf, tmp_path_factory.mktemp(request.param)))


def test_rotated_tiny_models_match_the_float_model_and_transformers(tiny):
    hf, model = tiny
    rotated = rotate_model(model, seed=5)
    ours = logits(rotated, TOKENS)
    assert np.abs(ours - logits(model, TOKENS)).max() <= 1e-4
    assert np.abs(ours - hf_logits(hf, TOKENS).numpy()).max() <= 1e-4
    if model.config.o_bias:  # b_o writes into the stream, so it is rotated too
        assert not np.allclose(rotated.tensors["layers.0.bo"], model.tensors["layers.0.bo"])


def test_rotation_refuses_what_it_cannot_do_exactly(tmp_path, models, stories):
    odd = load(save_hf_dir(make_model("llama", hidden_size=48), tmp_path / "odd"))
    with pytest.raises(UnsupportedModelError, match="dim 48 is not a power of two"):
        rotate_model(odd)
    with pytest.raises(UnsupportedModelError, match="per-linear input norms.*ternary.*int8_absmax"):
        rotate_model(load(models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin"))
    packed = quantize_model(stories, QuantizeConfig(format="ek_i4", method="rtn"))
    with pytest.raises(UnsupportedModelError, match="already packed"):
        rotate_model(packed)
    with pytest.raises(UnsupportedModelError, match="power of two"):
        quantize_model(odd, QuantizeConfig(format="ek_i4", method="rtn", rotate="hadamard"))


def test_pipeline_rotates_before_quantizing_and_the_file_reloads(stories, tmp_path):
    config = QuantizeConfig(format="f16", embedding_format="f32", output_format="f32", rotate="hadamard",
                            rotate_seed=3)
    packed = quantize_model(stories, config)
    assert not packed.config.tie_embeddings and packed.tensors["output"].format == "f32"
    reloaded = load(save_model(packed, tmp_path / "rotated.edgekit"))
    tokens = stories.tokenizer.encode(STORY, add_bos=True)
    reference = logits(stories, tokens)
    assert np.abs(logits(reloaded, tokens) - reference).max() <= 2e-2  # only f16 rounding of the linears
    assert QuantizeConfig.from_json(reloaded.metadata["quantize_config"]) == config
