"""Calibration: token sequences, Hessians from the reference forward's linear inputs, the sequential scheme
(each block calibrated on the outputs of the blocks quantized before it), and too little text."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import ConfigError, QuantizationError
from edgekit.model import load
from edgekit.model.model import Model
from edgekit.model.reference import KVCache, ReferenceForward
from edgekit.quantize.calibration import (advance_states, calibration_sequences, collect_hessian, embed_sequences,
                                          quantize_sequentially, required_tokens)
from edgekit.quantize.config import QuantizeConfig
from edgekit.quantize.evaluate import DOCUMENT_SEPARATOR, split_documents
from edgekit.quantize.methods import quantize_rtn
from edgekit.quantize.pipeline import quantize_model
from edgekit.quantize.workflow import quantize_checkpoint


@pytest.fixture(scope="module")
def stories(models):
    return load(models / "stories260K.bin")


@pytest.fixture(scope="module")
def documents(tinystories):
    return split_documents(tinystories.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def sequences(stories, documents):
    return calibration_sequences(stories.tokenizer, DOCUMENT_SEPARATOR.join(documents[20:26]), seq_len=48,
                                 max_tokens=10_000)


def working_copy(model: Model) -> Model:
    return Model(model.config, dict(model.tensors), model.tokenizer, model.source, model.source_format)


def observed_hessian(model: Model, sequences, name: str) -> np.ndarray:
    """sum X^T X of linear `name`'s input, observed while the plain reference forward runs every sequence."""
    hessian = 0.0
    forward = ReferenceForward(model, observer=lambda event, x: store.append(x) if event == name else None)
    for tokens in sequences:
        store: list[np.ndarray] = []
        forward.forward(tokens, KVCache(model.config, len(tokens)))
        x = store[0].astype(np.float64)
        hessian = hessian + x.T @ x
    return hessian


def test_sequences_split_documents_add_bos_cut_and_stop_at_the_budget(stories, documents, tinystories):
    text = tinystories.read_text(encoding="utf-8")
    sequences = calibration_sequences(stories.tokenizer, text, seq_len=100, max_tokens=1000, first_document=20)
    assert sum(len(s) for s in sequences) == 1000
    for i, tokens in enumerate(sequences[:-1]):
        assert tokens.tolist() == stories.tokenizer.encode(documents[20 + i], add_bos=True)[:100]
    last = stories.tokenizer.encode(documents[20 + len(sequences) - 1], add_bos=True)
    assert sequences[-1].tolist() == last[:len(sequences[-1])] and sequences[-1][0] == stories.tokenizer.bos_id


def test_half_blocks_reproduce_the_reference_forward_bit_for_bit(stories, sequences):
    tokens = sequences[0]
    cache = KVCache(stories.config, len(tokens))
    states = embed_sequences(stories, [tokens])
    for layer in range(stories.config.n_layers):
        for half in ("attention", "ffn"):
            states = advance_states(stories, states, layer, half, cache)
    forward = ReferenceForward(stories)
    ours = forward.logits(forward.norm(states[0], "norm"))
    np.testing.assert_array_equal(ours, forward.forward(tokens, KVCache(stories.config)))


@pytest.mark.parametrize("name,half,layer_inputs", [("layers.0.wq", "attention", 0), ("layers.2.w2", "ffn", 2),
                                                    ("layers.3.wo", "attention", 3)])
def test_hessian_is_the_sum_of_xtx_of_the_observed_inputs(stories, sequences, name, half, layer_inputs):
    cache = KVCache(stories.config, max(len(s) for s in sequences))
    states = embed_sequences(stories, sequences)
    for layer in range(layer_inputs):
        for step in ("attention", "ffn"):
            states = advance_states(stories, states, layer, step, cache)
    if half == "ffn":
        states = advance_states(stories, states, layer_inputs, "attention", cache)
    hessian = collect_hessian(stories, states, name, half, cache)
    np.testing.assert_allclose(hessian, observed_hessian(stories, sequences, name), rtol=1e-12, atol=1e-9)
    assert hessian.shape == (stories.tensors[name].shape[1],) * 2


def test_each_linear_is_calibrated_on_the_outputs_of_the_quantized_ones_before_it(stories, sequences):
    recorded: dict[str, np.ndarray] = {}

    def rtn_stage(names, hessian):
        for name in names:
            recorded[name] = hessian
        return {name: quantize_rtn(np.asarray(stories.tensors[name]), "ek_i2", 32) for name in names}

    working = working_copy(stories)
    targets = {f"layers.{i}.{w}" for i in range(2) for w in ("wq", "wk", "wv", "wo", "w1", "w2", "w3")}
    quantize_sequentially(working, sequences, targets, rtn_stage)
    assert set(recorded) == targets
    assert recorded["layers.0.wk"] is recorded["layers.0.wq"] and recorded["layers.1.w3"] is recorded["layers.1.w1"]
    # layers.1.wo sees layer 0 and layer 1's q/k/v quantized, nothing after them
    partial = working_copy(stories)
    for name in ("layers.0." + w for w in ("wq", "wk", "wv", "wo", "w1", "w2", "w3")):
        partial.tensors[name] = working.tensors[name]
    for name in ("layers.1.wq", "layers.1.wk", "layers.1.wv"):
        partial.tensors[name] = working.tensors[name]
    expected = observed_hessian(partial, sequences, "layers.1.wo")
    np.testing.assert_allclose(recorded["layers.1.wo"], expected, rtol=1e-10, atol=1e-9)
    float_hessian = observed_hessian(stories, sequences, "layers.1.wo")
    assert np.abs(recorded["layers.1.wo"] - float_hessian).max() > 1e-3 * np.abs(float_hessian).max()
    assert working.tensors["layers.2.wq"] is stories.tensors["layers.2.wq"]  # untouched beyond the targets


def test_too_little_calibration_text_is_refused_before_anything_is_written(models, tmp_path, documents):
    assert required_tokens(load(models / "stories260K.bin").config) == 172  # w2 reads hidden_dim 172
    calib = tmp_path / "calib.txt"
    calib.write_text(documents[20][:200], encoding="utf-8")  # a few sentences: fewer than 172 tokens
    output = tmp_path / "out.edgekit"
    config = QuantizeConfig(format="ek_i4", method="gptq", calib_path=str(calib))
    with pytest.raises(QuantizationError, match=r"gives \d+ tokens but GPTQ on this model needs at least 172"):
        quantize_checkpoint(models / "stories260K.bin", output, config)
    assert not output.exists() and not list(tmp_path.glob("*.edgekit*"))
    calib.write_text(DOCUMENT_SEPARATOR.join(documents[20:40]), encoding="utf-8")  # enough text, too small a budget
    with pytest.raises(QuantizationError, match=r"calib_tokens \(150\) is too small") as info:
        quantize_checkpoint(models / "stories260K.bin", output, QuantizeConfig(
            format="ek_i4", method="gptq", calib_path=str(calib), calib_tokens=150))
    assert "calib_tokens >= 172" in info.value.fix and not output.exists()


def test_gptq_without_calibration_text_says_how_to_give_it(stories):
    with pytest.raises(QuantizationError, match="needs calibration text") as info:
        quantize_model(stories, QuantizeConfig(format="ek_i4", method="gptq"))
    assert "calib_path" in info.value.fix


def test_calibration_config_is_validated_and_round_trips():
    config = QuantizeConfig(format="ek_u3", method="gptq", group_size=64, calib_path="calib.txt",
                            calib_first_document=40, calib_tokens=4096, calib_seq_len=256, gptq_block_size=64,
                            gptq_damp=0.05, act_order=True, rotate="hadamard", rotate_seed=9)
    assert QuantizeConfig.from_json(config.to_json()) == config
    assert QuantizeConfig(format="ek_t1", method="gptq").method == "gptq"
    bad = {"calib_tokens": (100, "calib_tokens must be an integer >= 128"),
           "calib_seq_len": (1, "calib_seq_len must be an integer >= 2"),
           "calib_first_document": (-1, "calib_first_document"),
           "gptq_block_size": (0, "gptq_block_size must be an integer >= 1"),
           "gptq_damp": (0.0, r"gptq_damp must be a number in \(0, 1\]"),
           "act_order": ("yes", "act_order must be true or false"),
           "rotate": ("givens", "rotate 'givens' is not supported"),
           "rotate_seed": (True, "rotate_seed must be an integer")}
    for field, (value, message) in bad.items():
        with pytest.raises(ConfigError, match=message):
            QuantizeConfig(format="ek_i4", method="gptq", **{field: value})
    with pytest.raises(ConfigError, match="only apply to method 'gptq'"):
        QuantizeConfig(format="ek_i4", method="rtn", act_order=True)
