"""`edgekit hls generate` + C simulation with g++: every kernel and the top function bit-exact against the
numpy integer reference, on both bitllama2.c checkpoints and synthetic shapes (compiled once per design,
cached by content hash)."""

from __future__ import annotations

import json

import pytest

from edgekit.boards import load_board
from edgekit.errors import ConfigError
from edgekit.hls.csim import find_ap_include, run_csim
from edgekit.hls.design import HlsConfig
from edgekit.hls.writer import generate_project
from edgekit.model import load
from tests.hls.synthetic import synthetic_model

CHECKS = {"exp", "quant_q", "quant_scale", "tlmm_wq_layer0", "attention", "layer0_prefill", "layer0_kv",
          "model_prefill", "model_decode", "decode_logits_untouched",
          *(f"{prefix}_{part}" for prefix in ("head", "prefill_head") for part in ("top_ids", "top_logits", "logits")),
          "decode_head_top_ids", "decode_head_top_logits", "head_topk_top_ids", "head_topk_top_logits"}


def assert_all_pass(project):
    result = run_csim(project)
    assert set(result.checks) == CHECKS, result.output
    assert result.passed, result.output


@pytest.mark.slow
@pytest.mark.parametrize("name,hls", [
    ("bitllama2c_1M_ternary_msbfirst.bin", HlsConfig(max_seq=64, trit_pack="base3", head_screen=64)),
    ("bitllama2c_3M_ternary_lsbfirst.bin", HlsConfig(group=5, lanes=8, tile_tokens=4, key_block=8, max_seq=40,
                                                     head_bits=8, head_group=128, head_lanes=5, top_k=16,
                                                     kv_bits=8, ew_lanes=4, attn_int=True)),
])
def test_bitllama_projects_are_bit_exact(models, tmp_path, name, hls):
    project = generate_project(load(models / "bitnet" / name), load_board("kv260"), tmp_path / "prj", hls)
    assert_all_pass(project)


@pytest.mark.slow
@pytest.mark.parametrize("hls", [HlsConfig(group=3, half_table=False, lanes=3, tile_tokens=5, key_block=7,
                                           head_bits=2, head_group=32, head_lanes=3, top_k=1, trit_pack="base3"),
                                 HlsConfig(group=4, lanes=16, tile_tokens=8, key_block=16, kv_bits=8, trit_pack="base3"),
                                 HlsConfig(group=2, lanes=5, tile_tokens=3, key_block=8, kv_bits=8, head_screen=8,
                                           ew_lanes=3),
                                 HlsConfig(group=3, lanes=8, tile_tokens=3, key_block=5, kv_bits=8, attn_int=True,
                                           ew_lanes=2, trit_pack="base3")])
def test_synthetic_shapes_are_bit_exact(tmp_path, hls):
    # dim 100, hidden 172, 5 heads of 20 on 1 kv head: no dimension divides evenly by G or the lanes;
    # RMSNorm weights, BitNet sub-norms and squared ReLU; head rows of 100 in groups of 32 or 64 (padded),
    # 512 rows in lane blocks of 3 (padded), argmax only (top_k 1); base-3 words (5 trits a byte) in the first
    # two, the int8 KV cache in the last two, the last with the screened decode head (C = top_k = 8: its top-k
    # differs from the full head's, and csim must still match the twin) and 3 element-wise lanes (partial sums
    # of squares that no lane count divides evenly); the last: integer attention on the int8 codes (5 query heads
    # sharing one kv head's rows, key blocks of 5 across a tile of 3)
    project = generate_project(synthetic_model(), load_board("zcu104"), tmp_path / "prj", hls)
    assert_all_pass(project)


def test_project_layout_and_manifest(models, tmp_path):
    model = load(models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin")
    project = generate_project(model, load_board("kv260"), tmp_path / "prj", HlsConfig(max_seq=32))
    manifest = json.loads((project / "manifest.json").read_text())
    assert manifest["vlnv"] == "edgekit.org:hls:ek_top:1.0"
    for relative in ("include/ek_config.h", "include/ek_tlmm.h", "src/ek_top.cpp", "tb/tb_csim.cpp",
                     "data/weights.bin", "golden/decode_out.bin", "hls.tcl",
                     "README.md"):
        assert relative in manifest["files"], relative
    assert "kMaxSeq = 32" in (project / "include" / "ek_config.h").read_text()


def test_existing_folder_is_never_overwritten(models, tmp_path):
    model = load(models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin")
    (tmp_path / "prj").mkdir()
    (tmp_path / "prj" / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match="never edited"):
        generate_project(model, load_board("kv260"), tmp_path / "prj", HlsConfig(max_seq=32))
    assert (tmp_path / "prj" / "mine.txt").read_text() == "keep"


def test_a_design_too_big_for_the_part_is_refused_and_leaves_nothing(tmp_path):
    model = synthetic_model()
    with pytest.raises(ConfigError, match="needs .* luts but kv260") as error:
        generate_project(model, load_board("kv260"), tmp_path / "prj", HlsConfig(lanes=256, tile_tokens=128))
    assert "--lanes" in error.value.fix
    assert list(tmp_path.iterdir()) == []


def test_ap_int_headers_are_found():
    assert (find_ap_include() / "ap_int.h").is_file()


def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import edgekit.hls.writer as writer

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(writer, "render_makefile", broken)
    with pytest.raises(OSError, match="disk full"):
        generate_project(synthetic_model(), load_board("zcu102"), tmp_path / "prj", HlsConfig(lanes=4, max_seq=16))
    assert list(tmp_path.iterdir()) == []


def test_tile_storage_follows_the_part(tmp_path):
    model, hls = synthetic_model(), HlsConfig(lanes=4, max_seq=16)
    kv260 = generate_project(model, load_board("kv260"), tmp_path / "a", hls)
    zcu102 = generate_project(model, load_board("zcu102"), tmp_path / "b", hls)
    assert "#define EK_TILE_STORAGE uram" in (kv260 / "include" / "ek_config.h").read_text()
    assert "#define EK_TILE_STORAGE bram" in (zcu102 / "include" / "ek_config.h").read_text()


@pytest.mark.slow
def test_builtin_packed_model_project_is_bit_exact(tmp_path):
    from importlib import resources

    model = load(resources.files("edgekit.data").joinpath("default.edgekit"))    # ek_t2-packed, RMSNorm weights
    assert_all_pass(generate_project(model, load_board("kv260"), tmp_path / "prj", HlsConfig(max_seq=48)))
