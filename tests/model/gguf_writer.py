"""Write GGUF files the way llama.cpp's convert_hf_to_gguf.py does, with gguf-py, for loader tests."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import sentencepiece

QTYPES = {name: gguf.GGMLQuantizationType[name] for name in
          ("F32", "F16", "BF16", "Q8_0", "Q4_0", "TQ1_0", "TQ2_0", "Q4_K")}

_NAMES = {"input_layernorm.weight": "attn_norm", "self_attn.q_proj.weight": "attn_q",
          "self_attn.k_proj.weight": "attn_k", "self_attn.v_proj.weight": "attn_v",
          "self_attn.o_proj.weight": "attn_output", "post_attention_layernorm.weight": "ffn_norm",
          "mlp.gate_proj.weight": "ffn_gate", "mlp.up_proj.weight": "ffn_up", "mlp.down_proj.weight": "ffn_down",
          "self_attn.attn_sub_norm.weight": "attn_sub_norm", "mlp.ffn_sub_norm.weight": "ffn_sub_norm"}


def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute: HF rotate-half rows -> llama.cpp adjacent pairs."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def gguf_tensors(hf_model, permute: bool = True) -> dict[str, np.ndarray]:
    """GGUF name -> array; q/k permuted to adjacent pairs for llama (bitnet's NEOX RoPE keeps rotate-half,
    as convert_hf_to_gguf.py's BitnetModel writes them)."""
    cfg = hf_model.config
    out = {}
    for name, tensor in hf_model.state_dict().items():
        array = tensor.detach().float().numpy()
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = array
        elif name == "model.norm.weight":
            out["output_norm.weight"] = array
        elif name == "lm_head.weight":
            if not cfg.tie_word_embeddings:
                out["output.weight"] = array
        else:
            _, _, layer, rest = name.split(".", 3)
            if rest == "self_attn.q_proj.weight" and permute:
                array = llama_cpp_permute(array, cfg.num_attention_heads)
            elif rest == "self_attn.k_proj.weight" and permute:
                array = llama_cpp_permute(array, cfg.num_key_value_heads)
            out[f"blk.{layer}.{_NAMES[rest]}.weight"] = array
    return out


def add_spm_vocab(writer: gguf.GGUFWriter, model_file: Path) -> None:
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(sp.bos_id())
    writer.add_eos_token_id(sp.eos_id())
    writer.add_unk_token_id(sp.unk_id())


def add_bpe_vocab(writer: gguf.GGUFWriter, tokens: list[str], merges: list[str], pre: str) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([1] * len(tokens))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)


def write_gguf(path: Path, hf_model, weight_type: str = "F32", vocab=None, overrides: dict | None = None,
               arch: str = "llama") -> dict:
    """Write `hf_model` as a `llama` (or, for transformers' BitNet, `bitnet`) GGUF; 2-D weights in `weight_type`
    (norms F32). Returns what was stored, dequantized, by GGUF tensor name."""
    cfg = hf_model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    (vocab or (lambda w: None))(writer)
    stored = {}
    for name, array in gguf_tensors(hf_model, permute=arch == "llama").items():
        kind = (overrides or {}).get(name, weight_type if array.ndim == 2 else "F32")
        qtype = QTYPES[kind]
        if kind == "F32":
            data = array.astype(np.float32)
            writer.add_tensor(name, data)
        elif kind == "Q4_K":  # gguf-py cannot quantize it; random bytes of the right size suffice
            size = gguf.quants.quant_shape_to_byte_shape(array.shape, qtype)
            data = np.random.default_rng(0).integers(0, 256, size=size, dtype=np.uint8)
            writer.add_tensor(name, data, raw_dtype=qtype)
        else:
            data = gguf.quants.quantize(array, qtype)
            writer.add_tensor(name, data, raw_dtype=qtype)
        stored[name] = None if kind == "Q4_K" else np.asarray(gguf.quants.dequantize(data, qtype), np.float32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return stored
