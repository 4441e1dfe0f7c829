"""`edgekit run`, `demo` and `eval` on their default back end, the native engine, and its options."""

from __future__ import annotations

import json

from tests.cli.test_cli import edgekit_cli


def test_run_defaults_to_the_native_engine_and_matches_the_reference(models):
    native = edgekit_cli("run", models / "stories260K.bin", "-n", "40")
    reference = edgekit_cli("run", models / "stories260K.bin", "-n", "40", "--backend", "reference")
    assert native.returncode == 0 == reference.returncode, native.stderr + reference.stderr
    assert native.stderr.startswith("native: prefill") and reference.stderr.startswith("reference: prefill")
    assert native.stdout == reference.stdout
    assert native.stdout.startswith("Once upon a time, there was a little girl named Lily.")


def test_run_threads_and_kv_cache_options(models):
    result = edgekit_cli("run", models / "bitnet" / "bitllama2c_3M_ternary_lsbfirst.bin", "-n", "24",
                         "--threads", "1", "--kv-cache", "int8")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Once upon a time, there was a little girl named Lily.")
    assert "decode 24 tokens" in result.stderr


def test_native_only_options_are_refused_elsewhere_with_a_fix(models):
    result = edgekit_cli("run", models / "stories260K.bin", "-n", "4", "--backend", "reference", "--threads", "2")
    assert result.returncode == 1 and "has no --threads option" in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.stderr
    result = edgekit_cli("run", models / "stories260K.bin", "-n", "4", "--kv-cache", "bf16")
    assert result.returncode == 1 and "bf16" in result.stderr and "f16" in result.stderr


def test_demo_reports_native_speed():
    result = edgekit_cli("demo", "-n", "16", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Once upon a time") and "speed (native)" in result.stdout


def test_eval_on_native_reproduces_the_documented_ternary_nll(models, tinystories):
    """../shared/README.md: the bitllama2c 3M model's mean NLL on the first 20 stories is 1.0923."""
    result = edgekit_cli("eval", models / "bitnet" / "bitllama2c_3M_ternary_lsbfirst.bin", "--text", tinystories,
                         "--max-documents", "20", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tokens"] == 6453 and abs(report["mean_nll"] - 1.0923) < 1e-3


def test_eval_against_a_reference_on_native_says_how_to_get_per_layer_errors(models, tinystories):
    """The per-layer table needs the reference forward's block outputs; on the native default it points there."""
    model = models / "stories260K.bin"
    result = edgekit_cli("eval", model, "--text", tinystories, "--reference", model, "--max-documents", "3")
    assert result.returncode == 0, result.stderr
    assert "--backend reference" in result.stdout and "100.00%" in result.stdout
    report = json.loads(edgekit_cli("eval", model, "--text", tinystories, "--reference", model, "--max-documents", "3",
                                    "--json").stdout)
    assert report["layers"] == [] and report["top1_agreement"] == 1.0 and report["mean_kl"] < 1e-6
