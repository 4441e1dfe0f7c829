"""`edgekit hls generate/csim`, `edgekit fpga estimate` and `edgekit run --backend fpga`, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def edgekit_cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "COLUMNS": "200", **(env or {})})


@pytest.mark.slow
def test_generate_then_csim(models, tmp_path):
    project = tmp_path / "bit1m"
    model = models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin"
    done = edgekit_cli("hls", "generate", model, "--board", "kv260", "-o", project, "--max-seq", "64")
    assert done.returncode == 0, done.stderr
    assert (project / "manifest.json").is_file()
    done = edgekit_cli("hls", "csim", project)
    assert done.returncode == 0, done.stdout + done.stderr
    # 9 layer checks + 11 LM-head checks (the head alone with and without logits, every prefill row, a decode
    # step's top-k)
    assert done.stdout.count("bit-exact") == 20 and "MISMATCH" not in done.stdout
    assert "decode_head_top_ids" in done.stdout
    again = edgekit_cli("hls", "generate", model, "-o", project)               # never edits what it wrote
    assert again.returncode == 1 and "never edited" in again.stderr and "fix:" in again.stderr


def test_float_models_are_refused_with_a_fix(models, tmp_path):
    done = edgekit_cli("hls", "generate", models / "stories260K.bin", "-o", tmp_path / "p")
    assert done.returncode == 1
    assert "act_quant" in done.stderr and "fix:" in done.stderr and "W1.58A8" in done.stderr
    assert not (tmp_path / "p").exists()


def test_csim_of_a_folder_that_is_not_a_project(tmp_path):
    done = edgekit_cli("hls", "csim", tmp_path)
    assert done.returncode == 1 and "edgekit hls generate" in done.stderr


def test_estimate_json_for_the_2b4t_shape():
    done = edgekit_cli("fpga", "estimate", "bitnet-b1.58-2b4t", "--board", "kv260", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["board"] == "kv260" and result["decode"] and result["prefill"]
    assert all(0 < v <= 0.9 for v in result["utilization"].values() if v)
    assert {row["version"] for row in result["tellme"]} == {"v1", "v2"}
    # the LM head runs on the fabric (int4 by default): its words are part of each token's DDR traffic
    assert result["lm_head"] == "fpga" and result["design"]["hls"]["head_bits"] == 4
    assert all(row["head_s"] > 0 and row["ddr_bytes"] > result["weight_bytes"] + result["head_bytes"]
               for row in result["decode"])
    assert result["design"]["hls"]["kv_bits"] == 8                  # the int8 KV cache is the default


def test_explicit_knobs_over_the_part_are_refused_with_the_knob():
    done = edgekit_cli("fpga", "estimate", "bitnet-b1.58-2b4t", "--board", "kv260", "--lanes", "256",
                       "--tile-tokens", "8")
    assert done.returncode == 1 and "luts but kv260" in done.stderr and "--lanes" in done.stderr


@pytest.mark.slow
def test_run_on_the_fpga_backend(models):
    done = edgekit_cli("run", models / "bitnet" / "bitllama2c_3M_ternary_lsbfirst.bin", "-n", "32",
                       "--backend", "fpga", "--temperature", "0", env={"EDGEKIT_FPGA_DEVICE": "csim"})
    assert done.returncode == 0, done.stderr
    # the documented greedy text of the 3M model (../shared/README.md), with the default int4 head on the fabric
    assert "Once upon a time, there was a little girl named Lily. She loved to play outside and explore" in done.stdout


def test_check_hwh(tmp_path):
    hwh = tmp_path / "ek.hwh"
    hwh.write_text('<EDKSYSTEM><MODULES><MODULE INSTANCE="ek_top_0" VLNV="edgekit.org:hls:ek_top:1.0"/>'
                   '</MODULES></EDKSYSTEM>')
    done = edgekit_cli("fpga", "check-hwh", hwh)
    assert done.returncode == 0 and "ek_top_0" in done.stdout
    hwh.write_text('<EDKSYSTEM><MODULES><MODULE INSTANCE="axi_dma_0" VLNV="xilinx.com:ip:axi_dma:7.1"/>'
                   '</MODULES></EDKSYSTEM>')
    done = edgekit_cli("fpga", "check-hwh", hwh)
    assert done.returncode == 1 and "axi_dma" in done.stderr and "fix:" in done.stderr
