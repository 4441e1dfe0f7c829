"""BenchConfig validation, synthetic weights and their cache, and the bytes-per-token arithmetic."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from edgekit.bench.config import SHAPES, BenchConfig
from edgekit.bench.roofline import (
    edgekit_element_counts,
    edgekit_tensor_bytes,
    gguf_tensor_bytes,
    kv_bytes_per_token,
    roofline_tokens_per_s,
    token_bytes,
)
from edgekit.bench.synthetic import build_model, ensure_synthetic, recipe_hash
from edgekit.errors import ConfigError
from edgekit.formats import QuantizedTensor

TINY = SHAPES["tiny"]


@pytest.mark.parametrize("field, value, words", [
    ("shapes", ("gpt-5",), "unknown value 'gpt-5'"),
    ("shapes", (), "is empty"),
    ("shapes", "tiny", "must be a list"),
    ("backends", ("native", "native"), "repeats a value"),
    ("formats", ("q4_k",), "unknown value 'q4_k'"),
    ("threads", (0,), "positive integers"),
    ("threads", (True,), "positive integers"),
    ("prompt_lengths", (12.5,), "positive integers"),
    ("generate_length", -1, "'generate_length'"),
    ("repetitions", 0, "'repetitions'"),
    ("kv_type", "q8_0", "'kv_type'"),
    ("memory_limit_gb", float("nan"), "'memory_limit_gb'"),
    ("version", 99, "version 99"),
])
def test_config_rejects_bad_values_naming_the_field(field, value, words):
    with pytest.raises(ConfigError, match=words):
        BenchConfig(**{field: value})


def test_config_round_trips_and_presets_apply_overrides(tmp_path):
    config = BenchConfig.preset("quick", threads=[1], work_dir=tmp_path, repetitions=None)
    assert config.threads == (1,) and config.repetitions == 2 and config.shapes == ("small",)
    assert BenchConfig.from_dict(config.to_dict()) == config
    assert config.context_length >= max(config.prompt_lengths)
    with pytest.raises(ConfigError, match="unknown bench config fields"):
        BenchConfig.from_dict({**config.to_dict(), "turbo": True})
    with pytest.raises(ConfigError, match="unknown bench preset 'huge'") as info:
        BenchConfig.preset("huge")
    assert "full" in info.value.fix


@pytest.mark.parametrize("weights, fmt, group", [("t2", "ek_t2", -1), ("t1", "ek_t1", -1), ("i4", "ek_i4", 32),
                                                 ("i8", "ek_i8", 32)])
def test_synthetic_model_packs_every_linear_in_the_asked_format(weights, fmt, group):
    model = build_model(TINY, weights, seed=3)
    linear = model.tensors["layers.1.w2"]
    assert isinstance(linear, QuantizedTensor) and (linear.format, linear.group_size) == (fmt, group)
    assert linear.shape == (TINY.dim, TINY.hidden_dim)
    assert model.tensors["tok_embeddings"].format == "ek_i8"
    assert model.config.tie_embeddings and model.config.sub_norms and model.tokenizer.vocab_size == TINY.vocab_size
    values = linear.dequantize()
    rms = float(np.sqrt(np.mean(values ** 2)))
    assert 0.5 / np.sqrt(TINY.hidden_dim) < rms < 2.0 / np.sqrt(TINY.hidden_dim)   # activations stay O(1)


def test_synthetic_files_are_cached_by_recipe_hash(tmp_path):
    assert recipe_hash(TINY, "t2", 0) != recipe_hash(TINY, "t2", 1) != recipe_hash(TINY, "i4", 1)
    files = ensure_synthetic(tmp_path, TINY, "t2", seed=0, gguf=True)
    stamps = {k: p.stat().st_mtime_ns for k, p in files.items()}
    again = ensure_synthetic(tmp_path, TINY, "t2", seed=0, gguf=True)
    assert again == files and {k: p.stat().st_mtime_ns for k, p in again.items()} == stamps
    assert not list(tmp_path.glob("*.partial"))
    reader = gguf.GGUFReader(str(files["gguf"]))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.ffn_down.weight"] == "TQ2_0" and types["token_embd.weight"] == "Q8_0"
    assert reader.fields["general.architecture"].contents() == "llama"


def test_bytes_per_token_counts_every_matrix_once_and_the_kv_cache(tmp_path):
    files = ensure_synthetic(tmp_path, TINY, "t2", seed=0, gguf=True)
    model = build_model(TINY, "t2", seed=0)
    config = model.config
    packed = edgekit_tensor_bytes(files["edgekit"])
    assert sum(packed.values()) == model.nbytes
    kv = kv_bytes_per_token(config, 2, 8)
    assert kv == config.n_layers * 2 * config.kv_dim * 2 * 4.5
    tied = token_bytes(packed, "tok_embeddings", config, 2, 8)
    assert (tied.weights, tied.kv_cache, tied.total) == (model.nbytes, kv, model.nbytes + kv)
    # GGUF: TQ2_0 stores 256 trits in 66 bytes, Q8_0 32 int8 in 34 bytes, norms in F32.
    sizes = gguf_tensor_bytes(files["gguf"])
    assert sizes["blk.0.ffn_down.weight"] == TINY.dim * TINY.hidden_dim // 256 * 66
    assert sizes["token_embd.weight"] == TINY.vocab_size * TINY.dim // 32 * 34
    # Torch/reference size by element count: bf16 is exactly half of fp32.
    counts = edgekit_element_counts(files["edgekit"])
    assert counts["layers.0.wq"] == TINY.dim * TINY.dim
    assert roofline_tokens_per_s(32.0, 32_000_000) == pytest.approx(1000.0)


def test_untied_embedding_contributes_one_row():
    from dataclasses import replace

    config = replace(SHAPES["tiny"].model_config(ternary=False), tie_embeddings=False)
    sizes = {"tok_embeddings": 512 * 100, "output": 512 * 100, "layers.0.wq": 1000}
    got = token_bytes(sizes, "tok_embeddings", config, 4, 1)
    assert got.weights == 512 * 100 + 1000 + 100            # output matrix + linear + one 100-byte row
