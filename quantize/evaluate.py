"""Quality measurement: perplexity of a model on a text file, and a candidate against a reference
(KL divergence, top-1 agreement, per-layer hidden-state error).

Method (the one `../shared/README.md` documents for stories260K): split the text at `<|endoftext|>`,
strip each document, drop empty ones, tokenize each with BOS and no EOS, cut it to the context length,
and score every token after BOS given its prefix. Perplexity is exp(mean NLL) over all scored tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import GenerationError
from edgekit.fileio import read_utf8_text
from edgekit.runtime.backend import Backend

DOCUMENT_SEPARATOR = "<|endoftext|>"


@dataclass(frozen=True)
class PerplexityReport:
    documents: int
    tokens: int
    mean_nll: float
    perplexity: float
    context_length: int

    def to_dict(self) -> dict:
        return asdict(self)


def split_documents(text: str, separator: str = DOCUMENT_SEPARATOR) -> list[str]:
    return [doc.strip() for doc in text.split(separator) if doc.strip()]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def token_nll(backend: Backend, tokens: list[int]) -> np.ndarray:
    """Negative log-likelihood of tokens[1:] given their prefixes ([len-1] float64), from a fresh sequence."""
    backend.reset()
    logits = backend.prefill(tokens[:-1])
    logp = log_softmax(logits)
    return -logp[np.arange(len(tokens) - 1), tokens[1:]]


def _read_documents(text_path: Path) -> list[str]:
    return split_documents(read_utf8_text(text_path))


def evaluate_perplexity(backend: Backend, text_path: Path, context_length: int | None = None,
                        max_documents: int | None = None) -> PerplexityReport:
    text_path = Path(text_path)
    docs = _read_documents(text_path)[:max_documents]
    context = min(context_length or backend.context_length, backend.context_length)
    tokenizer = backend.model.tokenizer
    total, count = 0.0, 0
    for doc in docs:
        tokens = tokenizer.encode(doc, add_bos=True)[:context]
        if len(tokens) < 2:
            continue
        nll = token_nll(backend, tokens)
        total += float(nll.sum())
        count += nll.size
    if count == 0:
        raise GenerationError(f"{text_path}: no document has a token to score",
                              fix=f"separate documents with {DOCUMENT_SEPARATOR!r} and give each some text")
    mean = total / count
    return PerplexityReport(documents=len(docs), tokens=count, mean_nll=mean, perplexity=float(np.exp(mean)),
                            context_length=context)


@dataclass(frozen=True)
class LayerError:
    layer: int
    relative_rmse: float  # ||h_candidate - h_reference|| / ||h_reference|| over all scored positions


@dataclass(frozen=True)
class ComparisonReport:
    """Quality of a candidate model against a reference on the same tokens."""

    documents: int
    tokens: int
    perplexity: float
    reference_perplexity: float
    mean_kl: float          # mean over positions of KL(reference || candidate), nats
    top1_agreement: float   # fraction of positions where both pick the same most likely token
    context_length: int
    layers: tuple[LayerError, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def _block_outputs(backend: Backend) -> dict[str, np.ndarray] | None:
    """Attach a recorder of block outputs when the back end is the reference forward (else None)."""
    from edgekit.model.reference import ReferenceForward

    forward = getattr(backend, "forward", None)
    if not isinstance(forward, ReferenceForward):
        return None
    store: dict[str, np.ndarray] = {}

    def record(event: str, array: np.ndarray) -> None:
        if event.endswith(".output"):
            store[event] = array

    forward.observer = record
    return store


def compare_models(reference: Backend, candidate: Backend, text_path: Path, context_length: int | None = None,
                   max_documents: int | None = None) -> ComparisonReport:
    """Perplexity, KL divergence and top-1 agreement of `candidate` against `reference`, document by
    document (same method as `evaluate_perplexity`), plus a per-layer hidden-state error table when both
    run on the reference forward."""
    docs = _read_documents(Path(text_path))[:max_documents]
    context = min(context_length or reference.context_length, reference.context_length, candidate.context_length)
    ref_store, cand_store = _block_outputs(reference), _block_outputs(candidate)
    track_layers = ref_store is not None and cand_store is not None
    n_layers = reference.model.config.n_layers
    err_sq, ref_sq = np.zeros(n_layers), np.zeros(n_layers)
    kl_sum = nll_sum = ref_nll_sum = 0.0
    agree = count = 0
    for doc in docs:
        tokens = reference.model.tokenizer.encode(doc, add_bos=True)[:context]
        if len(tokens) < 2:
            continue
        reference.reset()
        candidate.reset()
        logp_ref = log_softmax(reference.prefill(tokens[:-1]))
        logp_cand = log_softmax(candidate.prefill(tokens[:-1]))
        targets = np.arange(len(tokens) - 1), tokens[1:]
        kl_sum += float((np.exp(logp_ref) * (logp_ref - logp_cand)).sum())
        nll_sum -= float(logp_cand[targets].sum())
        ref_nll_sum -= float(logp_ref[targets].sum())
        agree += int((logp_ref.argmax(-1) == logp_cand.argmax(-1)).sum())
        count += len(tokens) - 1
        if track_layers:
            for i in range(n_layers):
                r, c = ref_store[f"layers.{i}.output"], cand_store[f"layers.{i}.output"]
                err_sq[i] += float(np.square(c - r, dtype=np.float64).sum())
                ref_sq[i] += float(np.square(r, dtype=np.float64).sum())
    if count == 0:
        raise GenerationError(f"{text_path}: no document has a token to score")
    layers = tuple(LayerError(i, float(np.sqrt(err_sq[i] / ref_sq[i]))) for i in range(n_layers)) if track_layers else ()
    return ComparisonReport(documents=len(docs), tokens=count, perplexity=float(np.exp(nll_sum / count)),
                            reference_perplexity=float(np.exp(ref_nll_sum / count)), mean_kl=kl_sum / count,
                            top1_agreement=agree / count, context_length=context, layers=layers)
