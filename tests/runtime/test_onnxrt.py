"""The onnxruntime back end on exported ONNX directories: the Backend protocol, parity with edgekit's own
engine on the shared models and the built-in model, and the CLI (`export onnx`, `run --backend onnxruntime`).

Parity rules (issue 5): greedy tokens equal for >= 64 steps where both engines compute the same sums (float
weights; ternary with int8 activations at accuracy_level 0; int4/int8 weights under float activations, where both
engines add a second int8 pass for the rounding residual); for int8-activation models at accuracy_level 4
MatMulNBits re-quantizes the int8 values per block of 128 where edgekit quantizes per token, so the measure is
top-1 agreement >= 99% over the TinyStories sample with the KL divergence reported.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from edgekit.errors import GenerationError  # noqa: E402
from edgekit.export.onnx_graph import OnnxGraphConfig  # noqa: E402
from edgekit.export.onnx_writer import export_onnx  # noqa: E402
from edgekit.model import load  # noqa: E402
from edgekit.quantize.config import QuantizeConfig  # noqa: E402
from edgekit.quantize.evaluate import compare_models  # noqa: E402
from edgekit.quantize.pipeline import quantize_model  # noqa: E402
from edgekit.runtime.onnxrt import OnnxRuntimeBackend, load_onnx_export  # noqa: E402
from tests.runtime.parity import STORIES260K_START, check_protocol, edgekit_backend, greedy  # noqa: E402

DOCUMENTS = 20          # first 20 TinyStories documents: 6,453 tokens with tok512
TERNARY = {"bitllama2c-3M": "bitnet/bitllama2c_3M_ternary_lsbfirst.bin",
           "bitllama2c-1M": "bitnet/bitllama2c_1M_ternary_msbfirst.bin"}


def shared_or_default(models, key):
    if key == "default":
        from edgekit.quantize.default_model import load_default_model

        return load_default_model()
    return load(models / TERNARY[key])


@pytest.fixture(scope="module")
def stories(models):
    return load(models / "stories260K.bin")


def test_backend_protocol_and_context_limit(stories, tmp_path):
    export_onnx(stories, tmp_path / "s")
    backend = OnnxRuntimeBackend(load_onnx_export(tmp_path / "s"), context_length=8, threads=1)
    check_protocol(backend, stories.config.vocab_size)
    assert backend.context_length == 8
    with pytest.raises(GenerationError, match="exceed the context"):
        backend.prefill(list(range(1, 7)))
    backend.reset()
    with pytest.raises(GenerationError, match="empty"):
        backend.prefill([])
    with pytest.raises(GenerationError, match="vocabulary"):
        backend.prefill([stories.config.vocab_size])
    backend.close()


@pytest.mark.parametrize("float_type", ["f32", "f16"])
def test_stories260k_float_greedy_equals_edgekit(stories, float_type):
    backend = OnnxRuntimeBackend(stories, graph_config=OnnxGraphConfig(float_type=float_type))
    tokens = greedy(backend, steps=64)
    backend.close()
    assert tokens == greedy(edgekit_backend(stories), steps=64)
    if float_type == "f32":
        assert stories.tokenizer.decode([1] + tokens).startswith(STORIES260K_START)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["ek_i8", "ek_i4"])
def test_stories260k_packed_agreement(stories, tinystories, fmt):
    """int8/int4 g32 (MatMulNBits 8/4-bit, exact bytes) under a float-activation model. accuracy_level 0 is the
    reference forward's float sums. At the default accuracy_level 4 MLAS rounds activations to int8 per block;
    one such pass left 99.03% / 98.96% top-1 against edgekit's engine over the whole sample (KL 3.4e-4 / 4.5e-4),
    which feeds its int8 kernels x plus the rounding residual. The graph does the same (activation_passes=2):
    measured over the whole sample 99.99% / 100.00%, KL 1.6e-8 / 2.1e-8 (docs/DEPLOY.md), so the first 20 documents
    keep this test short; and the greedy tokens are equal."""
    from edgekit.runtime import open_backend

    packed = quantize_model(stories, QuantizeConfig(format=fmt, method="rtn", group_size=32, embedding_format="f16"))
    exact = compare_models(open_backend(packed, "reference"),
                           OnnxRuntimeBackend(packed, graph_config=OnnxGraphConfig(accuracy_level=0)),
                           tinystories, None, DOCUMENTS)
    assert exact.top1_agreement >= 0.999 and exact.mean_kl < 1e-5
    backend, native = OnnxRuntimeBackend(packed), edgekit_backend(packed)
    fast = compare_models(native, backend, tinystories, None, DOCUMENTS)    # 99.98% / 99.98% on these 6,453
    print(f"{fmt} g32 onnxruntime vs edgekit: level 0 top-1 {exact.top1_agreement:.4f} KL {exact.mean_kl:.2e}; "
          f"level 4, 2 passes top-1 {fast.top1_agreement:.4f} KL {fast.mean_kl:.2e} nats ({fast.tokens} tokens)")
    assert fast.top1_agreement >= 0.99 and fast.mean_kl < 1e-6
    assert greedy(backend, steps=64) == greedy(native, steps=64)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["bitllama2c-3M", "bitllama2c-1M", "default"])
def test_ternary_models_greedy_equal_with_float_activations(models, key):
    model = shared_or_default(models, key)
    backend = OnnxRuntimeBackend(model, graph_config=OnnxGraphConfig(accuracy_level=0))
    tokens = greedy(backend, steps=64)
    backend.close()
    assert tokens == greedy(edgekit_backend(model), steps=64)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["bitllama2c-3M", "bitllama2c-1M", "default"])
def test_ternary_models_top1_agreement_at_accuracy_level_4(models, tinystories, key):
    model = shared_or_default(models, key)
    # The whole sample (51,532 tokens), as the issue states the bar: on the first 20 documents the 1M model sits
    # at 99.01%, one token from the line, where another CPU's MLAS kernels could flip a near tie.
    report = compare_models(edgekit_backend(model), OnnxRuntimeBackend(model), tinystories, None, None)
    print(f"{key} onnxruntime (accuracy_level 4) vs edgekit: top-1 {report.top1_agreement:.4f}, "
          f"KL {report.mean_kl:.6f} nats, {report.tokens} tokens")
    assert report.top1_agreement >= 0.99 and report.mean_kl < 0.01


def edgekit_cli(*args: str):
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "COLUMNS": "200"})


def test_cli_exports_and_runs_onnx(models, tmp_path):
    out = tmp_path / "onnx"
    assert edgekit_cli("export", "onnx", str(models / "stories260K.bin"), "-o", str(out), "--ort-format").returncode == 0
    assert (out / "model.ort").is_file() and (out / "genai_config.json").is_file()
    run = edgekit_cli("run", str(out), "--backend", "onnxruntime", "-n", "40")
    assert run.returncode == 0 and STORIES260K_START[:60] in run.stdout.replace("\n", "")
    assert edgekit_cli("run", str(out / "model.ort"), "--backend", "onnxruntime", "-n", "5").returncode == 0
    refused = edgekit_cli("run", str(out), "-n", "5")                       # not runnable on the reference
    assert refused.returncode == 1 and "onnxruntime" in refused.stderr
    exists = edgekit_cli("export", "onnx", str(models / "stories260K.bin"), "-o", str(out))
    assert exists.returncode == 1 and "already exists" in exists.stderr


def test_running_an_export_needs_neither_torch_nor_onnx(stories, tmp_path):
    """The edge side runs on onnxruntime + numpy alone: `onnx` (the exporter's package) and torch stay out."""
    export_onnx(stories, tmp_path / "s")
    code = ("import sys; from edgekit.runtime.onnxrt import OnnxRuntimeBackend, load_onnx_export; "
            "b = OnnxRuntimeBackend(load_onnx_export(sys.argv[1])); b.prefill([1, 2]); b.decode(3); "
            "bad = [m for m in ('torch', 'transformers', 'onnx') if m in sys.modules]; print(bad)")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
