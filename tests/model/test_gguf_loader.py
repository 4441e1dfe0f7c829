"""GGUF loading: every supported tensor type, the q/k un-permutation, and both vocabulary kinds."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import UnsupportedModelError
from edgekit.formats import QuantizedTensor
from edgekit.model import load
from edgekit.model.reference import KVCache, ReferenceForward
from edgekit.model.tokenizer import build_gpt2_bpe_tokenizer
from edgekit.quantize.evaluate import split_documents

from .gguf_writer import add_bpe_vocab, add_spm_vocab, llama_cpp_permute, write_gguf
from .hf_tiny import hf_logits, make_model

TOKENS = [1, 300, 17, 45, 260, 500, 9, 77]
# Ternary and 4/8-bit blocks need rows of 32 or 256 weights: dims are multiples of 256.
DIMS = dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture(scope="module")
def hf_model():
    return make_model("llama", seed=3, **DIMS)


PACKED_AS = {"Q8_0": ("ek_i8", 32), "Q4_0": ("ek_i4", 32), "TQ1_0": ("ek_t2", 256), "TQ2_0": ("ek_t2", 256)}


def dense(tensor) -> np.ndarray:
    return tensor.dequantize() if isinstance(tensor, QuantizedTensor) else np.asarray(tensor)


@pytest.mark.parametrize("weight_type", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "TQ1_0", "TQ2_0"])
def test_each_tensor_type_loads_as_gguf_dequantizes_it(tmp_path, hf_model, models, weight_type):
    path = tmp_path / f"tiny-{weight_type}.gguf"
    stored = write_gguf(path, hf_model, weight_type, vocab=lambda w: add_spm_vocab(w, models / "tok512.model"))
    model = load(path)
    t = model.tensors
    np.testing.assert_array_equal(dense(t["tok_embeddings"]), stored["token_embd.weight"])
    np.testing.assert_array_equal(dense(t["layers.1.w2"]), stored["blk.1.ffn_down.weight"])
    # q/k come back in rotate-half order: permuting them again gives exactly what the file stores.
    np.testing.assert_array_equal(llama_cpp_permute(dense(t["layers.0.wq"]), 4), stored["blk.0.attn_q.weight"])
    np.testing.assert_array_equal(llama_cpp_permute(dense(t["layers.1.wk"]), 2), stored["blk.1.attn_k.weight"])
    assert weight_type in model.metadata["gguf.tensor_types"]
    if weight_type in PACKED_AS:  # ggml's own quantizer picks a scale per block: they stay per block, packed
        fmt, group = PACKED_AS[weight_type]
        assert (t["layers.1.w2"].format, t["layers.1.w2"].group_size) == (fmt, group)
    else:
        assert not isinstance(t["layers.1.w2"], QuantizedTensor)


def test_f32_gguf_logits_match_transformers(tmp_path, hf_model, models):
    path = tmp_path / "tiny.gguf"
    write_gguf(path, hf_model, "F32", vocab=lambda w: add_spm_vocab(w, models / "tok512.model"))
    model = load(path)
    assert not model.config.tie_embeddings
    ours = ReferenceForward(model).forward(TOKENS, KVCache(model.config))
    assert np.abs(ours - hf_logits(hf_model, TOKENS).numpy()).max() <= 1e-4


def test_tied_gguf_has_no_output_tensor(tmp_path, models):
    tied = make_model("llama", seed=4, tie_word_embeddings=True, **DIMS)
    path = tmp_path / "tied.gguf"
    write_gguf(path, tied, "F32", vocab=lambda w: add_spm_vocab(w, models / "tok512.model"))
    model = load(path)
    assert model.config.tie_embeddings and "output" not in model.tensors
    ours = ReferenceForward(model).forward(TOKENS, KVCache(model.config))
    assert np.abs(ours - hf_logits(tied, TOKENS).numpy()).max() <= 1e-4


def test_unsupported_tensor_type_is_rejected_by_name(tmp_path, hf_model, models):
    path = tmp_path / "k-quant.gguf"
    write_gguf(path, hf_model, "F32", vocab=lambda w: add_spm_vocab(w, models / "tok512.model"),
               overrides={"blk.1.ffn_up.weight": "Q4_K"})
    with pytest.raises(UnsupportedModelError, match=r"blk\.1\.ffn_up\.weight.*Q4_K"):
        load(path)


@pytest.fixture(scope="module")
def trained_bpe(tinystories):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train([str(tinystories)], trainer)
    return tok


def _vocab_and_merges(tok) -> tuple[list[str], list[str]]:
    import json

    model = json.loads(tok.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


def test_gpt2_vocabulary_encodes_like_the_original_tokenizer(trained_bpe, tinystories):
    tokens, merges = _vocab_and_merges(trained_bpe)
    ours = build_gpt2_bpe_tokenizer(tokens, merges, None, pre="gpt-2", bos_id=None, eos_ids=(), add_bos=False,
                                    source="test")
    docs = split_documents(tinystories.read_text(encoding="utf-8"))[:40]
    for doc in docs:
        expected = trained_bpe.encode(doc).ids
        assert ours.encode(doc) == expected
        assert ours.decode(expected) == doc


def test_gguf_with_gpt2_vocabulary_loads(tmp_path, hf_model, trained_bpe):
    tokens, merges = _vocab_and_merges(trained_bpe)
    assert len(tokens) == 512
    path = tmp_path / "bpe.gguf"
    write_gguf(path, hf_model, "Q8_0", vocab=lambda w: add_bpe_vocab(w, tokens, merges, "gpt-2"))
    model = load(path)
    text = "Once upon a time, Tim went to the park."
    assert model.tokenizer.encode(text) == trained_bpe.encode(text).ids


BITNET = dict(DIMS, hidden_act="silu", tie_word_embeddings=True)  # llama.cpp's bitnet architecture: SiLU, tied


@pytest.fixture(scope="module")
def hf_bitnet():
    return make_model("bitnet", seed=5, **BITNET)


def test_bitnet_gguf_from_another_tool_matches_transformers(tmp_path, hf_bitnet, models):
    """A bitnet-architecture file laid out as convert_hf_to_gguf.py writes one (bitnet.* keys, sub-norms, q/k
    left in rotate-half order for NEOX RoPE): the sub-norms map, and with float activations the forward is
    transformers' BitNet (from_config, so float weights and activations)."""
    import dataclasses

    path = tmp_path / "bitnet.gguf"
    write_gguf(path, hf_bitnet, "F32", vocab=lambda w: add_spm_vocab(w, models / "tok512.model"), arch="bitnet")
    model = load(path)
    c = model.config
    assert c.architecture == "bitnet" and c.sub_norms and c.tie_embeddings and c.activation == "silu"
    assert c.act_quant == "int8_absmax"           # the architecture's own activations, absent edgekit's key
    float_acts = dataclasses.replace(model, config=dataclasses.replace(c, act_quant="none"))
    ours = ReferenceForward(float_acts).forward(TOKENS, KVCache(c))
    assert np.abs(ours - hf_logits(hf_bitnet, TOKENS).numpy()).max() <= 1e-4


@pytest.mark.parametrize("weight_type", ["TQ2_0", "TQ1_0"])
def test_bitnet_gguf_ternary_tensors_load_packed(tmp_path, models, weight_type):
    """ggml's TQ quantizer on absmean trits (one scale per tensor, as BitNet's converter does) -> the same trits
    in ek_t2 / ek_t1 with that one scale, read without requantizing."""
    from edgekit.model.ternary import absmean_ternarize

    hf = make_model("bitnet", seed=6, **BITNET)
    import torch

    with torch.no_grad():
        for name, param in hf.named_parameters():
            if name.endswith("proj.weight"):
                trits, scale = absmean_ternarize(param.numpy())
                param.copy_(torch.from_numpy(trits * np.float16(scale).astype(np.float32)))
    path = tmp_path / "t.gguf"
    write_gguf(path, hf, weight_type, vocab=lambda w: add_spm_vocab(w, models / "tok512.model"), arch="bitnet",
               overrides={"token_embd.weight": "F32"})
    tensor = load(path).tensors["layers.1.w1"]
    assert isinstance(tensor, QuantizedTensor)
    assert (tensor.format, tensor.group_size) == ({"TQ2_0": "ek_t2", "TQ1_0": "ek_t1"}[weight_type], -1)
    np.testing.assert_array_equal(tensor.dequantize(), hf.model.layers[1].mlp.gate_proj.weight.detach().numpy())


def test_bitnet_gguf_with_a_k_quant_is_rejected_by_name(tmp_path, hf_bitnet, models):
    path = tmp_path / "bitnet-k.gguf"
    write_gguf(path, hf_bitnet, "F16", vocab=lambda w: add_spm_vocab(w, models / "tok512.model"), arch="bitnet",
               overrides={"blk.0.ffn_down.weight": "Q4_K"})
    with pytest.raises(UnsupportedModelError, match=r"blk\.0\.ffn_down\.weight.*Q4_K.*supported") as info:
        load(path)
    assert "re-quantize" in info.value.fix


def test_bitnet_sub_norm_names_are_not_llama_tensors(tmp_path, hf_bitnet, models):
    path = tmp_path / "mislabelled.gguf"
    write_gguf(path, hf_bitnet, "F32", vocab=lambda w: add_spm_vocab(w, models / "tok512.model"), arch="llama")
    with pytest.raises(UnsupportedModelError, match=r"attn_sub_norm.*llama architecture"):
        load(path)
