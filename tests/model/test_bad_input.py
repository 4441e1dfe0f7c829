"""Bad checkpoints raise typed `EdgekitError`s that name the file and the fault; nothing else escapes."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from edgekit.errors import (ConfigError, CorruptCheckpointError, EdgekitError, ModelNotFoundError,
                            ShapeMismatchError, TokenizerError, UnknownFormatError, UnsupportedModelError)
from edgekit.model import load

from .hf_tiny import make_model, save_hf_dir, write_word_tokenizer


def copy(src: Path, dst_dir: Path, name: str | None = None) -> Path:
    dst = dst_dir / (name or src.name)
    if src.is_dir():
        shutil.copytree(src, dst)
        for f in dst.iterdir():
            f.chmod(0o644)
    else:
        shutil.copyfile(src, dst)
    return dst


def truncate(path: Path, size: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:size])


# -- paths and formats ---------------------------------------------------------------------------------

def test_missing_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such file"):
        load(tmp_path / "nothing.gguf")


@pytest.mark.parametrize("name,content", [("notes.txt", b"hello"), ("weights.bin", b"\x00" * 10)])
def test_unrecognised_file(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UnknownFormatError, match="not a checkpoint") as info:
        load(tmp_path / name)
    assert name in str(info.value)


def test_directory_without_config(tmp_path):
    with pytest.raises(UnknownFormatError):
        load(tmp_path)


# -- llama2.c -------------------------------------------------------------------------------------------

def test_truncated_llama2c(tmp_path, models):
    path = copy(models / "stories260K.bin", tmp_path)
    copy(models / "tok512.bin", tmp_path)
    truncate(path, 500_000)
    with pytest.raises(CorruptCheckpointError, match="truncated") as info:
        load(path)
    assert "stories260K.bin" in str(info.value)


def test_llama2c_with_trailing_bytes(tmp_path, models):
    path = copy(models / "stories260K.bin", tmp_path)
    copy(models / "tok512.bin", tmp_path)
    path.write_bytes(path.read_bytes() + b"\x00" * 12)
    with pytest.raises(CorruptCheckpointError, match="trailing data"):
        load(path)


def test_llama2c_without_tokenizer(tmp_path, models):
    (tmp_path / "a" / "b").mkdir(parents=True)
    path = copy(models / "stories260K.bin", tmp_path / "a" / "b")
    with pytest.raises(ModelNotFoundError) as info:
        load(path)
    assert "--tokenizer" in info.value.fix


def test_llama2c_tokenizer_vocab_mismatch(tmp_path, models):
    path = copy(models / "stories260K.bin", tmp_path)
    raw = (models / "tok512.bin").read_bytes()
    offset, count = 4, 0
    while count < 300:  # keep the first 300 tokens
        _, length = struct.unpack_from("<fi", raw, offset)
        offset += 8 + length
        count += 1
    (tmp_path / "small.bin").write_bytes(raw[:offset])
    with pytest.raises(TokenizerError, match="300 tokens.*512"):
        load(path, tokenizer=tmp_path / "small.bin")


def test_truncated_llama2c_tokenizer(tmp_path, models):
    path = copy(models / "stories260K.bin", tmp_path)
    (tmp_path / "tok512.bin").write_bytes((models / "tok512.bin").read_bytes()[:3001])
    with pytest.raises(TokenizerError, match="tok512.bin"):
        load(path)


def test_bitllama2c_bit_order_must_be_known(tmp_path, models):
    path = copy(models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin", tmp_path, "model.bin")
    with pytest.raises(UnsupportedModelError, match="bit") as info:
        load(path, tokenizer=models / "tok512.bin")
    assert "--bit-order" in info.value.fix
    model = load(path, tokenizer=models / "tok512.bin", bit_order="msbfirst")
    assert model.config.ternary_weights
    with pytest.raises(UnsupportedModelError, match="bit_order"):
        load(path, tokenizer=models / "tok512.bin", bit_order="middle-endian")


def test_bitllama2c_invalid_code_names_the_tensor(tmp_path, models):
    path = copy(models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin", tmp_path)
    data = bytearray(path.read_bytes())
    data[256 + 4 * (128 + 512 * 128) + 4] = 0b10101010  # first byte of layer 0's wq
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=r"layers\.0\.wq.*0b10"):
        load(path, tokenizer=models / "tok512.bin")


# -- GGUF -----------------------------------------------------------------------------------------------

def test_truncated_gguf(tmp_path, models):
    path = copy(models / "stories260K.gguf", tmp_path)
    truncate(path, 600_000)
    with pytest.raises(CorruptCheckpointError, match="stories260K.gguf"):
        load(path)


def test_gguf_with_impossible_counts(tmp_path, models):
    path = copy(models / "stories260K.gguf", tmp_path)
    data = bytearray(path.read_bytes())
    data[8:16] = struct.pack("<Q", 1 << 40)  # tensor count
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="tensors"):
        load(path)


def test_gguf_of_another_architecture(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedModelError, match="'mamba'.*llama"):
        load(tmp_path / "m.gguf")


# -- Hugging Face ---------------------------------------------------------------------------------------

@pytest.fixture()
def hf_dir(tmp_path):
    return save_hf_dir(make_model("llama"), tmp_path / "tiny")


def edit_config(path: Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def test_hf_unknown_model_type(hf_dir):
    edit_config(hf_dir, model_type="mistral")
    with pytest.raises(UnsupportedModelError, match="'mistral'.*qwen2"):
        load(hf_dir)


def test_hf_invalid_json(hf_dir):
    (hf_dir / "config.json").write_text("{not json")
    with pytest.raises(CorruptCheckpointError, match="config.json"):
        load(hf_dir)


def test_hf_missing_field(hf_dir):
    cfg = json.loads((hf_dir / "config.json").read_text())
    del cfg["hidden_size"]
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="hidden_size"):
        load(hf_dir)


def test_hf_shape_mismatch_names_the_tensor(hf_dir):
    edit_config(hf_dir, intermediate_size=96)
    with pytest.raises(ShapeMismatchError, match=r"layers\.\d\.w[123].*96"):
        load(hf_dir)


def test_hf_truncated_safetensors(hf_dir):
    truncate(hf_dir / "model.safetensors", 5000)
    with pytest.raises(CorruptCheckpointError, match="model.safetensors"):
        load(hf_dir)


def test_hf_missing_weights(hf_dir):
    (hf_dir / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="model.safetensors"):
        load(hf_dir)


def test_hf_missing_tensor(hf_dir):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(hf_dir / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, hf_dir / "model.safetensors")
    with pytest.raises(ShapeMismatchError, match=r"missing tensors.*layers\.1\.w3"):
        load(hf_dir)


def test_hf_unsupported_dtype(hf_dir):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(hf_dir / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"].astype(np.int8)
    save_file(tensors, hf_dir / "model.safetensors")
    with pytest.raises(UnsupportedModelError, match="model.norm.weight.*I8"):
        load(hf_dir)


def test_hf_tokenizer_larger_than_vocab(hf_dir):
    write_word_tokenizer(hf_dir, 200)
    with pytest.raises(TokenizerError, match="200 tokens.*96"):
        load(hf_dir)


def test_hf_missing_tokenizer(hf_dir):
    (hf_dir / "tokenizer.json").unlink()
    with pytest.raises(ModelNotFoundError, match="tokenizer"):
        load(hf_dir)


def test_hf_prequantized_checkpoint_is_refused_clearly(hf_dir):
    edit_config(hf_dir, quantization_config={"quant_method": "gptq"})
    with pytest.raises(UnsupportedModelError, match="gptq") as info:
        load(hf_dir)
    assert info.value.fix


# -- property test: random damage never escapes as anything but EdgekitError ------------------------------

@pytest.fixture(scope="module")
def damage_targets(models, tmp_path_factory):
    """(checkpoint to load, file inside it to damage, load kwargs) for every loader and tokenizer."""
    from edgekit.model.loaders.edgekit_file import save_model
    from edgekit.quantize.config import QuantizeConfig
    from edgekit.quantize.pipeline import quantize_model

    base = tmp_path_factory.mktemp("pristine")
    hf = copy(models / "stories260K_hf", base)
    packed = save_model(quantize_model(load(models / "stories260K.bin"), QuantizeConfig(format="ek_u4", method="rtn")),
                        base / "stories.edgekit")
    return {
        "edgekit": (packed, "stories.edgekit", {}),
        "llama2c": (models / "stories260K.bin", "stories260K.bin", {"tokenizer": models / "tok512.bin"}),
        "tokenizer.bin": (models / "tok512.bin", "tok512.bin", {}),
        "bitllama2c": (models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin", "bitllama2c_1M_ternary_msbfirst.bin",
                       {"tokenizer": models / "tok512.bin"}),
        "gguf": (models / "stories260K.gguf", "stories260K.gguf", {}),
        "safetensors": (hf, "model.safetensors", {}),
        "config.json": (hf, "config.json", {}),
        "tokenizer.model": (hf, "tokenizer.model", {}),
    }


DAMAGE = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), min_size=1,
                                         max_size=8), st.booleans()),
)


def _damage(path: Path, damage) -> None:
    data = bytearray(path.read_bytes())
    if damage[0] == "truncate":
        del data[int(damage[1] * len(data)):]
    else:
        _, flips, near_start = damage
        span = min(len(data), 4096) if near_start else len(data)  # headers are where damage bites
        for where, mask in flips:
            data[min(int(where * span), len(data) - 1)] ^= mask
    path.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["llama2c", "tokenizer.bin", "bitllama2c", "gguf", "safetensors", "config.json",
                                    "tokenizer.model", "edgekit"])
def test_random_damage_raises_only_edgekit_errors(damage_targets, tmp_path_factory, target):
    source, damaged_name, kwargs = damage_targets[target]

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(damage=DAMAGE)
    def check(damage):
        work = tmp_path_factory.mktemp("damaged")
        if target == "tokenizer.bin":
            checkpoint = copy(damage_targets["llama2c"][0], work)
            tok = copy(source, work)
            _damage(tok, damage)
            kwargs_ = {"tokenizer": tok}
        else:
            checkpoint = copy(source, work)
            file = checkpoint / damaged_name if checkpoint.is_dir() else checkpoint
            _damage(file, damage)
            kwargs_ = kwargs
        try:
            load(checkpoint, **kwargs_)
        except EdgekitError as exc:
            assert str(exc)
        shutil.rmtree(work)

    check()


def test_ternary_model_with_non_ternary_weight_is_rejected(models):
    from edgekit.model.model import Model

    model = load(models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin")
    tensors = dict(model.tensors)
    tensors["layers.2.w3"] = tensors["layers.2.w3"] * 0.5
    with pytest.raises(ShapeMismatchError, match=r"layers\.2\.w3.*-1, 0, \+1"):
        Model(config=model.config, tensors=tensors, tokenizer=model.tokenizer, source=model.source,
              source_format=model.source_format)
