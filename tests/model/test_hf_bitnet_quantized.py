"""BitNet checkpoints saved with transformers' BitNet quantization (as BitNet b1.58 2B4T ships)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from edgekit.errors import CorruptCheckpointError, UnsupportedModelError
from edgekit.model import load
from edgekit.model.reference import KVCache, ReferenceForward

from .hf_tiny import make_model, write_word_tokenizer

pytest.importorskip("accelerate")  # transformers' BitNet quantizer needs it to load these checkpoints
os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")  # transformers' BitNet ops are @torch.compile'd

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MODES = {"packed": ("bitlinear", "offline"), "trits": ("autobitlinear", "offline"),
         "master": ("autobitlinear", "online")}
TOKENS = [1, 5, 17, 3, 88, 42, 9, 60, 2, 31]


def absmean(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = weight.abs().mean().clamp(min=1e-5)
    return (weight / mean).round().clamp(-1, 1), mean


def save_quantized(hf, path, mode: str):
    """Write the checkpoint the way transformers' BitNet integration stores each mode."""
    from safetensors.torch import save_file
    from transformers.integrations.bitnet import pack_weights

    state, trits = {}, {}
    for name, value in hf.state_dict().items():
        if not name.endswith(tuple(f"{p}.weight" for p in LINEARS)) or mode == "master":
            state[name] = value.contiguous()
            continue
        t, mean = absmean(value)
        trits[name] = t
        if mode == "packed":  # BitLinear: packed uint8, output divided by weight_scale
            state[name] = pack_weights(t.to(torch.int8))
            state[name.replace(".weight", ".weight_scale")] = (1.0 / mean).reshape(1)
        else:  # AutoBitLinear offline: float trits, output multiplied by weight_scale
            state[name] = t.contiguous()
            state[name.replace(".weight", ".weight_scale")] = mean.reshape(1)
    path.mkdir()
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    config = hf.config.to_dict()
    linear_class, quant_mode = MODES[mode]
    config["quantization_config"] = {"quant_method": "bitnet", "linear_class": linear_class,
                                     "quantization_mode": quant_mode}
    (path / "config.json").write_text(json.dumps(config))
    write_word_tokenizer(path, hf.config.vocab_size)
    return trits


@pytest.mark.parametrize("mode", sorted(MODES))
def test_quantized_bitnet_matches_transformers(tmp_path, mode):
    import transformers

    hf = make_model("bitnet", seed=11, hidden_size=64, intermediate_size=128)
    trits = save_quantized(hf, tmp_path / mode, mode)
    theirs_model = transformers.BitNetForCausalLM.from_pretrained(tmp_path / mode, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = theirs_model(torch.tensor([TOKENS])).logits[0].numpy()
    model = load(tmp_path / mode)
    assert model.config.ternary_weights and model.config.act_quant == "int8_absmax"
    ours = ReferenceForward(model).forward(TOKENS, KVCache(model.config))
    assert np.abs(ours - theirs).max() <= 1e-4
    for hf_name, t in trits.items():  # stored trits come back exactly
        layer = hf_name.split(".")[2]
        kind = {"q_proj": "wq", "k_proj": "wk", "v_proj": "wv", "o_proj": "wo", "gate_proj": "w1",
                "up_proj": "w3", "down_proj": "w2"}[hf_name.split(".")[-2]]
        np.testing.assert_array_equal(model.tensors[f"layers.{layer}.{kind}"], t.numpy())


def test_damaged_packed_code_is_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    hf = make_model("bitnet", seed=2, hidden_size=64, intermediate_size=128)
    save_quantized(hf, tmp_path / "q", "packed")
    tensors = load_file(tmp_path / "q" / "model.safetensors")
    tensors["model.layers.1.mlp.down_proj.weight"][0, 0] = 0xFF
    save_file(tensors, tmp_path / "q" / "model.safetensors")
    with pytest.raises(CorruptCheckpointError, match=r"layers\.1\.w2.*0b11"):
        load(tmp_path / "q")


def test_other_quantization_configs_are_refused(tmp_path):
    hf = make_model("bitnet", seed=2, hidden_size=64, intermediate_size=128)
    save_quantized(hf, tmp_path / "q", "packed")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    config["quantization_config"]["use_rms_norm"] = True
    (tmp_path / "q" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="use_rms_norm"):
        load(tmp_path / "q")
