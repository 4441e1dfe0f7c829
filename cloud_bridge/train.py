"""Train early-exit heads by distillation from the full model's logits, the backbone frozen.

Because the backbone is frozen, the residual stream at each exit and the final normed hidden state are
fixed: they are computed once with the same `LayerStack` (same kernels) the edge runs, then only the
heads train, in torch: student logits = head(h_l), teacher logits = h_final @ W_out^T,
loss = KL(softmax(teacher) || softmax(student)) averaged over tokens (CE-CoLLM trains its exits the
same way, against the final layer's distribution). A head is an RMSNorm weight g and an LM head W, both
starting as the final norm and output head, optionally after a small residual SiLU MLP (the adapter,
hidden size `adapter_hidden`, its down projection starting at zero so the head starts as the copy).
Adam with a cosine learning-rate decay.

Text use (no tuning on the test text): documents are split, not tokens. The first `1 - holdout` of the
documents train the heads; the held-out rest calibrates the per-exit thresholds (`calibrate_thresholds`:
the largest edge share whose cascade keeps `target_agreement` top-1 agreement with the full model) and
gives the report's curves. `test_text` (other documents, e.g. `--test-text`) is only measured, with the
thresholds already chosen.

With `self_distill` N > 0 (`--self-distill N`) the heads train and calibrate on the deployment
distribution instead: the full model's own greedy continuations (N tokens) of prompts cut from the same
documents (`self_distill_chunks`), only the positions whose next token the edge decides while generating
kept; `test_text` is then measured on the continuations of each test document's first prompt.

The exit rule (`config.rule`, `rules.py`) turns the heads' logits into the score the thresholds apply to;
the report (`report["rule"]`, saved with the heads) names it. The report gives, for each exit and
threshold: coverage (share of tokens whose score reaches the threshold) and top-1 agreement with the full model on those tokens, plus the cascade the edge
actually runs (first exit that is confident answers, the rest go to the cloud).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from edgekit.errors import ConfigError, GenerationError
from edgekit.formats import QuantizedTensor
from edgekit.model.lazy import materialize
from edgekit.model.model import Model
from edgekit.quantize.evaluate import split_documents

from edgekit.cloud_bridge.exits import Adapter, ExitHead, SplitPlan
from edgekit.cloud_bridge.layers import LayerStack
from edgekit.cloud_bridge.rules import RULES, ExitRule, Learned, MaxSoftmax, features as rule_features, make_rule

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
CANDIDATE_THRESHOLDS = tuple(float(t) for t in np.round(np.linspace(0.0, 1.0, 401), 4))   # scores lie in [0, 1]
NEVER_EXIT = 1.01   # above any max-softmax probability: the exit never answers


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
    adapter_hidden: int = 0                 # 0: no adapter (norm + LM head only)
    target_agreement: float | None = 0.99   # calibrate per-exit thresholds to this cascade agreement (None: don't)
    calibration_margin: float = 0.002       # calibrate to target + margin: held-out and test text differ
    calibration_confidence: float | None = None   # instead of the margin: the agreement's binomial lower bound
    self_distill: int = 0                   # > 0: train/calibrate on this many greedy tokens per prompt
    prompt_tokens: int = 8                  # self-distillation prompt length (BOS included), as the bench
    prompts_per_document: int = 4           # self-distillation prompts per document (cuts every 32 tokens)
    calibration_prompts_per_document: int = 1   # held-out prompts per document: the first cut, as the bench's
    rule: str = "max-softmax"               # exit rule (rules.RULES); "learned" fits on half the held-out docs
    curve: tuple[tuple[float, float | None], ...] = ()   # (target, confidence) settings for the report's trade-off

    def __post_init__(self) -> None:
        if self.max_tokens < 64 or self.seq_len < 2 or self.steps < 0 or self.batch_tokens < 1 \
                or self.adapter_hidden < 0 or self.self_distill < 0 or self.prompt_tokens < 1 \
                or self.prompts_per_document < 1:
            raise ConfigError(f"bad exit-training sizes: max_tokens={self.max_tokens}, seq_len={self.seq_len}, "
                              f"steps={self.steps}, batch_tokens={self.batch_tokens}, "
                              f"adapter_hidden={self.adapter_hidden}, self_distill={self.self_distill}, "
                              f"prompt_tokens={self.prompt_tokens}, prompts_per_document={self.prompts_per_document}",
                              fix="use max_tokens >= 64, seq_len >= 2, steps >= 0, adapter_hidden >= 0, "
                                  "self_distill >= 0, prompt_tokens >= 1, prompts_per_document >= 1")
        if self.target_agreement is not None and not 0.0 < self.target_agreement + self.calibration_margin <= 1.0:
            raise ConfigError(f"target_agreement {self.target_agreement} + margin {self.calibration_margin} "
                              "must lie in (0, 1]", fix="e.g. --target-agreement 0.99")
        if self.calibration_confidence is not None and not 0.0 < self.calibration_confidence < 1.0:
            raise ConfigError(f"calibration confidence {self.calibration_confidence} must lie in (0, 1)",
                              fix="e.g. --confidence 0.95 (a one-sided Clopper-Pearson bound)")
        if self.rule not in RULES or self.calibration_prompts_per_document < 1:
            raise ConfigError(f"exit rule {self.rule!r} / calibration prompts per document "
                              f"{self.calibration_prompts_per_document}", fix=f"use one of {sorted(RULES)} and >= 1")
        if not 0.0 < self.holdout < 1.0 or not self.lr > 0:
            raise ConfigError(f"holdout {self.holdout} must be in (0, 1) and lr {self.lr} positive")
        if any(not 0.0 < t <= 1.0 or (c is not None and not 0.0 < c < 1.0) for t, c in self.curve):
            raise ConfigError(f"calibration curve settings {list(self.curve)}: targets must lie in (0, 1] and "
                              "confidences in (0, 1)", fix="e.g. --curve 0.99,0.995,0.99@0.95")
        if any(not 0.0 < t <= 1.0 for t in self.thresholds):
            raise ConfigError(f"thresholds {list(self.thresholds)} must lie in (0, 1]")


@dataclass
class Features:
    """Frozen-backbone activations: residual stream per exit {layer: [N, dim]}, final normed hidden [N, dim]."""

    at_exit: dict[int, np.ndarray]
    final: np.ndarray
    teacher_top1: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def text_chunks(model: Model, text: str | list[str], config: ExitTrainConfig,
                max_tokens: int | None = None) -> list[list[int]]:
    """Documents (a text split at <|endoftext|>, or a list) encoded with BOS and cut into chunks of at most
    seq_len tokens, `max_tokens` (default config.max_tokens) in all."""
    seq_len = min(config.seq_len, model.config.max_seq_len)
    limit = max_tokens or config.max_tokens
    chunks, total = [], 0
    for doc in split_documents(text) if isinstance(text, str) else text:
        ids = model.tokenizer.encode(doc, add_bos=True)
        for i in range(0, len(ids), seq_len):
            piece = ids[i:i + seq_len][: limit - total]
            if len(piece) >= 2:
                chunks.append(piece)
                total += len(piece)
        if total >= limit:
            break
    if total < 64:
        raise GenerationError(f"the training text gives only {total} tokens; exits need at least 64",
                              fix="pass a longer --text file")
    return chunks


def collect_features(stack: LayerStack, chunks: list[list[int]], exits: tuple[int, ...],
                     keep_from: list[int] | None = None) -> Features:
    """Run the frozen model over every chunk, keeping the residual stream at each exit; with `keep_from`,
    only chunk i's positions >= keep_from[i] are kept (the generated part of a self-distillation chunk)."""
    at_exit: dict[int, list[np.ndarray]] = {l: [] for l in exits}
    finals, top1 = [], []
    for i, chunk in enumerate(chunks):
        start = keep_from[i] if keep_from is not None else 0
        cache = stack.new_cache(len(chunk))
        positions = np.arange(len(chunk))
        h, done = stack.embed(chunk), 0
        for layer in exits:
            h = stack.run_layers(h, done, layer, positions, cache)
            at_exit[layer].append(h[start:])
            done = layer
        h = stack.run_layers(h, done, stack.n_layers, positions, cache)[start:]
        finals.append(stack.norm(h, "norm"))
        top1.append(stack.final_logits(h).argmax(axis=-1))
    return Features({l: np.concatenate(v) for l, v in at_exit.items()}, np.concatenate(finals), np.concatenate(top1))


def greedy_continuations(stack: LayerStack, prompts: list[list[int]], n: int, batch: int = 32) -> list[list[int]]:
    """The full model's own greedy continuation of each prompt, `n` tokens (fewer at the context's end),
    `batch` prompts decoded together with `run_layers_batched` (row-wise identical to one at a time)."""
    out: list[list[int]] = []
    for b in range(0, len(prompts), batch):
        group = [list(p) for p in prompts[b:b + batch]]
        steps = [max(0, min(n, stack.config.max_seq_len - len(p))) for p in group]
        caches = [stack.new_cache(len(p) + s) for p, s in zip(group, steps)]
        generated: list[list[int]] = [[] for _ in group]
        feed = [(stack.embed(p), np.arange(len(p))) for p in group]
        for step in range(max(steps, default=0)):
            live = [i for i, s in enumerate(steps) if step < s]
            hs = stack.run_layers_batched([(feed[i][0], feed[i][1], caches[i]) for i in live], 0, stack.n_layers)
            tokens = stack.final_logits(np.vstack([h[-1:] for h in hs])).argmax(axis=-1)
            for i, h, token in zip(live, hs, tokens):
                caches[i].length += len(h)
                generated[i].append(int(token))
                feed[i] = (stack.embed([int(token)]), np.array([caches[i].length]))
        out += generated
    return out


def self_distill_chunks(model: Model, stack: LayerStack, docs: list[str], config: ExitTrainConfig,
                        max_tokens: int, prompts_per_document: int | None = None) -> tuple[list[list[int]], list[int]]:
    """Self-distillation data (the deployment distribution): prompts cut from each document (its first
    `prompt_tokens` tokens, then every 32 tokens further, `prompts_per_document` in all), each followed by the
    full model's own greedy continuation of `self_distill` tokens. Returns (chunks, keep_from): the rows kept
    are the last prompt position and the generated ones, i.e. the positions whose next token the edge decides
    while generating; about `max_tokens` rows in all."""
    per_doc = prompts_per_document or config.prompts_per_document
    seq_len = min(config.seq_len, model.config.max_seq_len)
    p_len = min(config.prompt_tokens, seq_len - 1)
    n = min(config.self_distill, seq_len - p_len)
    prompts: list[list[int]] = []
    for doc in docs:
        ids = model.tokenizer.encode(doc, add_bos=True)
        for j in range(per_doc):
            cut = p_len + 32 * j
            if cut > len(ids) or cut + n > seq_len:
                break
            prompts.append(ids[:cut])
        if len(prompts) * (n + 1) >= max_tokens:
            break
    rows = sum(n + 1 for _ in prompts)
    if n < 1 or rows < 64:
        raise GenerationError(f"self-distillation gives only {rows} tokens ({len(prompts)} prompts x {n} generated); "
                              "exits need at least 64", fix="pass a longer --text file or a larger --self-distill")
    chunks = [p + g for p, g in zip(prompts, greedy_continuations(stack, prompts, n))]
    return chunks, [len(p) - 1 for p in prompts]


def output_weight(stack: LayerStack) -> np.ndarray:
    """The final head as float32 [vocab, dim] (dequantized when packed), the exits' starting point."""
    w = stack.w[stack.model.output_name]
    return w.dequantize() if isinstance(w, QuantizedTensor) else np.array(materialize(w), dtype=np.float32)


def train_head(h: np.ndarray, teacher_hidden: np.ndarray, w_out: np.ndarray, g_init: np.ndarray, eps: float,
               config: ExitTrainConfig) -> tuple[dict[str, np.ndarray], float]:
    """Distil one head: returns ({"norm", "output" and, with an adapter, "adapter_norm/up/down"}, final KL)."""
    import torch

    torch.manual_seed(config.seed)
    x, t_h = torch.from_numpy(h), torch.from_numpy(teacher_hidden)
    w_teacher = torch.from_numpy(w_out)
    params = {"norm": torch.nn.Parameter(torch.from_numpy(g_init.copy())),
              "output": torch.nn.Parameter(w_teacher.clone())}
    if config.adapter_hidden:
        dim = h.shape[1]
        params.update(adapter_norm=torch.nn.Parameter(torch.ones(dim)),
                      adapter_up=torch.nn.Parameter(torch.randn(config.adapter_hidden, dim) / dim ** 0.5),
                      adapter_down=torch.nn.Parameter(torch.zeros(dim, config.adapter_hidden)))
    opt = torch.optim.Adam(list(params.values()), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(config.steps, 1))
    gen = torch.Generator().manual_seed(config.seed)
    kl = float("nan")
    for _ in range(config.steps):
        idx = torch.randint(0, x.shape[0], (min(config.batch_tokens, x.shape[0]),), generator=gen)
        loss = distill_loss(x[idx], t_h[idx], w_teacher, params, eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        kl = float(loss.detach())
    return {name: p.detach().numpy().astype(np.float32) for name, p in params.items()}, kl


def head_logits(x, params: dict, eps: float):
    """Student logits in torch, the same function as ExitHead.logits: x [B, dim] -> [B, vocab]."""
    import torch

    def rms(v, g):
        return v * torch.rsqrt((v * v).mean(dim=-1, keepdim=True) + eps) * g

    if "adapter_up" in params:
        x = x + torch.nn.functional.silu(rms(x, params["adapter_norm"]) @ params["adapter_up"].T) \
            @ params["adapter_down"].T
    return rms(x, params["norm"]) @ params["output"].T


def distill_loss(x, teacher_hidden, w_teacher, params: dict, eps: float):
    """KL(teacher || student) per token, mean: x [B, dim] residual stream, teacher_hidden [B, dim] normed."""
    import torch

    with torch.no_grad():
        log_p = torch.log_softmax(teacher_hidden @ w_teacher.T, dim=-1)              # [B, vocab]
    log_q = torch.log_softmax(head_logits(x, params, eps), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()


def build_head(layer: int, params: dict[str, np.ndarray], packed_model: bool, eps: float,
               config: ExitTrainConfig) -> ExitHead:
    """Trained parameters -> ExitHead; matrices packed like the output head for packed models."""
    adapter = None
    if "adapter_up" in params:
        adapter = Adapter(params["adapter_norm"], pack_head(params["adapter_up"], packed_model, config),
                          pack_head(params["adapter_down"], packed_model, config))
    return ExitHead(layer, params["norm"], pack_head(params["output"], packed_model, config), eps, adapter)


def pack_head(weight: np.ndarray, packed_model: bool, config: ExitTrainConfig) -> QuantizedTensor | np.ndarray:
    """Packed models get a packed head (RTN, `head_format`), so the edge runs it on the integer kernels."""
    if not packed_model:
        return weight
    from edgekit.quantize.methods import quantize_rtn

    return quantize_rtn(weight, config.head_format, config.head_group_size)


def exit_logits(heads: dict[int, ExitHead], features: Features) -> dict[int, np.ndarray]:
    return {layer: head.logits(features.at_exit[layer]) for layer, head in heads.items()}


def head_predictions(heads: dict[int, ExitHead], features: Features, rule: ExitRule | None = None) -> tuple[dict, dict]:
    """({layer: exit-rule score [N]}, {layer: top-1 [N]}) of every head on `features` (default rule: max-softmax)."""
    rule, logits = rule or MaxSoftmax(), exit_logits(heads, features)
    conf = {layer: rule.score(layer, {e: z for e, z in logits.items() if e <= layer}) for layer in logits}
    return conf, {layer: z.argmax(axis=-1) for layer, z in logits.items()}


def fit_learned_rule(heads: dict[int, ExitHead], features: Features) -> Learned:
    """The learned rule's per-exit predictors of P(exit top-1 == full model top-1), fitted on `features`."""
    logits = exit_logits(heads, features)
    rows = {l: rule_features(l, {e: z for e, z in logits.items() if e <= l}) for l in logits}
    return Learned.fit(rows, {l: z.argmax(axis=-1) == features.teacher_top1 for l, z in logits.items()})


def evaluate_heads(heads: dict[int, ExitHead], features: Features, thresholds, rule: ExitRule | None = None) -> dict:
    """Coverage and top-1 agreement per exit and threshold (on the rule's score), and the edge's cascade."""
    conf, top1 = head_predictions(heads, features, rule)
    teacher = features.teacher_top1
    rows = []
    for layer in sorted(heads):
        agree = top1[layer] == teacher
        for t in thresholds:
            hit = conf[layer] >= t
            rows.append({"exit": layer, "threshold": t, "coverage": float(hit.mean()),
                         "agreement": float(agree[hit].mean()) if hit.any() else None,
                         "agreement_all": float(agree.mean())})
    report = {"tokens": int(len(teacher)), "per_exit": rows,
              "cascade": [cascade_row(conf, top1, teacher, t) for t in thresholds]}
    if all(h.threshold is not None for h in heads.values()):
        report["calibrated"] = cascade_row(conf, top1, teacher, {l: h.threshold for l, h in heads.items()})
    return report


def cascade_row(conf: dict, top1: dict, teacher: np.ndarray, threshold: float | dict[int, float]) -> dict:
    """Edge share and agreement when the first confident exit answers and the rest go to the cloud;
    `threshold` is one value for every exit or {layer: value}."""
    answered = np.zeros(len(teacher), dtype=bool)
    prediction = teacher.copy()  # tokens no exit takes are the cloud's: the full model's own top-1
    per_exit = {}
    for layer in sorted(conf):
        t = threshold[layer] if isinstance(threshold, dict) else threshold
        take = ~answered & (conf[layer] >= t)
        prediction[take] = top1[layer][take]
        answered |= take
        per_exit[str(layer)] = float(take.mean())
    return {"threshold": threshold if not isinstance(threshold, dict) else {str(k): v for k, v in threshold.items()},
            "edge_share": float(answered.mean()), "agreement": float((prediction == teacher).mean()),
            "share_per_exit": per_exit}


@lru_cache(maxsize=65536)
def binomial_upper_bound(errors: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound on a binomial rate: the p with P(X <= errors | n, p) =
    1 - confidence (bisection on the exact binomial CDF, summed in log space). errors == n gives 1."""
    if not 0 <= errors <= n or n < 1:
        raise ConfigError(f"binomial bound of {errors} errors in {n} rows", fix="use 0 <= errors <= n, n >= 1")
    if errors == n:
        return 1.0
    alpha = 1.0 - confidence
    if errors == 0:
        return 1.0 - alpha ** (1.0 / n)
    i = np.arange(errors + 1, dtype=np.float64)
    log_comb = math.lgamma(n + 1) - np.array([math.lgamma(k + 1) + math.lgamma(n - k + 1) for k in range(errors + 1)])

    def cdf(p: float) -> float:
        terms = log_comb + i * math.log(p) + (n - i) * math.log1p(-p)
        top = terms.max()
        return float(math.exp(top) * np.exp(terms - top).sum())

    lo, hi = errors / n, 1.0
    for _ in range(60):    # the CDF falls with p: keep cdf(lo) > alpha >= cdf(hi)
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) > alpha else (lo, mid)
    return hi


def agreement_bound(row: dict, n: int, confidence: float | None) -> float:
    """A cascade row's agreement (confidence None) or its lower confidence bound: 1 - the Clopper-Pearson
    upper bound on the disagreement rate over all n rows (cloud tokens count as agreeing, as in the row)."""
    if confidence is None:
        return row["agreement"]
    errors = int(round((1.0 - row["agreement"]) * n))
    return 1.0 - binomial_upper_bound(errors, n, confidence)


def calibrate_thresholds(conf: dict, top1: dict, teacher: np.ndarray, target: float,
                         candidates=CANDIDATE_THRESHOLDS, rounds: int = 4,
                         confidence: float | None = None) -> dict[int, float]:
    """Per-exit thresholds maximising the cascade's edge share with agreement >= target, by coordinate
    ascent over `candidates` (each exit in turn, the others fixed; ties keep the higher threshold),
    starting from every exit off (NEVER_EXIT; an exit that cannot keep the target stays off).

    With `confidence` (e.g. 0.95) the held-out agreement itself is not enough: its one-sided
    Clopper-Pearson lower bound (`agreement_bound`) must reach the target. The bound treats rows as
    independent draws; tokens of one continuation are correlated, so it is a heuristic guard against the
    search picking thresholds that pass by noise on few rows, not a guarantee."""
    layers, n = sorted(conf), len(teacher)
    best = {l: NEVER_EXIT for l in layers}
    for _ in range(rounds):
        changed = False
        for layer in layers:
            top = (cascade_row(conf, top1, teacher, best)["edge_share"], best[layer])
            for t in candidates:
                row = cascade_row(conf, top1, teacher, {**best, layer: float(t)})
                if (row["edge_share"], float(t)) > top and agreement_bound(row, n, confidence) >= target:
                    top = (row["edge_share"], float(t))
            changed |= top[1] != best[layer]
            best[layer] = top[1]
        if not changed:
            break
    return best


def calibration_curve(held: tuple[dict, dict, np.ndarray], test: tuple[dict, dict, np.ndarray] | None,
                      settings: list[tuple[float, float | None]]) -> list[dict]:
    """The calibration trade-off: for each (target, confidence) setting, the thresholds calibrated on
    `held` (scores, top-1s, teacher) and the cascade they give there and, measured only, on `test`."""
    rows = []
    for target, confidence in settings:
        chosen = calibrate_thresholds(*held, target, confidence=confidence)
        row = {"target": target, "confidence": confidence, "thresholds": {str(l): t for l, t in chosen.items()},
               "heldout": cascade_row(*held, chosen)}
        if test is not None:
            row["test"] = cascade_row(*test, chosen)
        rows.append(row)
    return rows


def split_text(text: str, holdout: float) -> tuple[list[str], list[str]]:
    """Documents: the first 1 - holdout train, the rest are held out (whole documents, never tokens)."""
    docs = split_documents(text)
    if len(docs) < 2:
        raise GenerationError(f"the text has {len(docs)} document(s); training and calibration need separate ones",
                              fix="pass a text with several documents separated by <|endoftext|>")
    cut = min(len(docs) - 1, max(1, round(len(docs) * (1.0 - holdout))))
    return docs[:cut], docs[cut:]


def train_exits(model: Model, text: str, config: ExitTrainConfig,
                test_text: str | None = None) -> tuple[dict[int, ExitHead], dict]:
    """Train one head per exit on the first documents, calibrate thresholds and report on the held-out ones,
    and (if given) measure the calibrated cascade on `test_text`."""
    plan = SplitPlan(tuple(config.exits), model.config.n_layers)
    stack = LayerStack(model)
    train_docs, held_docs = split_text(text, config.holdout)
    held_tokens = max(64, round(config.max_tokens * config.holdout))

    def features(docs: list[str], tokens: int, per_doc: int | None = None) -> Features:
        if config.self_distill:
            chunks, keep = self_distill_chunks(model, stack, docs, config, tokens, per_doc)
            return collect_features(stack, chunks, plan.exits, keep)
        return collect_features(stack, text_chunks(model, docs, config, tokens), plan.exits)

    fit_docs: list[str] = []
    if config.rule == "learned":    # predictors fitted on the first half of the held-out docs, calibrated on the rest
        if len(held_docs) < 2:
            raise GenerationError(f"the learned exit rule needs >= 2 held-out documents, the text leaves "
                                  f"{len(held_docs)}", fix="pass a text with more documents (<|endoftext|>)")
        fit_docs, held_docs = held_docs[: len(held_docs) // 2], held_docs[len(held_docs) // 2:]
    train = features(train_docs, config.max_tokens - held_tokens)
    held = features(held_docs, held_tokens, config.calibration_prompts_per_document)
    w_out, g_final = output_weight(stack), np.asarray(model.tensors["norm"], dtype=np.float32)
    eps = model.config.norm_eps
    initial = {l: ExitHead(l, g_final, pack_head(w_out, model.is_packed, config), eps) for l in plan.exits}
    heads, kl = {}, {}
    for layer in plan.exits:
        params, kl[layer] = train_head(train.at_exit[layer], train.final, w_out, g_final, eps, config)
        heads[layer] = build_head(layer, params, model.is_packed, eps, config)
        logger.info("exit %d: train KL %.4f", layer, kl[layer])
    report = {"exits": list(plan.exits), "split": plan.split, "train_tokens": len(train.final),
              "heldout_tokens": len(held.final), "train_documents": len(train_docs),
              "heldout_documents": len(held_docs), "steps": config.steps, "adapter_hidden": config.adapter_hidden,
              "data": (f"self-distillation: {config.self_distill} greedy tokens after {config.prompts_per_document} "
                       f"prompt(s) of {config.prompt_tokens}+32j tokens per document") if config.self_distill
              else "text (teacher forcing)",
              "train_kl": {str(l): v for l, v in kl.items()},
              "config": {"max_tokens": config.max_tokens, "holdout": config.holdout, "seq_len": config.seq_len,
                         "lr": config.lr, "batch_tokens": config.batch_tokens, "seed": config.seed,
                         "self_distill": config.self_distill, "prompt_tokens": config.prompt_tokens,
                         "prompts_per_document": config.prompts_per_document,
                         "calibration_prompts_per_document": config.calibration_prompts_per_document},
              "untrained": evaluate_heads(initial, held, config.thresholds)}
    if config.rule == "learned":
        rule = fit_learned_rule(heads, features(fit_docs, held_tokens, config.calibration_prompts_per_document))
        report["rule_fit_documents"] = len(fit_docs)
    else:
        rule = make_rule(config.rule)
    report["rule"] = rule.to_json()
    conf, top1 = head_predictions(heads, held, rule)
    if config.target_agreement is not None:
        target = config.target_agreement + (config.calibration_margin if config.calibration_confidence is None else 0.0)
        for layer, t in calibrate_thresholds(conf, top1, held.teacher_top1, target,
                                             confidence=config.calibration_confidence).items():
            heads[layer].threshold = t
        report["target_agreement"], report["calibrated_to"] = config.target_agreement, target
        report["calibration_confidence"] = config.calibration_confidence
    report["trained"] = evaluate_heads(heads, held, config.thresholds, rule)
    test_pred = None
    if test_text is not None:
        test_docs = split_documents(test_text)
        test = features(test_docs, held_tokens, 1) if config.self_distill else \
            collect_features(stack, text_chunks(model, test_docs, config, held_tokens), plan.exits)
        report["test"] = evaluate_heads(heads, test, config.thresholds, rule)
        test_pred = (*head_predictions(heads, test, rule), test.teacher_top1)
    if config.curve:
        report["calibration_curve"] = calibration_curve((conf, top1, held.teacher_top1), test_pred,
                                                        list(config.curve))
    return heads, report


def recalibrate_exits(model: Model, heads: dict[int, ExitHead], rule: ExitRule, text: str, config: ExitTrainConfig,
                      test_text: str | None = None) -> dict:
    """Re-choose trained heads' thresholds without training them again: the calibration rows are rebuilt from
    the same training text and settings (`config`: holdout, max_tokens, self_distill ... as in training, which
    `train_exits` stores in report["config"]), i.e. the held-out documents (for the learned rule, the second
    half that was not used to fit it); thresholds are set on `heads` by `config.target_agreement` and
    `config.calibration_confidence`. Returns the report: held-out and test cascades and `config.curve`."""
    if config.target_agreement is None:
        raise ConfigError("recalibration needs a target agreement", fix="pass --target-agreement, e.g. 0.99")
    plan = SplitPlan(tuple(sorted(heads)), model.config.n_layers)
    stack = LayerStack(model)
    _, held_docs = split_text(text, config.holdout)
    if rule.name == "learned":
        held_docs = held_docs[len(held_docs) // 2:]
    held_tokens = max(64, round(config.max_tokens * config.holdout))

    def features(docs: list[str], per_doc: int) -> Features:
        if config.self_distill:
            chunks, keep = self_distill_chunks(model, stack, docs, config, held_tokens, per_doc)
            return collect_features(stack, chunks, plan.exits, keep)
        return collect_features(stack, text_chunks(model, docs, config, held_tokens), plan.exits)

    held = features(held_docs, config.calibration_prompts_per_document)
    conf, top1 = head_predictions(heads, held, rule)
    target = config.target_agreement + (config.calibration_margin if config.calibration_confidence is None else 0.0)
    for layer, t in calibrate_thresholds(conf, top1, held.teacher_top1, target,
                                         confidence=config.calibration_confidence).items():
        heads[layer].threshold = t
    report = {"heldout_documents": len(held_docs), "heldout_tokens": len(held.final), "rule": rule.to_json(),
              "target_agreement": config.target_agreement, "calibrated_to": target,
              "calibration_confidence": config.calibration_confidence,
              "trained": evaluate_heads(heads, held, config.thresholds, rule)}
    test_pred = None
    if test_text is not None:
        test = features(split_documents(test_text), 1)
        report["test"] = evaluate_heads(heads, test, config.thresholds, rule)
        test_pred = (*head_predictions(heads, test, rule), test.teacher_top1)
    if config.curve:
        report["calibration_curve"] = calibration_curve((conf, top1, held.teacher_top1), test_pred, list(config.curve))
    return report
