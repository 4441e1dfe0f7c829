"""GGUF loading: every supported tensor type, the q/k un-permutation, and both vocabulary kinds."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import UnsupportedModelError
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


@pytest.mark.parametrize("weight_type", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "TQ1_0", "TQ2_0"])
def test_each_tensor_type_loads_as_gguf_dequantizes_it(tmp_path, hf_model, models, weight_type):
    path = tmp_path / f"tiny-{weight_type}.gguf"
    stored = write_gguf(path, hf_model, weight_type, vocab=lambda w: add_spm_vocab(w, models / "tok512.model"))
    model = load(path)
    t = model.tensors
    np.testing.assert_array_equal(t["tok_embeddings"], stored["token_embd.weight"])
    np.testing.assert_array_equal(t["layers.1.w2"], stored["blk.1.ffn_down.weight"])
    # q/k come back in rotate-half order: permuting them again gives exactly what the file stores.
    np.testing.assert_array_equal(llama_cpp_permute(np.asarray(t["layers.0.wq"]), 4), stored["blk.0.attn_q.weight"])
    np.testing.assert_array_equal(llama_cpp_permute(np.asarray(t["layers.1.wk"]), 2), stored["blk.1.attn_k.weight"])
    assert weight_type in model.metadata["gguf.tensor_types"]


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
