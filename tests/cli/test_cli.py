"""The `edgekit` command line, run as a user would: a subprocess of the installed entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import edgekit


def edgekit_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_version():
    result = edgekit_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"edgekit {edgekit.__version__}"


def test_inspect_table_and_json(models):
    result = edgekit_cli("inspect", models / "stories260K.gguf")
    assert result.returncode == 0, result.stderr
    assert "layers.4.w2" in result.stdout and "64x172" in result.stdout
    info = json.loads(edgekit_cli("inspect", models / "stories260K_hf", "--json").stdout)
    assert info["architecture"] == "llama" and info["format"] == "hf"
    assert info["parameters"] == 64 * 512 + 64 + 5 * (2 * 64 + 64 * 64 * 2 + 2 * 64 * 32 + 3 * 64 * 172)
    shapes = {t["name"]: t["shape"] for t in info["tensors"]}
    assert shapes["layers.0.wk"] == [32, 64] and shapes["tok_embeddings"] == [512, 64]


def test_run_streams_the_documented_story_and_reports_speed(models):
    result = edgekit_cli("run", models / "stories260K.bin", "--max-tokens", "30")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Once upon a time, there was a little girl named Lily.")
    assert "prefill" in result.stderr and "decode 30 tokens" in result.stderr and "tok/s" in result.stderr


def test_run_with_prompt_and_sampling_options(models):
    args = ("run", models / "bitnet" / "bitllama2c_3M_ternary_lsbfirst.bin", "--prompt", "Tom had a dog",
            "-n", "20", "--temperature", "0.8", "--top-p", "0.9", "--top-k", "40", "--seed", "5")
    first, second = edgekit_cli(*args), edgekit_cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Tom had a dog") and first.stdout == second.stdout


def test_eval_reproduces_the_documented_perplexity(models, tinystories):
    result = edgekit_cli("eval", models / "stories260K.bin", "--text", tinystories, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tokens"] == 51532 and report["documents"] == 156
    assert abs(report["perplexity"] - 3.374) / 3.374 < 0.01
    assert abs(report["mean_nll"] - 1.2162) < 1e-3


def test_eval_table(models, tinystories):
    result = edgekit_cli("eval", models / "stories260K.gguf", "--text", tinystories, "--context", "512",
                         "--max-documents", "20")
    assert result.returncode == 0, result.stderr
    assert "6,453" in result.stdout and "1.1924" in result.stdout


@pytest.mark.parametrize("args,message", [
    (("run", "/no/such/model.gguf"), "no such file or directory"),
    (("run", "{models}/stories260K.bin", "--top-p", "2"), "top_p must be in (0, 1]"),
    (("eval", "{models}/stories260K.bin", "--text", "/no/such.txt"), "text file not found"),
    (("inspect", "{models}/tok512.model"), "not a checkpoint"),
])
def test_errors_are_one_line_with_exit_1_and_no_traceback(models, args, message):
    result = edgekit_cli(*(a.format(models=models) for a in args))
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr + result.stdout


def test_debug_env_shows_the_traceback(models):
    result = edgekit_cli("run", "/no/such/model.gguf", env={"EDGEKIT_DEBUG": "1"})
    assert result.returncode == 1 and "Traceback" in result.stderr and "ModelNotFoundError" in result.stderr


def test_usage_errors_exit_2():
    assert edgekit_cli("run").returncode == 2


def test_quantize_inspect_and_compare(models, tinystories, tmp_path):
    out = tmp_path / "s.edgekit"
    result = edgekit_cli("quantize", models / "stories260K.bin", "-o", out, "--format", "ek_i4", "--method", "rtn",
                         "--tensor-type", r"layers\.0\..*=ek_i8", "--keep-float", "layers\\.4\\.w2")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and out.is_file()
    info = json.loads(edgekit_cli("inspect", out, "--json").stdout)
    formats = {t["name"]: t["dtype"] for t in info["tensors"]}
    assert formats["layers.0.wq"] == "ek_i8" and formats["layers.1.wq"] == "ek_i4" and formats["layers.4.w2"] == "f16"
    assert info["packed"] and 4.0 < info["linear_bits_per_weight"] < 9.0
    report = json.loads(edgekit_cli("eval", out, "--text", tinystories, "--reference", models / "stories260K.bin",
                                    "--max-documents", "5", "--backend", "reference", "--json").stdout)
    assert report["reference_perplexity"] < report["perplexity"] < 1.2 * report["reference_perplexity"]
    assert 0 < report["mean_kl"] < 0.2 and 0.8 < report["top1_agreement"] < 1.0
    assert len(report["layers"]) == 5
    generated = edgekit_cli("run", out, "-n", "12")
    assert generated.returncode == 0 and generated.stdout.startswith("Once upon a time")


def test_quantize_bad_format_lists_the_valid_ones(models, tmp_path):
    result = edgekit_cli("quantize", models / "stories260K.bin", "-o", tmp_path / "x.edgekit", "--format", "q4_k")
    assert result.returncode == 1 and "ek_t2" in result.stderr and not any(tmp_path.iterdir())


def test_quantize_with_gptq_and_rotation(models, tinystories, tmp_path):
    out = tmp_path / "g.edgekit"
    result = edgekit_cli("quantize", models / "stories260K.bin", "-o", out, "--format", "ek_i3", "--method", "gptq",
                         "--calib", tinystories, "--calib-first-document", "40", "--calib-tokens", "2048",
                         "--act-order", "--rotate", "hadamard")
    assert result.returncode == 0, result.stderr
    recipe = json.loads(json.loads(edgekit_cli("inspect", out, "--json").stdout)["metadata"]["recipe"])
    assert recipe["method"] == "gptq" and recipe["rotate"] == "hadamard" and recipe["act_order"] is True


def test_gptq_with_too_little_text_writes_nothing(models, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Once upon a time.")
    result = edgekit_cli("quantize", models / "stories260K.bin", "-o", tmp_path / "g.edgekit", "--format", "ek_i4",
                         "--method", "gptq", "--calib", short)
    assert result.returncode == 1 and "token" in result.stderr
    assert not (tmp_path / "g.edgekit").exists()


def test_quantize_with_qat_stores_the_training_recipe_and_resumes(models, tinystories, tmp_path):
    out, run = tmp_path / "q.edgekit", tmp_path / "run"
    args = ("quantize", models / "stories260K.bin", "-o", out, "--format", "ek_t2", "--method", "qat",
            "--calib", tinystories, "--calib-first-document", "20", "--steps", "4", "--batch-size", "2",
            "--seq-len", "32", "--checkpoint-dir", run)
    result = edgekit_cli(*args)
    assert result.returncode == 0, result.stderr
    recipe = json.loads(json.loads(edgekit_cli("inspect", out, "--json").stdout)["metadata"]["recipe"])
    assert recipe["method"] == "qat" and recipe["format"] == "ek_t2" and recipe["steps"] == 4
    assert recipe["first_document"] == 20 and (run / "qat_checkpoint.pt").is_file()
    again = edgekit_cli(*args[:-2], "--checkpoint-dir", run, "--lr", "0.5")      # a different recipe: refused
    assert again.returncode == 1 and "lr" in again.stderr


def test_quantize_with_qat_awq_stores_awq_in_the_recipe(models, tinystories, tmp_path):
    out = tmp_path / "a.edgekit"
    result = edgekit_cli("quantize", models / "stories260K.bin", "-o", out, "--format", "ek_i4", "--group-size", "32",
                         "--method", "qat", "--awq", "--calib", tinystories, "--calib-first-document", "20",
                         "--calib-tokens", "512", "--steps", "2", "--batch-size", "1", "--seq-len", "32",
                         "--min-lr-ratio", "0")
    assert result.returncode == 0, result.stderr
    recipe = json.loads(json.loads(edgekit_cli("inspect", out, "--json").stdout)["metadata"]["recipe"])
    assert recipe["awq"] is True and recipe["format"] == "ek_i4" and recipe["calib_tokens"] == 512
    assert recipe["min_lr_ratio"] == 0.0


def test_quantize_with_qat_needs_text_and_refuses_ptq_only_options(models, tmp_path):
    out = tmp_path / "q.edgekit"
    result = edgekit_cli("quantize", models / "stories260K.bin", "-o", out, "--method", "qat")
    assert result.returncode == 1 and "--calib" in result.stderr
    result = edgekit_cli("quantize", models / "stories260K.bin", "-o", out, "--method", "qat", "--rotate", "hadamard")
    assert result.returncode == 1 and "--rotate" in result.stderr and not out.exists()


def test_demo_runs_the_built_in_model_and_reports_it():
    result = edgekit_cli("demo", "--max-tokens", "24")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Once upon a time")
    for fact in ("bits per weight", "2.001", "quality vs float teacher", "perplexity", "decode", "tok/s", "0.36 MB"):
        assert fact in result.stdout, fact
