"""The numpy reference forward against transformers on tiny random models of every supported model_type."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.model import load
from edgekit.model.reference import KVCache, ReferenceForward

from .hf_tiny import hf_logits, make_model, save_hf_dir

TOKENS = [1, 5, 17, 3, 88, 42, 9, 60, 2, 33, 71, 14]

CASES = {
    "llama-gqa2-untied": ("llama", {}),
    "llama-mha-tied": ("llama", dict(num_key_value_heads=4, tie_word_embeddings=True)),
    "llama-mqa-theta": ("llama", dict(num_key_value_heads=1, rope_theta=500000.0)),
    "llama-odd-heads": ("llama", dict(hidden_size=48, num_attention_heads=3, num_key_value_heads=1)),
    "llama-attention-bias": ("llama", dict(attention_bias=True)),
    "llama3-rope-scaling": ("llama", dict(rope_parameters=dict(
        rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=16)), ),
    "llama-linear-rope": ("llama", dict(rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0))),
    "llama-head-dim": ("llama", dict(head_dim=16, num_attention_heads=4, num_key_value_heads=2)),
    "qwen2-bias-tied": ("qwen2", dict(tie_word_embeddings=True, num_key_value_heads=2)),
    "qwen2-gqa4": ("qwen2", dict(num_attention_heads=8, num_key_value_heads=2)),
    "qwen3-qknorm": ("qwen3", dict(head_dim=16)),
    "qwen3-qknorm-tied-odd": ("qwen3", dict(num_attention_heads=3, num_key_value_heads=3, head_dim=16,
                                            tie_word_embeddings=True)),
    "bitnet-subnorms": ("bitnet", {}),
    "bitnet-tied-mqa": ("bitnet", dict(num_key_value_heads=1, tie_word_embeddings=True)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    model_type, overrides = CASES[request.param]
    hf = make_model(model_type, seed=hash(request.param) % 1000, **overrides)
    path = save_hf_dir(hf, tmp_path_factory.mktemp(request.param))
    return hf, load(path)


def test_prefill_logits_match_transformers(case):
    hf, model = case
    ours = ReferenceForward(model).forward(TOKENS, KVCache(model.config))
    theirs = hf_logits(hf, TOKENS).numpy()
    assert np.abs(ours - theirs).max() <= 1e-4


def test_prefill_then_decode_equals_one_prefill(case):
    _, model = case
    forward = ReferenceForward(model)
    whole = forward.forward(TOKENS, KVCache(model.config))
    cache = KVCache(model.config)
    pieces = [forward.forward(TOKENS[:5], cache)] + [forward.forward([t], cache) for t in TOKENS[5:]]
    assert np.abs(np.concatenate(pieces) - whole).max() <= 1e-5


def test_config_switches_follow_model_type(case):
    hf, model = case
    c = model.config
    assert c.architecture == hf.config.model_type
    assert c.qk_norm == (c.architecture == "qwen3")
    assert c.sub_norms == (c.architecture == "bitnet")
    assert c.activation == ("relu2" if c.architecture == "bitnet" else "silu")
    assert c.tie_embeddings == hf.config.tie_word_embeddings
    assert c.qkv_bias == (c.architecture == "qwen2" or bool(getattr(hf.config, "attention_bias", False)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints_load_exactly(tmp_path, dtype):
    hf = make_model("llama")
    path = save_hf_dir(hf, tmp_path, dtype=dtype)
    model = load(path)
    expected = hf.model.layers[0].self_attn.q_proj.weight.detach().to(dtype).float().numpy()
    np.testing.assert_array_equal(model.tensors["layers.0.wq"], expected)
    hf_rounded = make_model("llama")
    hf_rounded.load_state_dict({k: v.to(dtype).float() for k, v in hf.state_dict().items()})
    ours = ReferenceForward(model).forward(TOKENS, KVCache(model.config))
    assert np.abs(ours - hf_logits(hf_rounded, TOKENS).numpy()).max() <= 1e-4


def test_sharded_checkpoint_loads_like_single_file(tmp_path):
    hf = make_model("qwen2")
    single = load(save_hf_dir(hf, tmp_path / "single"))
    sharded_path = save_hf_dir(hf, tmp_path / "sharded", max_shard_size="40KB")
    assert (sharded_path / "model.safetensors.index.json").is_file()
    sharded = load(sharded_path)
    assert sharded.tensors.keys() == single.tensors.keys()
    for name, array in single.tensors.items():
        np.testing.assert_array_equal(sharded.tensors[name], array)
