"""GGUF export: exact type mappings, llama.cpp runs the file, round trip through edgekit's loader."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from edgekit.errors import UnsupportedModelError
from edgekit.export.gguf_writer import export_gguf
from edgekit.model import load
from edgekit.model.reference import KVCache, ReferenceForward
from edgekit.quantize.config import QuantizeConfig
from edgekit.quantize.pipeline import quantize_model

from tests.model.gguf_writer import llama_cpp_permute
from tests.model.hf_tiny import make_model, save_hf_dir

DIMS = dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
TOKENS = [1, 403, 407, 261, 378, 30, 99]


def greedy(model, steps=64):
    forward, cache = ReferenceForward(model), KVCache(model.config)
    logits, out = forward.forward([1], cache)[0], []
    for _ in range(steps):
        out.append(int(np.argmax(logits)))
        logits = forward.forward([out[-1]], cache)[0]
    return out


def llama_cpp_greedy(path, steps=64):
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False, logits_all=True,
                          type_k=0, type_v=0)
    llm.eval([1])
    out = []
    for _ in range(steps):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([out[-1]])
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, models):
    """A random llama at shapes every GGUF block size divides, with stories260K's sentencepiece tokenizer."""
    import shutil

    path = save_hf_dir(make_model("llama", seed=9, **DIMS), tmp_path_factory.mktemp("tiny"))
    (path / "tokenizer.json").unlink()
    shutil.copyfile(models / "tok512.model", path / "tokenizer.model")
    return load(path)


def test_float_export_runs_in_llama_cpp_token_for_token(models, tmp_path):
    model = load(models / "stories260K_hf")
    report = export_gguf(model, tmp_path / "f32.gguf")
    assert all(t.exact for t in report.tensors)
    assert llama_cpp_greedy(tmp_path / "f32.gguf") == greedy(model)
    reloaded = load(tmp_path / "f32.gguf")
    a = ReferenceForward(model).forward(TOKENS, KVCache(model.config))
    b = ReferenceForward(reloaded).forward(TOKENS, KVCache(reloaded.config))
    assert np.array_equal(a, b)


def test_int4_group32_becomes_ggml_q4_0_bytes(tiny, tmp_path):
    packed = quantize_model(tiny, QuantizeConfig(format="ek_i4", method="rtn", group_size=32))
    report = export_gguf(packed, tmp_path / "q4.gguf")
    entries = {t.name: t for t in report.tensors}
    assert entries["layers.0.w2"].gguf_type == "Q4_0" and entries["layers.0.w2"].exact
    reader = gguf.GGUFReader(tmp_path / "q4.gguf")
    stored = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    source = llama_cpp_permute(np.asarray(tiny.tensors["layers.0.wq"]), 4)
    expected = gguf.quants.quantize(source, gguf.GGMLQuantizationType.Q4_0)  # ggml's own quantizer
    np.testing.assert_array_equal(np.asarray(stored.data).reshape(expected.shape), expected)
    reloaded = load(tmp_path / "q4.gguf")
    a = ReferenceForward(packed).forward(TOKENS, KVCache(packed.config))
    b = ReferenceForward(reloaded).forward(TOKENS, KVCache(reloaded.config))
    assert np.abs(a - b).max() <= 1e-4


@pytest.mark.parametrize("fmt,qtype", [("ek_t2", "TQ2_0"), ("ek_t1", "TQ1_0")])
def test_ternary_exports_trits_exactly(tiny, tmp_path, fmt, qtype):
    packed = quantize_model(tiny, QuantizeConfig(format=fmt))
    report = export_gguf(packed, tmp_path / "t.gguf")
    entry = next(t for t in report.tensors if t.name == "layers.1.w1")
    assert entry.gguf_type == qtype
    reloaded = load(tmp_path / "t.gguf")
    ours = packed.tensors["layers.1.w1"]
    trits = ours.values()[:, : ours.cols]
    theirs = np.asarray(reloaded.tensors["layers.1.w1"])
    scale = np.float32(ours.scales[0, 0])
    np.testing.assert_array_equal(np.sign(theirs), trits)           # every trit survives
    assert np.abs(np.abs(theirs[trits != 0]) - scale).max() <= scale * 2**-11  # fp16 rounding of the scale only
    assert entry.max_abs_error <= scale * 2**-11


def test_formats_gguf_cannot_hold_are_refused_or_requantized(tiny, tmp_path):
    packed = quantize_model(tiny, QuantizeConfig(format="ek_i3", method="rtn"))
    with pytest.raises(UnsupportedModelError, match="ek_i3.*Q4_0") as info:
        export_gguf(packed, tmp_path / "i3.gguf")
    assert "requantize" in info.value.fix and not (tmp_path / "i3.gguf").exists()
    report = export_gguf(packed, tmp_path / "i3.gguf", requantize="Q8_0")
    entry = next(t for t in report.tensors if t.name == "layers.0.wq")
    assert entry.gguf_type == "Q8_0" and not entry.exact and 0 < entry.max_abs_error < 0.01


def test_rows_that_do_not_fit_a_block_fall_back_and_are_listed(models, tmp_path):
    packed = quantize_model(load(models / "stories260K.bin"), QuantizeConfig(format="ek_i4", method="rtn"))
    report = export_gguf(packed, tmp_path / "s.gguf")
    fallbacks = {t.name for t in report.fallbacks}
    assert fallbacks == {f"layers.{i}.w2" for i in range(5)}  # 172 columns: not a multiple of 32
    assert all(t.gguf_type == "F16" for t in report.fallbacks)


def test_bitllama2c_is_refused_for_the_llama_architecture(models, tmp_path):
    model = load(models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin")
    with pytest.raises(UnsupportedModelError, match="per-linear input norm"):
        export_gguf(model, tmp_path / "b.gguf")
