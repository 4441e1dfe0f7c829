"""Tiny random transformers models saved as HF directories: the oracle for the reference forward."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

CONFIG_CLASSES = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
                  "qwen3": transformers.Qwen3Config, "bitnet": transformers.BitNetConfig}
MODEL_CLASSES = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM,
                 "qwen3": transformers.Qwen3ForCausalLM, "bitnet": transformers.BitNetForCausalLM}


def tiny_config(model_type: str, **overrides):
    base = dict(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=False,
                bos_token_id=1, eos_token_id=2)
    base.update(overrides)
    return CONFIG_CLASSES[model_type](**base)


def make_model(model_type: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config = tiny_config(model_type, **overrides)
    model = MODEL_CLASSES[model_type](config).eval().float()
    with torch.no_grad():  # random init leaves norms at 1 and biases at 0; perturb them so they matter
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return model


def save_model(model, path: Path, dtype: torch.dtype = torch.float32, **kwargs) -> Path:
    model.to(dtype).save_pretrained(path, safe_serialization=True, **kwargs)
    model.float()
    return path


def hf_logits(model, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float()


def write_word_tokenizer(path: Path, vocab_size: int) -> None:
    """A word-level tokenizer.json with `vocab_size` tokens (`w0` ... ), enough for loader tests."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(vocab_size)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))


def save_hf_dir(model, path: Path, dtype: torch.dtype = torch.float32, **kwargs) -> Path:
    save_model(model, path, dtype, **kwargs)
    write_word_tokenizer(path, model.config.vocab_size)
    return path
