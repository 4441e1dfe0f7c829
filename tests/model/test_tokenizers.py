"""Tokenizer loading conventions: tokenizer.json with and without a BOS post-processor, BOS/EOS sources."""

from __future__ import annotations

import json
import shutil

import pytest
import sentencepiece

from edgekit.model import load
from edgekit.model.loaders.llama2c import load_llama2c_tokenizer
from edgekit.quantize.evaluate import split_documents


@pytest.fixture()
def hf_dir_with_tokenizer_json(tmp_path, models):
    """stories260K_hf with its sentencepiece model replaced by an equivalent tokenizer.json."""
    path = tmp_path / "stories"
    path.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(models / "stories260K_hf" / name, path / name)
    backend = load_llama2c_tokenizer(models / "tok512.bin").backend
    backend.save(str(path / "tokenizer.json"))
    return path


def with_bos_post_processor(path):
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(str(path / "tokenizer.json"))


def test_tokenizer_json_with_bos_template(hf_dir_with_tokenizer_json, models, tinystories):
    with_bos_post_processor(hf_dir_with_tokenizer_json)
    model = load(hf_dir_with_tokenizer_json)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(models / "tok512.model"))
    for doc in split_documents(tinystories.read_text(encoding="utf-8"))[:30]:
        assert model.tokenizer.encode(doc) == [1] + sp.encode(doc)
    assert model.tokenizer.bos_id == 1 and model.tokenizer.eos_ids == (2,)


def test_tokenizer_json_without_bos_template_adds_none(hf_dir_with_tokenizer_json):
    model = load(hf_dir_with_tokenizer_json)
    assert model.tokenizer.encode("Once upon a time")[0] != 1
    assert model.tokenizer.encode("Once upon a time", add_bos=True)[0] == 1


def test_tokenizer_config_and_generation_config_take_precedence(hf_dir_with_tokenizer_json):
    path = hf_dir_with_tokenizer_json
    (path / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True}))
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": [2, 0]}))
    model = load(path)
    assert model.tokenizer.encode("Once")[0] == 1
    assert model.tokenizer.eos_ids == (2, 0)
