"""onnxruntime-genai runs the exported directory as it is: genai_config.json, the tokenizer and the decoder graph
(float and MatMulNBits), the .onnx and the ORT-format (mobile) file, token for token with edgekit's engine."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

og = pytest.importorskip("onnxruntime_genai")
pytest.importorskip("onnx")

from edgekit.export.onnx_writer import export_onnx  # noqa: E402
from edgekit.model import load  # noqa: E402
from edgekit.quantize.config import QuantizeConfig  # noqa: E402
from edgekit.quantize.pipeline import quantize_model  # noqa: E402
from tests.runtime.parity import STORIES260K_START, edgekit_backend, greedy  # noqa: E402

STEPS = 64


def genai_greedy(directory, steps: int = STEPS) -> list[int]:
    """Greedy tokens after BOS from onnxruntime-genai's own generator (its search options, its KV handling)."""
    model = og.Model(str(directory))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=1 + steps, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([[1]], dtype=np.int32))
    out = []
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out


@pytest.fixture(scope="module")
def stories(models):
    return load(models / "stories260K.bin")


def test_genai_runs_the_float_export_token_for_token(stories, tmp_path):
    export_onnx(stories, tmp_path / "s")
    tokens = genai_greedy(tmp_path / "s")
    assert tokens == greedy(edgekit_backend(stories), steps=STEPS)
    assert stories.tokenizer.decode([1] + tokens).startswith(STORIES260K_START)
    tokenizer = og.Tokenizer(og.Model(str(tmp_path / "s")))
    text = "Once upon a time, there was a little girl named Lily."
    assert [int(t) for t in tokenizer.encode(text)] == stories.tokenizer.encode(text)[1:]   # genai adds no BOS
    # genai's tokenizers-based decode keeps the first piece's sentencepiece space ("▁Once" -> " Once")
    assert tokenizer.decode(np.array(tokens[:20], dtype=np.int32)).lstrip(" ") == stories.tokenizer.decode(tokens[:20])


def test_genai_runs_matmul_nbits_export_and_its_ort_format_file(stories, tmp_path):
    """int4 g32 (MatMulNBits, accuracy_level 4, two activation passes) as model.onnx and as model.ort: the ORT-format
    file is the one onnxruntime Mobile loads; genai takes it when the config names it."""
    packed = quantize_model(stories, QuantizeConfig(format="ek_i4", method="rtn", group_size=32, embedding_format="f16"))
    report = export_onnx(packed, tmp_path / "p", ort_format=True)
    assert "model.ort" in report.files
    want = greedy(edgekit_backend(packed), steps=STEPS)
    assert genai_greedy(tmp_path / "p") == want
    mobile = tmp_path / "p-ort"
    shutil.copytree(tmp_path / "p", mobile)
    (mobile / "model.onnx").unlink()
    config = json.loads((mobile / "genai_config.json").read_text())
    config["model"]["decoder"]["filename"] = "model.ort"
    (mobile / "genai_config.json").write_text(json.dumps(config))
    assert genai_greedy(mobile) == want
