"""The llama.cpp back end (llama-cpp-python): the Backend protocol, GGUF files run as they are, other
models exported on the fly, parity with edgekit's engine, and `edgekit run --backend llama.cpp`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("llama_cpp")

from edgekit.errors import GenerationError  # noqa: E402
from edgekit.model import load  # noqa: E402
from edgekit.quantize.config import QuantizeConfig  # noqa: E402
from edgekit.quantize.evaluate import compare_models  # noqa: E402
from edgekit.quantize.pipeline import quantize_model  # noqa: E402
from edgekit.runtime import open_backend  # noqa: E402
from edgekit.runtime.llamacpp import LlamaCppBackend  # noqa: E402
from tests.runtime.parity import STORIES260K_START, check_protocol, edgekit_backend, greedy  # noqa: E402


@pytest.fixture(scope="module")
def stories_gguf(models):
    return load(models / "stories260K.gguf")


def test_backend_protocol_on_a_gguf_file(stories_gguf):
    backend = open_backend(stories_gguf, "llama.cpp", context_length=8)
    assert backend._tmp is None                       # the file itself, no export
    check_protocol(backend, stories_gguf.config.vocab_size)
    with pytest.raises(GenerationError, match="exceed the context"):
        backend.prefill(list(range(1, 7)))
    backend.reset()
    with pytest.raises(GenerationError, match="vocabulary"):
        backend.prefill([stories_gguf.config.vocab_size])
    backend.close()


def test_stories260k_gguf_greedy_equals_edgekit(stories_gguf):
    backend = LlamaCppBackend(stories_gguf, threads=2)
    tokens = greedy(backend, steps=64)
    backend.close()
    assert tokens == greedy(edgekit_backend(stories_gguf), steps=64)
    assert stories_gguf.tokenizer.decode([1] + tokens).startswith(STORIES260K_START)


def test_non_gguf_model_is_exported_on_the_fly_and_cleaned_up(models):
    model = load(models / "stories260K.bin")
    backend = LlamaCppBackend(model, export_options={"float_type": "F16"})
    tmp = backend._tmp
    assert tmp is not None and (tmp / "model.gguf").is_file()
    tokens = greedy(backend, steps=64)
    backend.close()
    assert not tmp.exists()
    assert tokens == greedy(edgekit_backend(model), steps=64)


@pytest.mark.slow
def test_stories260k_q8_0_top1_agreement(models, tinystories):
    """ek_i8 g32 -> Q8_0 bytes unchanged (w2's 172 columns fall back to F16); llama.cpp quantizes activations
    to Q8_0 blocks where the reference keeps them float."""
    packed = quantize_model(load(models / "stories260K.bin"),
                            QuantizeConfig(format="ek_i8", method="rtn", group_size=32, embedding_format="f16"))
    report = compare_models(open_backend(packed, "reference"), LlamaCppBackend(packed), tinystories, None, 20)
    print(f"stories260K Q8_0 llama.cpp vs reference: top-1 {report.top1_agreement:.4f}, KL {report.mean_kl:.6f}")
    assert report.top1_agreement >= 0.99 and report.mean_kl < 0.002


def test_cli_run_on_llama_cpp(models):
    run = subprocess.run([sys.executable, "-m", "edgekit.cli.main", "run", str(models / "stories260K.gguf"),
                          "--backend", "llama.cpp", "-n", "40"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stderr
    assert STORIES260K_START[:60] in run.stdout.replace("\n", "")
    assert "llama.cpp: prefill" in run.stderr
