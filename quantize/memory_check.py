"""Measure peak memory of `edgekit quantize` on a synthetic checkpoint of about 1B parameters.

    python -m edgekit.quantize.memory_check [--layers 22] [--format ek_t2]

Writes a sharded HF llama checkpoint of random f16 weights at TinyLlama-1.1B's shapes (dim 2048,
hidden 5632, 32 heads, 4 KV heads, vocab 32000) to a temporary folder one layer at a time, runs the
quantizer on it in a child process and reports the child's peak resident memory (ru_maxrss) beside
the size of the packed output. Random weights are fine here: only memory is measured, never quality.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM, HIDDEN, HEADS, KV_HEADS, VOCAB = 2048, 5632, 32, 4, 32000


def write_checkpoint(folder: Path, layers: int, seed: int = 0) -> int:
    """Write one safetensors shard per layer (plus one for embeddings); returns the parameter count."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    rand = lambda *shape: (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)
    kv = DIM // HEADS * KV_HEADS
    weight_map, params = {}, 0
    shards = [("model.embed_tokens.weight", (VOCAB, DIM)), ("model.norm.weight", (DIM,))]
    for index in range(-1, layers):
        if index < 0:
            tensors = {name: rand(*shape) if len(shape) == 2 else np.ones(shape, np.float16) for name, shape in shards}
        else:
            p = f"model.layers.{index}."
            tensors = {p + "self_attn.q_proj.weight": rand(DIM, DIM), p + "self_attn.k_proj.weight": rand(kv, DIM),
                       p + "self_attn.v_proj.weight": rand(kv, DIM), p + "self_attn.o_proj.weight": rand(DIM, DIM),
                       p + "mlp.gate_proj.weight": rand(HIDDEN, DIM), p + "mlp.up_proj.weight": rand(HIDDEN, DIM),
                       p + "mlp.down_proj.weight": rand(DIM, HIDDEN),
                       p + "input_layernorm.weight": np.ones(DIM, np.float16),
                       p + "post_attention_layernorm.weight": np.ones(DIM, np.float16)}
        shard = f"model-{index + 1:05d}.safetensors"
        save_file(tensors, folder / shard)
        weight_map.update({name: shard for name in tensors})
        params += sum(t.size for t in tensors.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = {"model_type": "llama", "hidden_size": DIM, "intermediate_size": HIDDEN, "num_hidden_layers": layers,
              "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB,
              "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
              "bos_token_id": 1, "eos_token_id": 2}
    (folder / "config.json").write_text(json.dumps(config))
    _write_tokenizer(folder)
    return params


def _write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))


def measure(source: Path, output: Path, fmt: str) -> dict:
    """Quantize in a child process; return its peak RSS and wall time."""
    method = "absmean" if fmt.startswith("ek_t") else "rtn"
    code = ("import resource, sys; from edgekit.quantize.config import QuantizeConfig; "
            "from edgekit.quantize.workflow import quantize_checkpoint; "
            f"quantize_checkpoint(sys.argv[1], sys.argv[2], QuantizeConfig(format={fmt!r}, method={method!r})); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, str(source), str(output)], capture_output=True, text=True,
                            check=True)
    return {"peak_rss_bytes": int(result.stdout.split()[-1]) * 1024, "seconds": time.perf_counter() - start,
            "output_bytes": output.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=22, help="22 gives 1.1B parameters")
    parser.add_argument("--format", default="ek_t2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "synthetic"
        folder.mkdir()
        params = write_checkpoint(folder, args.layers)
        report = measure(folder, Path(tmp) / "out.edgekit", args.format)
    report.update(parameters=params, format=args.format,
                  peak_beyond_output_bytes=report["peak_rss_bytes"] - report["output_bytes"])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
