"""The real checkpoints in ../shared/models reproduce their documented behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import sentencepiece

from edgekit.model import load
from edgekit.model.reference import KVCache, ReferenceForward
from edgekit.quantize.evaluate import split_documents

STORIES_TEXT = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
                "One day, she saw a big, red ball.")
BITNET_TEXT = {
    "bitllama2c_3M_ternary_lsbfirst.bin": "Once upon a time, there was a little girl named Lily. She loved to "
                                          "play outside and explore the world around her",
    "bitllama2c_1M_ternary_msbfirst.bin": "Once upon a time, there was a little girl named Lily. She loved to "
                                          "play with her toys and run around in the sky",
}


def greedy(model, steps: int, prompt=(1,)) -> list[int]:
    forward, cache = ReferenceForward(model), KVCache(model.config, 1024)
    logits = forward.forward(list(prompt), cache)[-1]
    out = []
    for _ in range(steps):
        out.append(int(np.argmax(logits)))
        logits = forward.forward([out[-1]], cache)[0]
    return out


@pytest.fixture(scope="module")
def stories_forms(models):
    return {"bin": load(models / "stories260K.bin"), "gguf": load(models / "stories260K.gguf"),
            "hf": load(models / "stories260K_hf")}


def test_three_forms_hold_the_same_tensors(stories_forms):
    reference = stories_forms["bin"].tensors
    for form in ("gguf", "hf"):
        tensors = stories_forms[form].tensors
        for name, array in reference.items():
            np.testing.assert_array_equal(tensors[name], array, err_msg=f"{form}: {name}")


def test_three_forms_give_identical_greedy_tokens_for_200_steps(stories_forms):
    runs = {form: greedy(model, 200) for form, model in stories_forms.items()}
    assert runs["bin"] == runs["gguf"] == runs["hf"]
    for form, model in stories_forms.items():
        assert model.tokenizer.decode(runs[form]).startswith(STORIES_TEXT), form


@pytest.mark.parametrize("name", sorted(BITNET_TEXT))
def test_bitllama2c_models_reproduce_their_documented_text(models, name):
    model = load(models / "bitnet" / name)
    assert model.config.ternary_weights and model.source_format == "bitllama2c"
    text = model.tokenizer.decode(greedy(model, 60))
    assert text.startswith(BITNET_TEXT[name]), text


def test_bitllama2c_weights_are_kept_exactly(models):
    """The loader's trits and scales equal an independent decode of the documented byte layout."""
    path = models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin"
    model = load(path)
    raw = path.read_bytes()
    dim, vocab = 128, 512
    offset = 256 + 4 * (dim + vocab * dim)  # header, final norm, embedding; then wq of layer 0
    scale = np.frombuffer(raw[offset:offset + 4], "<f4")[0]
    first_byte = raw[offset + 4]
    trits = [{0: 0, 1: 1, 3: -1}[(first_byte >> shift) & 3] for shift in (6, 4, 2, 0)]
    assert model.tensors["layers.0.wq.scale"] == scale
    # wq rows are reordered to rotate-half; row 0 stays row 0 (head 0, first element of pair 0).
    assert model.tensors["layers.0.wq"][0, :4].tolist() == trits
    for name, array in model.tensors.items():
        if name.endswith(("wq", "wk", "wv", "wo", "w1", "w2", "w3")):
            assert set(np.unique(array)) <= {-1.0, 0.0, 1.0}, name


def test_tokenizers_of_all_forms_agree_with_sentencepiece(stories_forms, models, tinystories):
    sp = sentencepiece.SentencePieceProcessor(model_file=str(models / "tok512.model"))
    docs = split_documents(tinystories.read_text(encoding="utf-8"))
    expected = [[1] + sp.encode(doc) for doc in docs]
    for form, model in stories_forms.items():
        assert [model.tokenizer.encode(doc) for doc in docs] == expected, form
    for form, model in stories_forms.items():
        assert model.tokenizer.decode(expected[3]) == docs[3], form


def test_llama_cpp_runs_the_gguf_to_the_same_greedy_tokens(stories_forms, models):
    """llama.cpp (an engine nobody here wrote) agrees with the reference forward on the GGUF form."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(models / "stories260K.gguf"), n_ctx=256, n_threads=2, verbose=False, type_k=0, type_v=0,  # F32 KV cache
                          logits_all=True)
    ours = greedy(stories_forms["gguf"], 64)
    theirs = []
    llm.eval([1])
    for _ in range(64):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        theirs.append(token)
        llm.eval([token])
    assert theirs == ours
    forward = ReferenceForward(stories_forms["gguf"])
    logits = forward.forward([1] + ours[:-1], KVCache(stories_forms["gguf"].config))
    assert np.abs(np.asarray(llm.scores[:64]) - logits).max() < 1e-3
