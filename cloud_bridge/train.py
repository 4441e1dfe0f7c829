"""Train early-exit heads by distillation from the full model's logits, the backbone frozen.

Because the backbone is frozen, the residual stream at each exit and the final normed hidden state are
fixed: they are computed once with the same `LayerStack` (same kernels) the edge runs, then only the
heads train, in torch: student logits = (rms_norm(h_l) * g) @ W^T, teacher logits = h_final @ W_out^T,
loss = KL(softmax(teacher) || softmax(student)) averaged over tokens (CE-CoLLM trains its exits the
same way, against the final layer's distribution). g and W start as the final norm and output head.

The report gives, on held-out tokens, for each exit and threshold: coverage (share of tokens whose
max-softmax confidence reaches the threshold) and top-1 agreement with the full model on those tokens,
plus the cascade the edge actually runs (first exit that is confident answers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from edgekit.errors import ConfigError, GenerationError
from edgekit.formats import QuantizedTensor
from edgekit.model.lazy import materialize
from edgekit.model.model import Model
from edgekit.quantize.evaluate import split_documents

from edgekit.cloud_bridge.exits import ExitHead, SplitPlan, confidence
from edgekit.cloud_bridge.layers import LayerStack

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass
class ExitTrainConfig:
    """How the exits are trained; `max_tokens` bounds the text read (tokens, BOS per document)."""

    exits: tuple[int, ...]
    max_tokens: int = 12288
    seq_len: int = 256
    steps: int = 300
    lr: float = 3e-3
    batch_tokens: int = 1024
    holdout: float = 0.2
    seed: int = 0
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    head_format: str = "ek_i8"
    head_group_size: int = 32

    def __post_init__(self) -> None:
        if self.max_tokens < 64 or self.seq_len < 2 or self.steps < 0 or self.batch_tokens < 1:
            raise ConfigError(f"bad exit-training sizes: max_tokens={self.max_tokens}, seq_len={self.seq_len}, "
                              f"steps={self.steps}, batch_tokens={self.batch_tokens}",
                              fix="use max_tokens >= 64, seq_len >= 2, steps >= 0")
        if not 0.0 < self.holdout < 1.0 or not self.lr > 0:
            raise ConfigError(f"holdout {self.holdout} must be in (0, 1) and lr {self.lr} positive")
        if any(not 0.0 < t <= 1.0 for t in self.thresholds):
            raise ConfigError(f"thresholds {list(self.thresholds)} must lie in (0, 1]")


@dataclass
class Features:
    """Frozen-backbone activations: residual stream per exit {layer: [N, dim]}, final normed hidden [N, dim]."""

    at_exit: dict[int, np.ndarray]
    final: np.ndarray
    teacher_top1: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def take(self, index: np.ndarray) -> "Features":
        return Features({l: h[index] for l, h in self.at_exit.items()}, self.final[index], self.teacher_top1[index])


def text_chunks(model: Model, text: str, config: ExitTrainConfig) -> list[list[int]]:
    """Documents (split at <|endoftext|>) encoded with BOS and cut into chunks of at most seq_len tokens."""
    seq_len = min(config.seq_len, model.config.max_seq_len)
    chunks, total = [], 0
    for doc in split_documents(text):
        ids = model.tokenizer.encode(doc, add_bos=True)
        for i in range(0, len(ids), seq_len):
            piece = ids[i:i + seq_len][: config.max_tokens - total]
            if len(piece) >= 2:
                chunks.append(piece)
                total += len(piece)
        if total >= config.max_tokens:
            break
    if total < 64:
        raise GenerationError(f"the training text gives only {total} tokens; exits need at least 64",
                              fix="pass a longer --text file")
    return chunks


def collect_features(stack: LayerStack, chunks: list[list[int]], exits: tuple[int, ...]) -> Features:
    """Run the frozen model over every chunk, keeping the residual stream at each exit."""
    at_exit: dict[int, list[np.ndarray]] = {l: [] for l in exits}
    finals, top1 = [], []
    for chunk in chunks:
        cache = stack.new_cache(len(chunk))
        positions = np.arange(len(chunk))
        h, done = stack.embed(chunk), 0
        for layer in exits:
            h = stack.run_layers(h, done, layer, positions, cache)
            at_exit[layer].append(h)
            done = layer
        h = stack.run_layers(h, done, stack.n_layers, positions, cache)
        finals.append(stack.norm(h, "norm"))
        top1.append(stack.final_logits(h).argmax(axis=-1))
    return Features({l: np.concatenate(v) for l, v in at_exit.items()}, np.concatenate(finals), np.concatenate(top1))


def output_weight(stack: LayerStack) -> np.ndarray:
    """The final head as float32 [vocab, dim] (dequantized when packed), the exits' starting point."""
    w = stack.w[stack.model.output_name]
    return w.dequantize() if isinstance(w, QuantizedTensor) else np.array(materialize(w), dtype=np.float32)


def train_head(h: np.ndarray, teacher_hidden: np.ndarray, w_out: np.ndarray, g_init: np.ndarray, eps: float,
               config: ExitTrainConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """Distil one head: returns (norm [dim], output [vocab, dim], final mean KL in nats)."""
    import torch

    torch.manual_seed(config.seed)
    x, t_h = torch.from_numpy(h), torch.from_numpy(teacher_hidden)
    w_teacher = torch.from_numpy(w_out)
    g = torch.nn.Parameter(torch.from_numpy(g_init.copy()))
    w = torch.nn.Parameter(w_teacher.clone())
    opt = torch.optim.Adam([g, w], lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    kl = float("nan")
    for _ in range(config.steps):
        idx = torch.randint(0, x.shape[0], (min(config.batch_tokens, x.shape[0]),), generator=gen)
        loss = distill_loss(x[idx], t_h[idx], w_teacher, g, w, eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        kl = float(loss.detach())
    return g.detach().numpy().astype(np.float32), w.detach().numpy().astype(np.float32), kl


def distill_loss(x, teacher_hidden, w_teacher, g, w, eps: float):
    """KL(teacher || student) per token, mean: x [B, dim] residual stream, teacher_hidden [B, dim] normed."""
    import torch

    with torch.no_grad():
        log_p = torch.log_softmax(teacher_hidden @ w_teacher.T, dim=-1)              # [B, vocab]
    normed = x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + eps) * g
    log_q = torch.log_softmax(normed @ w.T, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()


def pack_head(weight: np.ndarray, packed_model: bool, config: ExitTrainConfig) -> QuantizedTensor | np.ndarray:
    """Packed models get a packed head (RTN, `head_format`), so the edge runs it on the integer kernels."""
    if not packed_model:
        return weight
    from edgekit.quantize.methods import quantize_rtn

    return quantize_rtn(weight, config.head_format, config.head_group_size)


def evaluate_heads(heads: dict[int, ExitHead], features: Features, thresholds) -> dict:
    """Coverage and top-1 agreement per exit and threshold, and the edge's cascade, on `features`."""
    conf, top1 = {}, {}
    for layer, head in heads.items():
        logits = head.logits(features.at_exit[layer])
        conf[layer], top1[layer] = confidence(logits), logits.argmax(axis=-1)
    teacher = features.teacher_top1
    rows = []
    for layer in sorted(heads):
        agree = top1[layer] == teacher
        for t in thresholds:
            hit = conf[layer] >= t
            rows.append({"exit": layer, "threshold": t, "coverage": float(hit.mean()),
                         "agreement": float(agree[hit].mean()) if hit.any() else None,
                         "agreement_all": float(agree.mean())})
    return {"tokens": int(len(teacher)), "per_exit": rows,
            "cascade": [cascade_row(conf, top1, teacher, t) for t in thresholds]}


def cascade_row(conf: dict, top1: dict, teacher: np.ndarray, threshold: float) -> dict:
    """Edge share and agreement when the first confident exit answers and the rest go to the cloud."""
    answered = np.zeros(len(teacher), dtype=bool)
    prediction = teacher.copy()  # tokens no exit takes are the cloud's: the full model's own top-1
    for layer in sorted(conf):
        take = ~answered & (conf[layer] >= threshold)
        prediction[take] = top1[layer][take]
        answered |= take
    return {"threshold": threshold, "edge_share": float(answered.mean()),
            "agreement": float((prediction == teacher).mean())}


def train_exits(model: Model, text: str, config: ExitTrainConfig) -> tuple[dict[int, ExitHead], dict]:
    """Train one head per exit on the first part of the text and report on the held-out rest."""
    plan = SplitPlan(tuple(config.exits), model.config.n_layers)
    stack = LayerStack(model)
    features = collect_features(stack, text_chunks(model, text, config), plan.exits)
    n = len(features.final)
    order = np.random.default_rng(config.seed).permutation(n)
    cut = int(n * (1.0 - config.holdout))
    train, held = features.take(order[:cut]), features.take(order[cut:])
    w_out, g_final = output_weight(stack), np.asarray(model.tensors["norm"], dtype=np.float32)
    eps = model.config.norm_eps
    initial = {l: ExitHead(l, g_final, pack_head(w_out, model.is_packed, config), eps) for l in plan.exits}
    heads, kl = {}, {}
    for layer in plan.exits:
        g, w, kl[layer] = train_head(train.at_exit[layer], train.final, w_out, g_final, eps, config)
        heads[layer] = ExitHead(layer, g, pack_head(w, model.is_packed, config), eps)
        logger.info("exit %d: train KL %.4f", layer, kl[layer])
    report = {"exits": list(plan.exits), "split": plan.split, "train_tokens": cut, "steps": config.steps,
              "train_kl": {str(l): v for l, v in kl.items()},
              "untrained": evaluate_heads(initial, held, config.thresholds),
              "trained": evaluate_heads(heads, held, config.thresholds)}
    return heads, report
