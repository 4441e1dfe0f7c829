"""The .edgekit file: exact round trip, embedded tokenizer, recipe and checksums, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.errors import CorruptCheckpointError, UnsupportedModelError
from edgekit.formats import QuantizedTensor
from edgekit.model import load
from edgekit.model.loaders import edgekit_file
from edgekit.model.loaders.edgekit_file import checkpoint_sha256, read_metadata, save_model
from edgekit.quantize.config import QuantizeConfig
from edgekit.quantize.pipeline import quantize_model
from edgekit.quantize.workflow import quantize_checkpoint


@pytest.fixture(scope="module")
def packed_pair(models, tmp_path_factory):
    """(in-memory packed model, path of the file written from it) for a zero-point int4 recipe."""
    config = QuantizeConfig(format="ek_u4", method="rtn", embedding_format="ek_i8", keep_float=[r"layers\.4\.w2"])
    out = tmp_path_factory.mktemp("ek") / "stories-u4.edgekit"
    result = quantize_checkpoint(models / "stories260K_hf", out, config)
    return result.model, out


def test_round_trip_is_exact(packed_pair):
    packed, path = packed_pair
    loaded = load(path)
    assert loaded.source_format == "edgekit" and loaded.config == packed.config
    assert loaded.tensors.keys() == packed.tensors.keys()
    for name, tensor in packed.tensors.items():
        other = loaded.tensors[name]
        if isinstance(tensor, QuantizedTensor):
            assert (other.format, other.shape, other.group_size) == (tensor.format, tensor.shape, tensor.group_size)
            np.testing.assert_array_equal(other.data, tensor.data)
            np.testing.assert_array_equal(other.scales, tensor.scales)
            assert other.scales.dtype == tensor.scales.dtype
            if tensor.zeros is not None:
                np.testing.assert_array_equal(other.zeros, tensor.zeros)
        else:
            np.testing.assert_array_equal(other, tensor)


def test_packed_data_loads_cache_line_aligned_so_kernels_bind_it_without_a_copy(packed_pair):
    """The kernels need 64-byte-aligned rows; the loader aligns once, so binding holds no second copy."""
    from edgekit.formats.aligned import KERNEL_ALIGN, aligned

    packed = [t for t in load(packed_pair[1]).tensors.values() if isinstance(t, QuantizedTensor)]
    assert packed
    for tensor in packed:
        assert tensor.data.ctypes.data % KERNEL_ALIGN == 0
        assert aligned(tensor.data) is tensor.data


def test_entries_read_into_aligned_buffers_equal_what_safetensors_reads(packed_pair):
    from safetensors.numpy import load_file

    from edgekit.formats.aligned import KERNEL_ALIGN

    ours, theirs = edgekit_file.read_entries(packed_pair[1]), load_file(str(packed_pair[1]))
    assert ours.keys() == theirs.keys()
    for name, array in theirs.items():
        assert ours[name].dtype == array.dtype
        assert array.size == 0 or ours[name].ctypes.data % KERNEL_ALIGN == 0
        np.testing.assert_array_equal(ours[name], array)


def test_loading_peaks_near_the_file_size_not_twice_it(models, tmp_path):
    """Regression: safetensors' load_file held a memory map of the whole file (counted in RSS) while copying the
    entries out, so a 512 MiB file peaked at 1057 MiB of RSS (548 MiB now)."""
    import subprocess
    import sys

    path = tmp_path / "big.edgekit"
    big = np.random.default_rng(0).standard_normal(32 << 20, dtype=np.float32)   # 128 MiB auxiliary entry
    save_model(load(models / "stories260K.bin"), path, aux={"big": big})
    del big
    script = ("import resource, sys; from edgekit.model import load; "
              "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; load(sys.argv[1]); "
              "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)")
    grown_mib = float(subprocess.run([sys.executable, "-c", script, str(path)], check=True, capture_output=True,
                                     text=True).stdout)
    assert grown_mib < 1.5 * path.stat().st_size / 2**20


def test_tokenizer_recipe_and_source_are_recorded(packed_pair, models):
    packed, path = packed_pair
    loaded = load(path)
    text = "Once upon a time, a cat named Tom found a big red ball."
    assert loaded.tokenizer.encode(text) == packed.tokenizer.encode(text)
    meta = read_metadata(path)
    assert QuantizeConfig.from_dict(meta["recipe"]).format == "ek_u4"
    assert meta["source"]["sha256"] == checkpoint_sha256(models / "stories260K_hf")
    assert meta["source"]["format"] == "hf"


def test_llama2c_tokenizer_survives_the_file(models, tmp_path):
    source = load(models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin")
    path = save_model(quantize_model(source, QuantizeConfig(format="ek_t2")), tmp_path / "b.edgekit")
    loaded = load(path)
    assert loaded.tokenizer.eos_ids == (2, 1)
    assert loaded.tokenizer.encode("Lily saw a bird.") == source.tokenizer.encode("Lily saw a bird.")


def test_checksum_mismatch_names_the_tensor(packed_pair, tmp_path):
    _, path = packed_pair
    data = bytearray(path.read_bytes())
    # Flip one bit inside layers.2.wk's packed codes (found through the safetensors header).
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    start, _ = header["layers.2.wk::data"]["data_offsets"]
    data[8 + header_len + start + 3] ^= 0x10
    damaged = tmp_path / "damaged.edgekit"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=r"checksum mismatch in tensor 'layers\.2\.wk'"):
        load(damaged)


def test_newer_file_version_is_refused(packed_pair, tmp_path, monkeypatch):
    packed, _ = packed_pair
    monkeypatch.setattr(edgekit_file, "FILE_FORMAT_VERSION", 99)
    path = save_model(packed, tmp_path / "future.edgekit")
    monkeypatch.undo()
    with pytest.raises(UnsupportedModelError, match="version 99"):
        load(path)


def test_interrupted_write_leaves_nothing_behind(packed_pair, tmp_path, monkeypatch):
    packed, _ = packed_pair
    target = tmp_path / "out.edgekit"
    target.write_bytes(b"previous contents")

    def explode(*args, **kwargs):
        with open(args[1], "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.numpy.save_file", explode)
    with pytest.raises(KeyboardInterrupt):
        save_model(packed, target)
    assert target.read_bytes() == b"previous contents"
    assert [p.name for p in tmp_path.iterdir()] == ["out.edgekit"]


def test_failed_quantization_writes_no_output(models, tmp_path):
    from edgekit.errors import ConfigError

    with pytest.raises(ConfigError):
        quantize_checkpoint(models / "stories260K.bin", tmp_path / "out.bin", QuantizeConfig())
    assert not any(tmp_path.iterdir())
