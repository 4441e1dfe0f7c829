"""ONNX export: the graph held to the numpy reference forward on every architecture switch, the directory
layout (genai config, tokenizer, external data, ORT format) and the bad-input paths."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edgekit.errors import ConfigError, UnsupportedModelError  # noqa: E402
from edgekit.export.onnx_graph import OnnxGraphConfig  # noqa: E402
from edgekit.formats import get_format  # noqa: E402
from edgekit.export.onnx_writer import export_onnx  # noqa: E402
from edgekit.model.config import RopeConfig  # noqa: E402
from edgekit.model.reference import KVCache, ReferenceForward  # noqa: E402
from edgekit.runtime.onnxrt import OnnxRuntimeBackend, load_onnx_export  # noqa: E402
from tests.export.onnx_models import packed_model, random_model, tiny_config  # noqa: E402

EXACT = OnnxGraphConfig(accuracy_level=0)
VARIANTS = {
    "llama-gqa": {},
    "mha-untied": {"n_kv_heads": 4},
    "mqa-tied": {"n_kv_heads": 1, "tie_embeddings": True},
    "qwen2-bias": {"qkv_bias": True, "o_bias": True},
    "qwen3-qk-norm": {"qk_norm": True, "head_dim": 8, "n_heads": 6, "n_kv_heads": 3},
    "bitnet": {"sub_norms": True, "activation": "relu2", "act_quant": "int8_absmax"},
    "bitllama2c": {"linear_input_norm": True, "ternary_weights": True, "act_quant": "int8_absmax",
                   "tie_embeddings": True},
    "rope-linear": {"rope": RopeConfig(theta=500000.0, scaling="linear", factor=4.0)},
    "rope-llama3": {"rope": RopeConfig(theta=500000.0, scaling="llama3", factor=8.0, original_max_position=64)},
}
TOKENS = [1, 17, 250, 33, 4, 99, 123, 7]


def reference_logits(model, tokens, steps=()):
    forward, cache = ReferenceForward(model), KVCache(model.config)
    out = [forward.forward(tokens, cache)]
    for token in steps:
        out.append(forward.forward([token], cache))
    return out


def onnx_logits(model, tokens, steps=(), config=EXACT):
    backend = OnnxRuntimeBackend(model, graph_config=config)
    try:
        out = [backend.prefill(tokens)]
        out += [backend.decode(t)[None] for t in steps]
        return out
    finally:
        backend.close()


def assert_close(got, want, tol):
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == np.float32
        assert np.abs(g - w).max() <= tol * max(1.0, np.abs(w).max()), np.abs(g - w).max()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_float_graph_matches_reference(variant):
    model = random_model(tiny_config(**VARIANTS[variant]), seed=len(variant))
    steps = [5, 200, 41]
    # int8 activations: one rounding flip moves a logit by a few 1e-3, so those variants get a wider bound
    tol = 2e-2 if model.config.act_quant != "none" else 1e-4
    assert_close(onnx_logits(model, TOKENS, steps), reference_logits(model, TOKENS, steps), tol)


def test_rope_freq_factors_are_applied():
    model = random_model(tiny_config())
    tensors = dict(model.tensors, rope_freqs=np.linspace(1.0, 8.0, model.config.head_dim // 2).astype(np.float32))
    model = replace(model, tensors=tensors)
    assert_close(onnx_logits(model, TOKENS), reference_logits(model, TOKENS), 1e-4)


@pytest.mark.parametrize("fmt_name,group", [("ek_i4", 32), ("ek_u4", 64), ("ek_i2", 32), ("ek_i8", 32),
                                            ("ek_i8", 0), ("ek_t2", -1), ("ek_t1", -1)])
def test_packed_graph_matches_reference(fmt_name, group):
    model = packed_model(random_model(tiny_config(hidden_dim=88)), fmt_name, group)   # 88: rows padded to blocks
    steps = [9, 77]
    want = reference_logits(model, TOKENS, steps)
    assert_close(onnx_logits(model, TOKENS, steps), want, 1e-4)
    fast = onnx_logits(model, TOKENS, steps, OnnxGraphConfig(accuracy_level=4, activation_passes=1))
    assert_close(fast, want, 5e-2)             # int8 activations per block inside MatMulNBits
    two = onnx_logits(model, TOKENS, steps, OnnxGraphConfig(accuracy_level=4))   # + the rounding residual
    assert_close(two, want, 1e-3 if get_format(fmt_name).bits > 2 else 5e-2)


@pytest.mark.parametrize("fmt_name,group", [("ek_i4", 32), ("ek_i8", 32), ("ek_u4", 128)])
def test_two_activation_passes_cancel_mlas_int8_rounding(fmt_name, group):
    """accuracy_level 4 with activation_passes=2 feeds x and x minus MLAS's per-block int8 rounding of it: if the
    graph rounds as MLAS does (scale amax/127, x * 127/amax rounded half to even, per weight block, K zero-padded),
    the error left is that of rounding the ~127x smaller residual, far below one int8 pass's. hidden_dim 88 is not
    a multiple of the blocks, so the padded last block is covered."""
    model = packed_model(random_model(tiny_config(hidden_dim=88), seed=3), fmt_name, group)
    want = np.concatenate(reference_logits(model, TOKENS, [9, 77]), axis=0)
    errors = {}
    for passes in (1, 2):
        got = onnx_logits(model, TOKENS, [9, 77], OnnxGraphConfig(accuracy_level=4, activation_passes=passes))
        errors[passes] = float(np.abs(np.concatenate(got, axis=0) - want).max())
    print(f"{fmt_name} g{group}: max |logit error| one pass {errors[1]:.2e}, two passes {errors[2]:.2e}")
    assert errors[2] * 30 < errors[1] and errors[2] < 1e-3 * np.abs(want).max()


def test_two_passes_only_where_activations_are_float(tmp_path):
    """int8-activation models (act_quant) already feed integers; level 0 has float activations: one pass each."""
    import onnx

    def split_nodes(model, config):  # Splits of a MatMulNBits output into its two passes
        export_onnx(model, tmp_path / "x", config, overwrite=True)
        nodes = onnx.load(str(tmp_path / "x" / "model.onnx")).graph.node
        nbits = {o for n in nodes if n.op_type == "MatMulNBits" for o in n.output}
        return sum(n.op_type == "Split" and n.input[0] in nbits for n in nodes)

    float_acts = packed_model(random_model(tiny_config()), "ek_i4", 32)
    assert split_nodes(float_acts, OnnxGraphConfig()) == 7 * float_acts.config.n_layers
    assert split_nodes(float_acts, OnnxGraphConfig(accuracy_level=0)) == 0
    assert split_nodes(float_acts, OnnxGraphConfig(activation_passes=1)) == 0
    int8_acts = replace(float_acts, config=replace(float_acts.config, act_quant="int8_absmax"))
    assert split_nodes(int8_acts, OnnxGraphConfig()) == 0


def test_ternary_zero_point_two_recodes_without_changing_values(tmp_path):
    model = packed_model(random_model(tiny_config()), "ek_t2", -1)
    report = export_onnx(model, tmp_path / "zp2", OnnxGraphConfig(accuracy_level=0, ternary_zero_point=2))
    assert not any(w.exact_bytes for w in report.weights if "MatMulNBits" in w.onnx_form)
    exact = export_onnx(model, tmp_path / "zp1", OnnxGraphConfig(accuracy_level=0))
    assert all(w.exact_bytes for w in exact.weights if "MatMulNBits" in w.onnx_form)
    want = reference_logits(model, TOKENS)
    for directory in ("zp1", "zp2"):
        backend = OnnxRuntimeBackend(load_onnx_export(tmp_path / directory))
        assert_close([backend.prefill(TOKENS)], want, 1e-4)
        backend.close()


def test_directory_layout_and_genai_config(tmp_path):
    import onnx

    model = packed_model(random_model(tiny_config()), "ek_i4", 32)
    out = tmp_path / "export"
    report = export_onnx(model, out, ort_format=True)
    assert {"model.onnx", "model.ort", "genai_config.json", "tokenizer.json", "tokenizer_config.json",
            "edgekit_onnx.json"} <= set(report.files)       # a tokenizers BPE vocabulary: tokenizer.json
    assert not report.external_data and not (out / "model.onnx.data").exists()
    genai = json.loads((out / "genai_config.json").read_text())
    decoder = genai["model"]["decoder"]
    graph = onnx.load(str(out / "model.onnx")).graph
    inputs, outputs = {i.name for i in graph.input}, {o.name for o in graph.output}
    assert {decoder["inputs"][k] for k in ("input_ids", "attention_mask", "position_ids")} <= inputs
    for layer in range(model.config.n_layers):
        assert decoder["inputs"]["past_key_names"] % layer in inputs
        assert decoder["outputs"]["present_value_names"] % layer in outputs
    assert decoder["num_key_value_heads"] == 2 and genai["model"]["vocab_size"] == model.config.vocab_size
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 7 * model.config.n_layers
    assert all({a.name: a.i for a in n.attribute}["accuracy_level"] == 4 for n in nbits)
    loaded = load_onnx_export(out / "model.ort")          # the mobile file runs the same
    assert loaded.tokenizer.encode("hello") == model.tokenizer.encode("hello")
    want = onnx_logits(model, TOKENS, config=OnnxGraphConfig())
    backend = OnnxRuntimeBackend(loaded)
    assert_close([backend.prefill(TOKENS)], want, 1e-5)
    backend.close()


def test_external_data_above_the_threshold(tmp_path):
    model = random_model(tiny_config())
    report = export_onnx(model, tmp_path / "ext", EXACT, external_data_threshold=0)
    assert report.external_data and (tmp_path / "ext" / "model.onnx.data").stat().st_size > 100_000
    assert (tmp_path / "ext" / "model.onnx").stat().st_size < 100_000
    backend = OnnxRuntimeBackend(load_onnx_export(tmp_path / "ext"))
    assert_close([backend.prefill(TOKENS)], reference_logits(model, TOKENS), 1e-4)
    backend.close()


def test_three_bit_model_is_refused_and_leaves_nothing(tmp_path):
    model = packed_model(random_model(tiny_config()), "ek_i3", 32)
    with pytest.raises(UnsupportedModelError, match="ek_i3.*ek_t2, ek_t1, ek_i2") as info:
        export_onnx(model, tmp_path / "out")
    assert info.value.fix
    assert list(tmp_path.iterdir()) == []


def test_interrupted_export_leaves_no_directory(tmp_path, monkeypatch):
    import edgekit.export.onnx_writer as writer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "write_tokenizer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(random_model(tiny_config()), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_directory_needs_overwrite(tmp_path):
    model = random_model(tiny_config())
    export_onnx(model, tmp_path / "out")
    with pytest.raises(ConfigError, match="already exists"):
        export_onnx(model, tmp_path / "out")
    export_onnx(model, tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_bad_graph_options_are_typed_errors():
    with pytest.raises(ConfigError, match="accuracy_level"):
        OnnxGraphConfig(accuracy_level=7)
    with pytest.raises(ConfigError, match="block_size"):
        OnnxGraphConfig(block_size=48)
    with pytest.raises(ConfigError, match="activation_passes"):
        OnnxGraphConfig(activation_passes=3)
