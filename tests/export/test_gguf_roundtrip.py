"""GGUF round trip (issue 5): edgekit loads the GGUF it wrote and gets the logits of the model before export.

For every GGUF type (F16, Q8_0, Q4_0, TQ1_0, TQ2_0) on both architectures (llama, and llama.cpp's bitnet with its
sub-norms): the file is loaded back with packed tensors holding the same integers (nothing requantized), and its
logits equal those of the source model with the changes the export reports applied, bit for bit on the reference
forward: fp16 rounding of per-tensor ternary scales (TQ blocks and Q8_0 trit blocks carry fp16 d) and of float
matrices written as F16, and, for bitllama2.c on the bitnet architecture, the one rms_eps llama.cpp adds inside every
norm. Against the untouched source model the greedy tokens are the same.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from edgekit.export.gguf_writer import export_gguf
from edgekit.formats import PER_TENSOR, QuantizedTensor
from edgekit.model import load
from edgekit.model.lazy import materialize
from edgekit.model.reference import KVCache, ReferenceForward
from edgekit.quantize.config import QuantizeConfig
from edgekit.quantize.pipeline import quantize_model

from tests.model.hf_tiny import make_model, save_model
from tests.runtime.parity import edgekit_backend, greedy

DIMS = dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
TOKENS = [1, 403, 407, 261, 378, 30, 99, 17, 250]
# GGUF type -> how the source model is packed so that the type holds it exactly (None: float, written as F16)
PACKINGS = {"F16": None, "Q8_0": ("ek_i8", 32), "Q4_0": ("ek_i4", 128), "TQ1_0": ("ek_t1", -1),
            "TQ2_0": ("ek_t2", -1)}


def hf_source(kind: str, tmp_path_factory, models):
    """A transformers model (from_config) as an HF directory with stories260K's sentencepiece tokenizer."""
    if kind == "llama":
        hf = make_model("llama", seed=9, **DIMS)
    else:  # llama.cpp's bitnet architecture: SiLU gate, tied embeddings, sub-norms
        hf = make_model("bitnet", seed=11, hidden_act="silu", tie_word_embeddings=True, **DIMS)
    path = save_model(hf, tmp_path_factory.mktemp(kind))
    shutil.copyfile(models / "tok512.model", path / "tokenizer.model")
    return load(path)


@pytest.fixture(scope="module")
def sources(tmp_path_factory, models):
    return {kind: hf_source(kind, tmp_path_factory, models) for kind in ("llama", "bitnet")}


def as_written(model, report, eps: float | None = None):
    """`model` with what the GGUF holds instead: fp16 per-tensor ternary scales, F16 float matrices, and the
    file's rms_eps where bitllama2.c's eps-free BitLinear norms became RMSNorms."""
    written = {t.name: t.gguf_type for t in report.tensors}
    tensors = {}
    for name, tensor in model.tensors.items():
        if isinstance(tensor, QuantizedTensor) and tensor.format.startswith("ek_t") and tensor.group_size == PER_TENSOR:
            tensor = dataclasses.replace(tensor, scales=tensor.scales.astype(np.float16).astype(np.float32))
        elif name.endswith(".scale"):
            tensor = np.asarray(np.float16(tensor), np.float32)
        elif written.get(name) == "F16" and not isinstance(tensor, QuantizedTensor):
            tensor = np.asarray(materialize(tensor)).astype(np.float16).astype(np.float32)
        tensors[name] = tensor
    config = model.config if eps is None else dataclasses.replace(model.config, norm_eps=eps)
    return dataclasses.replace(model, tensors=tensors, config=config)


def logits(model):
    return ReferenceForward(model).forward(TOKENS, KVCache(model.config))


def export_and_load(model, path, **options):
    report = export_gguf(model, path, **options)
    return report, load(path)


def assert_linears_packed_as(loaded, source, report):
    """Every linear of the loaded model is the packed format its GGUF type holds, with the source's grouping."""
    written = {t.name: t.gguf_type for t in report.tensors}
    for name, tensor in loaded.tensors.items():
        if name.rsplit(".", 1)[-1] not in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"):
            continue
        before, gguf_type = source.tensors[name], written[name]
        if gguf_type == "F16":
            assert not isinstance(tensor, QuantizedTensor), name
            continue
        group = getattr(before, "group_size", PER_TENSOR)          # float trits (bitllama2.c): one scale
        ternary = not isinstance(before, QuantizedTensor) or before.format.startswith("ek_t")
        want = {"TQ2_0": "ek_t2", "TQ1_0": "ek_t1" if group <= 0 else "ek_t2", "Q4_0": "ek_i4",
                "Q8_0": "ek_t2" if ternary else "ek_i8"}[gguf_type]
        assert isinstance(tensor, QuantizedTensor) and (tensor.format, tensor.group_size) == (want, group), name


@pytest.mark.parametrize("gguf_type", list(PACKINGS))
@pytest.mark.parametrize("kind", ["llama", "bitnet"])
def test_hf_models_round_trip_bit_for_bit(sources, tmp_path, kind, gguf_type):
    source = sources[kind]
    packing = PACKINGS[gguf_type]
    if packing is not None:
        fmt, group = packing
        act = "int8_absmax" if kind == "bitnet" and fmt.startswith("ek_t") else None   # BitNet b1.58's A8
        source = quantize_model(source, QuantizeConfig(format=fmt, method="rtn" if fmt.startswith("ek_i") else "absmean",
                                                       group_size=group, act_quant=act))
    report, loaded = export_and_load(source, tmp_path / "m.gguf", float_type="F16" if packing is None else "F32")
    assert report.architecture == kind and loaded.config.architecture == kind
    assert {t.gguf_type for t in report.tensors if t.name.endswith(".wq")} == {gguf_type}
    assert loaded.config.sub_norms == (kind == "bitnet") and loaded.config.act_quant == source.config.act_quant
    assert_linears_packed_as(loaded, source, report)
    got, expected = logits(loaded), logits(as_written(source, report))
    if packing is None:  # the same float32 values; BLAS may block them differently (2e-7 seen on bitnet)
        assert np.abs(got - expected).max() <= 1e-6 * np.abs(expected).max()
    else:
        np.testing.assert_array_equal(got, expected)


SHARED = {"bitllama2c-3M": "bitnet/bitllama2c_3M_ternary_lsbfirst.bin",
          "bitllama2c-1M": "bitnet/bitllama2c_1M_ternary_msbfirst.bin"}


@pytest.mark.parametrize("linear_type", [None, "TQ1_0", "Q8_0", "F16"])
@pytest.mark.parametrize("key", list(SHARED))
def test_bitllama2c_round_trips_through_the_bitnet_architecture(models, tmp_path, key, linear_type):
    """bitllama2.c -> bitnet GGUF (BitLinear norms as RMSNorms of weight 1/n) -> edgekit: the trits and fp16 scales
    come back packed (rows of 128 in the 1M model were written as Q8_0 trit blocks and load as ek_t2), the logits
    are the source's with those scales and the file's eps, bit for bit, and so are the 64 greedy tokens on edgekit's
    engine; the 3M model's equal the untouched source's too."""
    source = load(models / SHARED[key])
    report, loaded = export_and_load(source, tmp_path / "b.gguf", linear_type=linear_type)
    assert loaded.config.architecture == "bitnet" and loaded.config.act_quant == "int8_absmax"
    assert_linears_packed_as(loaded, source, report)
    expected, got = logits(as_written(source, report, eps=loaded.config.norm_eps)), logits(loaded)
    if linear_type == "F16":    # trit x scale stored as floats: the same products, summed in another order
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
    else:
        np.testing.assert_array_equal(got, expected)
    before = logits(source)
    tokens = greedy(edgekit_backend(loaded))
    assert tokens == greedy(edgekit_backend(as_written(source, report, eps=loaded.config.norm_eps)))
    same = next((i for i, (a, b) in enumerate(zip(tokens, greedy(edgekit_backend(source)))) if a != b), len(tokens))
    print(f"{key} {linear_type or 'TQ2_0'}: max |logit - source logit| {np.abs(got - before).max():.4f}, "
          f"greedy tokens equal to the source's: first {same} of {len(tokens)}")
    assert (got.argmax(-1) == before.argmax(-1)).all()
    if key == "bitllama2c-3M":
        # The 1M model's greedy path parts from the source's at token 26: its fp16-rounded scales (the only change
        # the file makes; TQ and Q8_0 blocks store d as fp16) flip a near tie there, in llama.cpp too.
        assert same == len(tokens)


def test_default_model_round_trips_with_its_int8_activations(tmp_path):
    """The built-in model (llama, ek_t2 per tensor, rows of 128 -> Q8_0 trits, int8 activations): the activation
    quantization comes back from the file's edgekit.act_quant key, the logits bit for bit with fp16 scales."""
    from edgekit.quantize.default_model import load_default_model

    source = load_default_model()
    report, loaded = export_and_load(source, tmp_path / "d.gguf")
    assert loaded.config.act_quant == source.config.act_quant == "int8_absmax"
    assert_linears_packed_as(loaded, source, report)
    assert {t.gguf_type for t in report.tensors if t.name.endswith(".w1")} == {"Q8_0"}
    written = as_written(source, report)
    np.testing.assert_array_equal(logits(loaded), logits(written))
    # greedy on edgekit's engine: the written model's tokens (the fp16 scales flip a near tie at token 12 of the
    # untouched source's path)
    assert greedy(edgekit_backend(loaded)) == greedy(edgekit_backend(written))
