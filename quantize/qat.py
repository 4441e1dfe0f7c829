"""Quantization-aware training (QAT) with distillation from the float model.

    config = QATConfig(format="ek_t2", steps=300, act_quant="int8_absmax")
    packed = quantize_qat(model, "train.txt", config, checkpoint_dir="qat-run")   # -> packed Model

The student starts as a copy of the float teacher and keeps float32 latent weights; every forward rounds
them as the packer will (`qat_model.py`: absmean ternary per tensor, or intN RTN per group, optional int8
activations) with straight-through gradients. The loss is KL(teacher || student) over the vocabulary at
every position of token windows from user text (BitDistill / LLM-QAT style logit distillation), optionally
mixed with next-token cross-entropy; AdamW with warmup and a cosine or linear decay, gradient clipping.

Text is read as `evaluate.py` reads it: split at `<|endoftext|>`, stripped, empty documents dropped; the
documents from `first_document` on are BOS-prefixed and concatenated into one token stream, and each step
draws `batch_size` windows of `seq_len + 1` tokens at seeded random offsets (llama2.c's batching).

Training is resumable bit for bit: every `checkpoint_every` steps (and at the end) the student weights,
the optimizer state, the step, the data sampler's and torch's RNG states and the `QATConfig` are written
atomically to `checkpoint_dir/qat_checkpoint.pt`; `train_qat` with the same `checkpoint_dir` continues from
it and finishes with the same weights as an uninterrupted run.

Export packs the latent weights with `quantize_model` and `QATConfig.quantize_config()`, the same recipe
the student's fake quantizers were built from, so the packed trits are the trained ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgekit.errors import ConfigError, QuantizationError
from edgekit.fileio import atomic_path, read_utf8_text
from edgekit.formats import QuantizedTensor, get_format
from edgekit.model.config import ACT_QUANTS
from edgekit.model.model import Model
from edgekit.model.tokenizer import Tokenizer
from edgekit.quantize.config import MIN_CALIBRATION_TOKENS, JsonConfig, QuantizeConfig
from edgekit.quantize.evaluate import split_documents
from edgekit.quantize.pipeline import gptq_names, is_block_linear, quantize_model
from edgekit.quantize.qat_model import TorchLlama, build_torch_model, check_fake_quantizable, float_tensors

log = logging.getLogger(__name__)

QAT_CONFIG_VERSION = 1
CHECKPOINT_NAME = "qat_checkpoint.pt"
CHECKPOINT_KIND = "edgekit-qat-checkpoint"
SCHEDULES = ("cosine", "linear", "constant")
INITS = ("float", "gptq")
GRIDS = ("dynamic", "frozen", "learned")

Progress = Callable[[str, int, int], None]


@dataclass
class QATConfig(JsonConfig):
    """The whole recipe of one QAT run; stored in checkpoints and in the packed model's metadata.

    - `format`, `group_size`, `embedding_format`, `output_format`, `act_quant`: the packed model, as in
      `QuantizeConfig` (ternary formats use absmean per tensor, int formats symmetric RTN; `group_size`
      None takes the format's default, 32 for int2/3/4); the student fake-quantizes exactly these.
    - `steps`, `batch_size`, `seq_len`: training length and windows (`seq_len` at most the model context).
    - `lr`, `warmup_steps`, `schedule` ("cosine", "linear" or "constant"), `min_lr_ratio` (final lr / lr),
      `weight_decay` (matrices only), `beta1`, `beta2`, `grad_clip` (max global grad norm, 0 disables).
    - `ce_weight`: loss = (1 - ce_weight) * KL(teacher || student) + ce_weight * cross-entropy; with
      `temperature` T the KL term compares softmax(z / T) and is scaled by T^2 (Hinton et al. 2015).
    - `first_document`, `max_documents`: which documents of the text file are trained on; `append_eos` ends
      each document with the tokenizer's EOS (a model that should stop after one document).
    - `seed`: data order and torch RNG; `checkpoint_every` (0: only at the end), `log_every` (steps).
    - `scale_search`: the int grid of the block linears, as `QuantizeConfig.scale_search` ("mse": every
      step re-searches each group's float16 scale for the current latent weights, with the packer's code).
    - `init`: the student's starting block linears: "float" (the teacher's weights) or "gptq" (the
      dequantized weights of GPTQ act-order into the same format, grid and scale search, calibrated on at
      most `calib_tokens` tokens of the training documents; the Hessians see no evaluation text).
    - `grid`: how the block linears' int grids (float16 scales, zero points) evolve: "dynamic" refits them
      from the latent weights every step (RTN's rule, or the scale search); "frozen" keeps the initial
      student's grids (the searched or GPTQ ones) and trains only which code each weight takes; "learned"
      also trains the scales (LSQ gradient) at `scale_lr_ratio` times the weights' learning rate. The
      packed model stores the trained grids.
    - `awq`: before training, fold activation-aware per-channel scales (`awq.py`, calibrated on at most
      `calib_tokens` tokens of the training documents) into the teacher's norms and block linears; the
      folded teacher computes the same function, and the student starts from it (integer formats only).
    - `teacher_tokens`: append at least this many tokens of text sampled from the float teacher itself
      (temperature 1, BOS-prefixed sequences of at most `seq_len` tokens, ending where the teacher emits an
      EOS/BOS, seeded by `seed`) to the training stream, as LLM-QAT's data-free distillation does (Liu et
      al. 2023, arXiv:2305.17888): more distinct windows than the user text alone, on the teacher's own
      distribution. 0 trains on the user text only.
    """

    config_name = "QAT config"
    format: str = "ek_t2"
    group_size: int | None = None
    embedding_format: str = "f16"
    output_format: str = "ek_i8"
    act_quant: str = "none"
    steps: int = 200
    batch_size: int = 8
    seq_len: int = 128
    lr: float = 1e-3
    warmup_steps: int = 10
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    ce_weight: float = 0.0
    temperature: float = 1.0
    first_document: int = 0
    max_documents: int | None = None
    append_eos: bool = False
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    scale_search: str = "none"
    init: str = "float"
    calib_tokens: int = 8192
    grid: str = "dynamic"
    scale_lr_ratio: float = 0.1
    awq: bool = False
    teacher_tokens: int = 0
    version: int = QAT_CONFIG_VERSION

    def __post_init__(self) -> None:
        if self.version != QAT_CONFIG_VERSION:
            raise ConfigError(f"QAT config field 'version' is {self.version!r}; this edgekit reads version "
                              f"{QAT_CONFIG_VERSION}")
        self.validate_formats()
        self.validate_training()

    def validate_formats(self) -> None:
        for name in ("format", "embedding_format", "output_format"):
            try:
                get_format(getattr(self, name))
            except ConfigError as exc:
                raise ConfigError(f"QAT config field {name!r}: {exc}") from None
        if get_format(self.format).kind == "float":
            raise ConfigError(f"QAT config field 'format' must be a ternary or integer format, got {self.format!r}")
        if self.act_quant not in ACT_QUANTS:
            raise ConfigError(f"QAT config field 'act_quant' must be one of {ACT_QUANTS}, got {self.act_quant!r}")
        try:
            quantize_config = self.quantize_config()
        except ConfigError as exc:
            raise ConfigError(f"QAT config field 'group_size': {exc}") from None
        field = "QAT config field 'group_size'" if self.group_size is not None else "QAT config field 'format'"
        check_fake_quantizable(self.format, quantize_config.default_group_size(self.format), field)
        for name in ("embedding_format", "output_format"):
            fmt_name = getattr(self, name)
            check_fake_quantizable(fmt_name, quantize_config.default_group_size(fmt_name), f"QAT config field {name!r}")

    def validate_training(self) -> None:
        for name in ("steps", "batch_size", "seq_len"):
            check_number(name, getattr(self, name), integer=True, low=1)
        for name in ("warmup_steps", "first_document", "seed", "checkpoint_every", "log_every"):
            check_number(name, getattr(self, name), integer=True, low=0)
        if self.max_documents is not None:
            check_number("max_documents", self.max_documents, integer=True, low=1)
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("temperature", self.temperature, low=0, low_open=True)
        for name in ("min_lr_ratio", "ce_weight"):
            check_number(name, getattr(self, name), low=0, high=1)
        for name in ("beta1", "beta2"):
            check_number(name, getattr(self, name), low=0, high=1, high_open=True)
        for name in ("weight_decay", "grad_clip"):
            check_number(name, getattr(self, name), low=0)
        if not isinstance(self.append_eos, bool):
            raise ConfigError(f"QAT config field 'append_eos' must be true or false, got {self.append_eos!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"QAT config field 'schedule' must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.init not in INITS:
            raise ConfigError(f"QAT config field 'init' must be one of {INITS}, got {self.init!r}")
        if self.init == "gptq" and get_format(self.format).kind != "int":
            raise ConfigError(f"QAT config field 'init': 'gptq' initialises integer formats, not {self.format}",
                              fix="use init='float' for ternary QAT")
        check_number("calib_tokens", self.calib_tokens, integer=True, low=MIN_CALIBRATION_TOKENS)
        check_number("scale_lr_ratio", self.scale_lr_ratio, low=0)
        check_number("teacher_tokens", self.teacher_tokens, integer=True, low=0)
        if not isinstance(self.awq, bool):
            raise ConfigError(f"QAT config field 'awq' must be true or false, got {self.awq!r}")
        if self.awq and get_format(self.format).kind != "int":
            raise ConfigError(f"QAT config field 'awq': AWQ scales integer grids, not {self.format}'s",
                              fix="use awq=False for ternary QAT")
        if self.grid not in GRIDS:
            raise ConfigError(f"QAT config field 'grid' must be one of {GRIDS}, got {self.grid!r}")
        if self.grid != "dynamic" and get_format(self.format).kind != "int":
            raise ConfigError(f"QAT config field 'grid': {self.grid!r} grids are integer grids, not {self.format}'s",
                              fix="use grid='dynamic' for ternary QAT")

    def quantize_config(self) -> QuantizeConfig:
        """The `QuantizeConfig` that packs the trained student (and that the student fake-quantizes by)."""
        method = "absmean" if get_format(self.format).kind == "ternary" else "rtn"
        try:
            return QuantizeConfig(format=self.format, method=method, group_size=self.group_size,
                                  embedding_format=self.embedding_format, output_format=self.output_format,
                                  act_quant=self.act_quant, scale_search=self.scale_search)
        except ConfigError as exc:
            raise ConfigError(f"QAT config: {exc}", fix=exc.fix) from None

    def init_config(self, text_path: str | Path) -> QuantizeConfig:
        """The GPTQ recipe of `init="gptq"`: the packed formats of `quantize_config()`, act-order, calibrated
        on the training documents of `text_path`."""
        return dataclasses.replace(self.quantize_config(), method="gptq", act_order=True, calib_path=str(text_path),
                                   calib_first_document=self.first_document, calib_tokens=self.calib_tokens)



def check_number(name: str, value: Any, *, integer: bool = False, low: float | None = None,
                 high: float | None = None, low_open: bool = False, high_open: bool = False) -> None:
    """Raise `ConfigError` naming the QAT config field unless `value` is a number in the given range."""
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        limits = " and ".join(part for part in (lo, hi) if part)
        raise ConfigError(f"QAT config field {name!r} must be {'an integer' if integer else 'a number'} {limits}, "
                          f"got {value!r}")


# -- training text ---------------------------------------------------------------------------------------------

TEXT_FIX = "pass a UTF-8 text file (documents separated by <|endoftext|>)"


def token_stream(tokenizer: Tokenizer, text: str, first_document: int = 0, max_documents: int | None = None,
                 append_eos: bool = False) -> np.ndarray:
    """Documents `first_document` ... (at most `max_documents`), each BOS-prefixed (and EOS-terminated with
    `append_eos`), as one int64 stream."""
    docs = split_documents(text)[first_document:]
    docs = docs[:max_documents] if max_documents is not None else docs
    eos = [tokenizer.eos_id] if append_eos and tokenizer.eos_id is not None else []
    pieces = [np.asarray(tokenizer.encode(doc, add_bos=True) + eos, dtype=np.int64) for doc in docs]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def check_stream(stream: np.ndarray, seq_len: int, text_path: str | Path, first_document: int) -> None:
    """Raise `QuantizationError` saying how many tokens are needed when the stream has no full window."""
    needed = seq_len + 1
    if stream.size < needed:
        raise QuantizationError(
            f"QAT needs at least {needed} tokens of training text (one window of seq_len={seq_len} tokens and "
            f"the token after it) but the documents from #{first_document} on give {stream.size}", path=text_path,
            fix="give more text, lower seq_len, or lower first_document")


def sample_batch(stream: np.ndarray, rng: np.random.Generator, batch_size: int, seq_len: int) -> torch.Tensor:
    """`batch_size` windows of `seq_len + 1` tokens at random offsets: int64 [B, seq_len + 1]."""
    starts = rng.integers(0, stream.size - seq_len, size=batch_size)
    return torch.from_numpy(np.stack([stream[s:s + seq_len + 1] for s in starts]))


def load_training_tokens(model: Model, text_path: str | Path, config: QATConfig) -> np.ndarray:
    """The training token stream of `config`, checked against the model's context and the window size."""
    if config.seq_len > model.config.max_seq_len:
        raise ConfigError(f"QAT config field 'seq_len' ({config.seq_len}) exceeds the model's context of "
                          f"{model.config.max_seq_len} tokens")
    stream = token_stream(model.tokenizer, read_utf8_text(text_path, "training text file", fix=TEXT_FIX), config.first_document, config.max_documents,
                          config.append_eos)
    check_stream(stream, config.seq_len, text_path, config.first_document)
    log.info("QAT text %s: %d tokens from document %d on", text_path, stream.size, config.first_document)
    return stream


# -- optimisation ----------------------------------------------------------------------------------------------

def learning_rate(step: int, steps: int, lr: float, warmup_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """lr of step `step` (0-based): linear warmup over `warmup_steps`, then cosine/linear decay to
    `lr * min_lr_ratio` at the last step (or constant)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant" or steps <= warmup_steps + 1:
        return lr
    progress = (step - warmup_steps) / (steps - warmup_steps - 1)
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * shape)


def make_optimizer(net: TorchLlama, lr: float, weight_decay: float, betas: tuple[float, float],
                   scale_lr_ratio: float = 1.0) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norm weights and biases are not decayed); trained grid
    scales form a third group, undecayed, stepping at `scale_lr_ratio` times the lr (`lr_scale`)."""
    params = [p for p in net.weights.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    plain = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    scales = [p for p in net.grid_scales.parameters() if p.requires_grad]
    if scales:
        groups.append({"params": scales, "weight_decay": 0.0, "lr_scale": scale_lr_ratio})
    return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=False)


def optimizer_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, lr: float,
                   grad_clip: float) -> None:
    """Backward, clip the global gradient norm (0: no clipping), set the lr and take one step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip, foreach=False)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer.step()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, targets: torch.Tensor,
                      config: QATConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, {"kl", "ce"}): (1 - w) * T^2 * KL(teacher_T || student_T) + w * CE, mean over positions."""
    terms: dict[str, float] = {}
    loss = torch.zeros(())
    if config.ce_weight < 1:
        t = config.temperature
        logp_s = F.log_softmax(student_logits / t, dim=-1)
        logp_t = F.log_softmax(teacher_logits / t, dim=-1)
        kl = (logp_t.exp() * (logp_t - logp_s)).sum(dim=-1).mean() * (t * t)
        loss = loss + (1 - config.ce_weight) * kl
        terms["kl"] = float(kl.detach())
    if config.ce_weight > 0:
        ce = F.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]), targets.reshape(-1))
        loss = loss + config.ce_weight * ce
        terms["ce"] = float(ce.detach())
    return loss, terms


# -- checkpoints -----------------------------------------------------------------------------------------------

@dataclass
class TrainingState:
    """What a run carries from step to step besides the weights and the optimizer."""

    step: int
    rng: np.random.Generator


def model_fingerprint(model: Model) -> str:
    """sha256 over the teacher's config and float weights: a checkpoint resumes only against the same teacher."""
    digest = hashlib.sha256(model.config.to_json().encode())
    for name, array in sorted(float_tensors(model)[1].items()):
        digest.update(name.encode() + b"\0" + np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def save_checkpoint(path: Path, net: TorchLlama, optimizer: torch.optim.Optimizer, state: TrainingState,
                    config: QATConfig, fingerprint: str) -> None:
    """Write the checkpoint to a temporary file beside `path`, fsync it and rename it into place."""
    payload = {"kind": CHECKPOINT_KIND, "config": config.to_dict(), "teacher": fingerprint, "step": state.step,
               "student": net.state_dict(), "optimizer": optimizer.state_dict(),
               "rng": {"numpy": json.dumps(state.rng.bit_generator.state), "torch": torch.get_rng_state()}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    log.info("QAT checkpoint at step %d written to %s", state.step, path)


def read_checkpoint(path: Path, config: QATConfig, fingerprint: str) -> dict:
    """Load a checkpoint and check that it belongs to this config and this teacher."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip or torch errors, depending on the damage
        raise QuantizationError(f"QAT checkpoint is unreadable ({type(exc).__name__}: {exc})", path=path,
                                fix="delete it to start over") from None
    if not isinstance(payload, dict) or payload.get("kind") != CHECKPOINT_KIND:
        raise QuantizationError("not an edgekit QAT checkpoint", path=path, fix="use another checkpoint_dir")
    saved = payload["config"]
    changed = sorted(k for k in set(saved) | set(config.to_dict()) if saved.get(k) != config.to_dict().get(k))
    if changed:
        raise ConfigError(f"the QAT checkpoint was written with a different config (fields {changed})", path=path,
                          fix="resume with the same QATConfig, or use a new checkpoint_dir")
    if payload["teacher"] != fingerprint:
        raise ConfigError("the QAT checkpoint was trained from a different teacher model", path=path,
                          fix="resume with the same source model, or use a new checkpoint_dir")
    return payload


def restore_checkpoint(payload: dict, net: TorchLlama, optimizer: torch.optim.Optimizer) -> TrainingState:
    """Put the saved weights, optimizer state and RNG states back; return the saved step and sampler."""
    net.load_state_dict(payload["student"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng"]["torch"])
    rng = np.random.default_rng()
    rng.bit_generator.state = json.loads(payload["rng"]["numpy"])
    return TrainingState(step=int(payload["step"]), rng=rng)


# -- the run ---------------------------------------------------------------------------------------------------

def train_step(student: TorchLlama, teacher: TorchLlama, optimizer: torch.optim.Optimizer, batch: torch.Tensor,
               lr: float, config: QATConfig) -> dict[str, float]:
    """One distillation step on a batch [B, T + 1]; returns the loss terms."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    teacher_logits = None
    if config.ce_weight < 1:
        with torch.no_grad():
            teacher_logits = teacher(inputs)
    loss, terms = distillation_loss(student(inputs), teacher_logits, targets, config)
    optimizer_step(student, optimizer, loss, lr, config.grad_clip)
    return {"loss": float(loss.detach()), **terms, "lr": lr}


def run_steps(student: TorchLlama, teacher: TorchLlama, optimizer: torch.optim.Optimizer, stream: np.ndarray,
              state: TrainingState, config: QATConfig, save: Callable[[], None] | None,
              progress: Progress | None) -> None:
    """Train from `state.step` to `config.steps`, checkpointing through `save` (before `progress` is told)."""
    while state.step < config.steps:
        lr = learning_rate(state.step, config.steps, config.lr, config.warmup_steps, config.schedule,
                           config.min_lr_ratio)
        batch = sample_batch(stream, state.rng, config.batch_size, config.seq_len)
        metrics = train_step(student, teacher, optimizer, batch, lr, config)
        state.step += 1
        done = state.step == config.steps
        if save is not None and (done or (config.checkpoint_every and state.step % config.checkpoint_every == 0)):
            save()
        text = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        if config.log_every and (state.step % config.log_every == 0 or done):
            log.info("QAT step %d/%d: %s", state.step, config.steps, text)
        if progress is not None:
            progress(f"QAT {text}", state.step, config.steps)


def train_qat(teacher: Model, text_path: str | Path, config: QATConfig, checkpoint_dir: str | Path | None = None,
              progress: Progress | None = None) -> Model:
    """Distil `teacher` into a fake-quantized student on the text in `text_path`; return the student's float
    latent weights as a `Model` (pack it with `export_student`, or call `quantize_qat`).

    With `checkpoint_dir` a checkpoint is written every `config.checkpoint_every` steps and at the end, and
    an existing one (same config, same teacher) is resumed. `progress(description, step, steps)` is called
    after every step.
    """
    stream = load_training_tokens(teacher, text_path, config)
    if config.teacher_tokens:
        stream = np.concatenate([stream, teacher_text(teacher, config.teacher_tokens, config.seq_len, config.seed)])
    if config.awq:
        teacher = fold_awq_scales(teacher, text_path, config)
    torch.manual_seed(config.seed)
    teacher_net = build_torch_model(teacher, trainable=False)
    start, grids = initial_student(teacher, text_path, config)
    student = build_torch_model(start, config.quantize_config(), grids=grids, learn_grids=config.grid == "learned")
    optimizer = make_optimizer(student, config.lr, config.weight_decay, (config.beta1, config.beta2),
                               config.scale_lr_ratio)
    state = TrainingState(step=0, rng=np.random.default_rng(config.seed))
    save = None
    if checkpoint_dir is not None:
        path, fingerprint = Path(checkpoint_dir) / CHECKPOINT_NAME, model_fingerprint(teacher)
        if path.exists():
            state = restore_checkpoint(read_checkpoint(path, config, fingerprint), student, optimizer)
            log.info("QAT resumed from %s at step %d", path, state.step)

        def save() -> None:
            save_checkpoint(path, student, optimizer, state, config, fingerprint)
    run_steps(student, teacher_net, optimizer, stream, state, config, save, progress)
    return latent_model(teacher, student, config)


def teacher_text(teacher: Model, tokens: int, seq_len: int, seed: int, batch: int = 256) -> np.ndarray:
    """At least `tokens` tokens sampled from `teacher` (its float torch mirror, temperature 1, `batch` sequences
    at a time with a KV cache, torch's generator seeded by `seed`): BOS-prefixed sequences of at most `seq_len`
    tokens, each cut before the first EOS/BOS the teacher samples after its BOS (a story's end), as one int64
    stream."""
    bos = teacher.tokenizer.bos_id
    if bos is None:
        raise ConfigError("QAT config field 'teacher_tokens' needs a tokenizer with a BOS token to start sampling "
                          "from", fix="set teacher_tokens=0 for this model")
    stops = torch.tensor(sorted({bos, *teacher.tokenizer.eos_ids}))
    net = build_torch_model(teacher, trainable=False)
    generator = torch.Generator().manual_seed(seed)
    pieces, total = [], 0
    with torch.no_grad():
        while total < tokens:
            cache: dict = {}
            sequence = [torch.full((batch, 1), bos, dtype=torch.int64)]
            for _ in range(seq_len - 1):
                probs = torch.softmax(net(sequence[-1], cache)[:, -1].double(), dim=-1)
                sequence.append(torch.multinomial(probs, 1, generator=generator))
            rows = torch.cat(sequence, dim=1)
            ended = torch.isin(rows[:, 1:], stops)
            lengths = torch.where(ended.any(dim=1), ended.int().argmax(dim=1) + 1, torch.tensor(seq_len))
            for row, length in zip(rows.numpy(), lengths.tolist()):
                if total < tokens:
                    pieces.append(row[:length])
                    total += length
    log.info("QAT teacher text: %d tokens in %d sampled sequences", total, len(pieces))
    return np.concatenate(pieces).astype(np.int64)


def fold_awq_scales(teacher: Model, text_path: str | Path, config: QATConfig) -> Model:
    """The teacher with AWQ scales folded in (the same function), calibrated on the training documents."""
    from edgekit.quantize.awq import awq_fold
    from edgekit.quantize.calibration import calibration_sequences, check_calibration_tokens, read_calibration_text

    sequences = calibration_sequences(teacher.tokenizer, read_calibration_text(text_path),
                                      seq_len=teacher.config.max_seq_len, max_tokens=config.calib_tokens,
                                      first_document=config.first_document)
    check_calibration_tokens(sequences, teacher.config, config.calib_tokens)
    group = config.quantize_config().default_group_size(config.format)
    folded, alphas = awq_fold(teacher, sequences, config.format, group, config.scale_search)
    log.info("QAT teacher with AWQ scales folded in (alphas %s)", alphas)
    return folded


def initial_student(teacher: Model, text_path: str | Path, config: QATConfig) -> tuple[Model, dict]:
    """(the model the student starts from, the packed block linears whose grids it keeps or {} for dynamic
    grids): the teacher, or (`init="gptq"`) the teacher with its GPTQ block linears replaced by their
    dequantized float32 weights (norms and embeddings stay the teacher's). Frozen and learned grids start
    as the GPTQ grids, or as those `quantize_config()` packs the teacher with (RTN or the scale search)."""
    quantize_config = config.quantize_config()
    names = [n for n in teacher.tensors if is_block_linear(n) and quantize_config.format_for(n) == config.format]
    if config.init == "float":
        start = teacher
        packed = {} if config.grid == "dynamic" else quantize_model(teacher, quantize_config).tensors
    else:
        gptq_config = config.init_config(text_path)
        packed = quantize_model(teacher, gptq_config).tensors
        tensors = dict(teacher.tensors)
        for name in gptq_names(teacher, gptq_config):
            tensors[name] = packed[name].dequantize()
            tensors.pop(name + ".scale", None)
        log.info("QAT student initialised from GPTQ (%s)", gptq_config.format)
        start = dataclasses.replace(teacher, tensors=tensors)
    grids = {} if config.grid == "dynamic" else {name: packed[name] for name in names}
    return start, grids


def latent_model(teacher: Model, student: TorchLlama, config: QATConfig) -> Model:
    """The student's float32 latent weights as a `Model` with the teacher's tokenizer and the QAT recipe."""
    metadata = {**teacher.metadata, "qat_config": config.to_json()}
    tensors = student.float_tensors()
    for name in student.grid_names:  # frozen or learned grids: the block linears are packed on them
        tensors[name] = student.pack_on_grid(name)
    return Model(config=student.config, tensors=tensors, tokenizer=teacher.tokenizer,
                 source=teacher.source, source_format=teacher.source_format, metadata=metadata)


def export_student(latent: Model, config: QATConfig) -> Model:
    """Pack a QAT student's latent weights with the registered quantizers of `config`'s formats; tensors
    the student already packed on its trained grids are kept as they are."""
    packed = quantize_model(latent, config.quantize_config())
    for name, tensor in latent.tensors.items():
        if isinstance(tensor, QuantizedTensor):
            packed.tensors[name] = tensor
    return packed


def quantize_qat(teacher: Model, text_path: str | Path, config: QATConfig, checkpoint_dir: str | Path | None = None,
                 progress: Progress | None = None) -> Model:
    """`train_qat`, then `export_student`: the packed model (its metadata records the QAT config)."""
    return export_student(train_qat(teacher, text_path, config, checkpoint_dir, progress), config)
