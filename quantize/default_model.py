"""edgekit's built-in default model: a tiny ternary story-teller that edgekit trains itself, from nothing.

    python -m edgekit.quantize.default_model --out edgekit/data/default.edgekit        (--quick: a smoke build)

The build uses no third-party text or weights:

1. text: `corpus.py` generates children's stories from a seed (training stories 0 .. n-1; held-out
   stories from index `heldout_start`, which training never reads);
2. tokenizer: sentencepiece BPE trained on the first training stories (byte fallback, so any text encodes);
3. teacher: a small float Llama (GQA, SwiGLU, tied embeddings) trained from random weights in torch;
4. student: ternary QAT (BitNet b1.58 absmean weights, int8 absmax activations) distilled from the teacher
   (`qat.py`), packed to ek_t2 with f16 embeddings;
5. quality, measured on the held-out stories with the numpy reference back end: teacher and student
   perplexity, KL divergence both ways, top-1 agreement; bits per weight. The recipe, the corpus seed and
   generator version and these numbers go into the .edgekit metadata (key "default_model").

Same command, same machine, same thread count: the same bytes (no clock or path goes into the file).
Loading and running the result needs numpy only: torch is imported inside the build functions.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.errors import ModelNotFoundError
from edgekit.formats import QuantizedTensor
from edgekit.model import load
from edgekit.model.config import ModelConfig
from edgekit.model.loaders.edgekit_file import save_model
from edgekit.model.model import LINEAR_NAMES, Model, expected_shapes
from edgekit.model.tokenizer import SentencePieceTokenizer
from edgekit.quantize.corpus import GENERATOR_NAME, GENERATOR_VERSION, generate_corpus, generate_stories

log = logging.getLogger(__name__)

DEFAULT_FILE = "default.edgekit"
METADATA_KEY = "default_model"
SOURCE_NAME = "edgekit-default-model"

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DefaultModelConfig:
    """The build recipe (`quick()` is a seconds-long smoke build of the same pipeline)."""

    corpus_seed: int = 1
    train_stories: int = 30000
    tokenizer_stories: int = 5000
    heldout_start: int = 1_000_000
    heldout_stories: int = 100
    vocab_size: int = 512
    dim: int = 128
    hidden_dim: int = 384
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    max_seq_len: int = 256
    init_seed: int = 0
    teacher_steps: int = 500
    teacher_batch_size: int = 16
    teacher_seq_len: int = 256
    teacher_lr: float = 3e-3
    teacher_warmup_steps: int = 50
    teacher_weight_decay: float = 0.1
    qat_steps: int = 300
    qat_batch_size: int = 16
    qat_seq_len: int = 256
    qat_lr: float = 2e-3
    qat_warmup_steps: int = 20
    act_quant: str = "int8_absmax"
    weight_format: str = "ek_t2"
    embedding_format: str = "f16"
    threads: int = 2

    @classmethod
    def quick(cls) -> "DefaultModelConfig":
        """A tiny configuration that runs the whole pipeline in seconds (for tests)."""
        return cls(train_stories=300, tokenizer_stories=300, heldout_stories=5, dim=32, hidden_dim=64, n_layers=1,
                   n_heads=2, n_kv_heads=1, max_seq_len=64, teacher_steps=4, teacher_batch_size=2,
                   teacher_seq_len=64, qat_steps=3, qat_batch_size=2, qat_seq_len=64, teacher_warmup_steps=1,
                   qat_warmup_steps=1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_config(self) -> ModelConfig:
        return ModelConfig(architecture="llama", dim=self.dim, hidden_dim=self.hidden_dim, n_layers=self.n_layers,
                           n_heads=self.n_heads, n_kv_heads=self.n_kv_heads, vocab_size=self.vocab_size,
                           max_seq_len=self.max_seq_len, tie_embeddings=True)

    def qat_config(self):
        """The `QATConfig` of the student (imports torch through `qat`)."""
        from edgekit.quantize.qat import QATConfig

        return QATConfig(format=self.weight_format, embedding_format=self.embedding_format, act_quant=self.act_quant,
                         steps=self.qat_steps, batch_size=self.qat_batch_size, seq_len=self.qat_seq_len, lr=self.qat_lr,
                         warmup_steps=self.qat_warmup_steps, append_eos=True, seed=self.init_seed + 1, checkpoint_every=0,
                         log_every=max(self.qat_steps // 10, 1))


# -- using the shipped model (no torch) --------------------------------------------------------------------------

def default_model_path() -> Path:
    """Where the shipped default model lives (package data of `edgekit.data`)."""
    return Path(str(resources.files("edgekit.data").joinpath(DEFAULT_FILE)))


def load_default_model() -> Model:
    """The built-in default model (packed ternary), loaded with the numpy-only loader."""
    path = default_model_path()
    if not path.is_file():
        raise ModelNotFoundError("the built-in default model is missing", path=path,
                                 fix=f"build it: python -m edgekit.quantize.default_model --out {path}")
    return load(path)


def default_model_info(model: Model) -> dict[str, Any]:
    """The build record stored in a default model's metadata: corpus, quality and bits."""
    return json.loads(model.metadata[METADATA_KEY])


# -- build steps -----------------------------------------------------------------------------------------------

def train_tokenizer(stories: list[str], vocab_size: int) -> SentencePieceTokenizer:
    """Sentencepiece BPE on `stories` (one sentence each): byte fallback, <unk>=0, <s>=1, </s>=2, one thread
    and no sampling or shuffling, so the same stories give the same model bytes."""
    import sentencepiece

    buffer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(stories), model_writer=buffer, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
        normalization_rule_name="identity", max_sentence_length=1 << 16, input_sentence_size=0,
        shuffle_input_sentence=False, minloglevel=2)
    return SentencePieceTokenizer(None, model_proto=buffer.getvalue())


def init_tensors(config: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """Random float32 weights: N(0, 0.02) matrices, the residual writers (wo, w2) scaled by 1/sqrt(2 L)
    (GPT-2's init), norm weights 1."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in expected_shapes(config).items():
        if len(shape) == 1:
            tensors[name] = np.ones(shape, np.float32)
            continue
        std = 0.02 / (np.sqrt(2 * config.n_layers) if name.rsplit(".", 1)[-1] in ("wo", "w2") else 1.0)
        tensors[name] = (rng.standard_normal(shape) * std).astype(np.float32)
    return tensors


def train_teacher(model: Model, stream: np.ndarray, cfg: DefaultModelConfig, progress: Progress | None) -> Model:
    """Train `model` (float) from its current weights with next-token cross-entropy on `stream`."""
    import torch
    import torch.nn.functional as F

    from edgekit.quantize.qat import learning_rate, make_optimizer, optimizer_step, sample_batch
    from edgekit.quantize.qat_model import build_torch_model

    torch.manual_seed(cfg.init_seed)
    net = build_torch_model(model)
    optimizer = make_optimizer(net, cfg.teacher_lr, cfg.teacher_weight_decay, (0.9, 0.95))
    rng = np.random.default_rng(cfg.init_seed)
    for step in range(cfg.teacher_steps):
        lr = learning_rate(step, cfg.teacher_steps, cfg.teacher_lr, cfg.teacher_warmup_steps, "cosine", 0.1)
        batch = sample_batch(stream, rng, cfg.teacher_batch_size, cfg.teacher_seq_len)
        logits = net(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer_step(net, optimizer, loss, lr, grad_clip=1.0)
        value = float(loss.detach())
        if (step + 1) % max(cfg.teacher_steps // 10, 1) == 0:
            log.info("teacher step %d/%d: loss %.4f lr %.3g", step + 1, cfg.teacher_steps, value, lr)
        if progress is not None:
            progress(f"teacher loss {value:.4f}", step + 1, cfg.teacher_steps)
    return dataclasses.replace(model, tensors=net.float_tensors())


def measure_quality(teacher: Model, student: Model, heldout_path: Path) -> dict[str, float]:
    """Perplexity of both, KL both ways and top-1 agreement on the held-out stories (numpy reference)."""
    from edgekit.quantize.evaluate import compare_models, evaluate_perplexity
    from edgekit.runtime import open_backend

    context = teacher.config.max_seq_len
    teacher_ppl = evaluate_perplexity(open_backend(teacher), heldout_path, context)
    student_ppl = evaluate_perplexity(open_backend(student), heldout_path, context)
    forward = compare_models(open_backend(teacher), open_backend(student), heldout_path, context)
    backward = compare_models(open_backend(student), open_backend(teacher), heldout_path, context)
    return {"tokens": student_ppl.tokens, "documents": student_ppl.documents, "context_length": context,
            "teacher_perplexity": teacher_ppl.perplexity, "student_perplexity": student_ppl.perplexity,
            "student_mean_nll": student_ppl.mean_nll, "mean_kl_teacher_student": forward.mean_kl,
            "mean_kl_student_teacher": backward.mean_kl, "top1_agreement": forward.top1_agreement}


def bits_summary(model: Model) -> dict[str, float]:
    """Bits per weight of the block linears, and of all stored tensors over all parameters."""
    linear_bytes = linear_count = 0
    for name, tensor in model.tensors.items():
        if isinstance(tensor, QuantizedTensor) and name.rsplit(".", 1)[-1] in LINEAR_NAMES:
            linear_bytes += tensor.nbytes
            linear_count += tensor.rows * tensor.cols
    return {"linear_bits_per_weight": 8.0 * linear_bytes / linear_count,
            "model_bits_per_weight": 8.0 * model.nbytes / model.n_params,
            "parameters": model.n_params, "tensor_bytes": model.nbytes}


@contextlib.contextmanager
def torch_threads(threads: int):
    """Run torch with `threads` intra-op threads (results depend on it), restoring the old setting after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def corpus_record(cfg: DefaultModelConfig) -> dict[str, Any]:
    return {"generator": GENERATOR_NAME, "version": GENERATOR_VERSION, "seed": cfg.corpus_seed,
            "train_stories": [0, cfg.train_stories], "tokenizer_stories": [0, cfg.tokenizer_stories],
            "heldout_stories": [cfg.heldout_start, cfg.heldout_stories]}


def heldout_text(info: dict[str, Any]) -> str:
    """The held-out stories a default model's metadata names, generated afresh from the recorded seed."""
    corpus = info["corpus"]
    start, count = corpus["heldout_stories"]
    return generate_corpus(corpus["seed"], start, count)


def build_default_model(out: str | Path, cfg: DefaultModelConfig = DefaultModelConfig(),
                        progress: Progress | None = None) -> Model:
    """Run the whole recipe and write the packed model to `out`; returns it."""
    from edgekit.quantize.qat import quantize_qat, token_stream

    with torch_threads(cfg.threads), tempfile.TemporaryDirectory(prefix="edgekit-default-") as tmp:
        train_text, heldout_path = Path(tmp) / "train.txt", Path(tmp) / "heldout.txt"
        train_text.write_text(generate_corpus(cfg.corpus_seed, 0, cfg.train_stories), encoding="utf-8")
        heldout_path.write_text(generate_corpus(cfg.corpus_seed, cfg.heldout_start, cfg.heldout_stories),
                                encoding="utf-8")
        tokenizer = train_tokenizer(generate_stories(cfg.corpus_seed, 0, cfg.tokenizer_stories), cfg.vocab_size)
        config = cfg.model_config()
        teacher = Model(config=config, tensors=init_tensors(config, cfg.init_seed), tokenizer=tokenizer,
                        source=Path(SOURCE_NAME), source_format="edgekit-default-model")
        stream = token_stream(tokenizer, train_text.read_text(encoding="utf-8"), append_eos=True)
        log.info("corpus: %d training stories, %d tokens", cfg.train_stories, stream.size)
        teacher = train_teacher(teacher, stream, cfg, progress)
        qat = cfg.qat_config()
        student = quantize_qat(teacher, train_text, qat, progress=progress)
        quality = measure_quality(teacher, student, heldout_path)
    info = {"corpus": corpus_record(cfg), "quality": quality, "bits": bits_summary(student)}
    student = dataclasses.replace(student, metadata={**student.metadata, METADATA_KEY: json.dumps(info)})
    recipe = {"build": cfg.to_dict(), "qat": qat.to_dict(), "quantize": qat.quantize_config().to_dict(),
              "corpus": info["corpus"]}
    Path(save_model(student, out, recipe=recipe)).chmod(0o644)   # package data: readable by everyone
    return student


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgekit.quantize.default_model", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help=f"output .edgekit file (default: {DEFAULT_FILE} "
                        "in the edgekit.data package)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke build of the same pipeline (seconds)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = args.out or default_model_path()
    start = time.perf_counter()
    model = build_default_model(out, DefaultModelConfig.quick() if args.quick else DefaultModelConfig())
    info = default_model_info(model)
    print(json.dumps({"out": str(out), "bytes": out.stat().st_size, "seconds": round(time.perf_counter() - start, 1),
                      **info["quality"], **info["bits"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
