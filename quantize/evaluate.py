"""Quality measurement: perplexity of a model on a text file.

Method (the one `../shared/README.md` documents for stories260K): split the text at `<|endoftext|>`,
strip each document, drop empty ones, tokenize each with BOS and no EOS, cut it to the context length,
and score every token after BOS given its prefix. Perplexity is exp(mean NLL) over all scored tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import GenerationError, ModelNotFoundError
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


def evaluate_perplexity(backend: Backend, text_path: Path, context_length: int | None = None,
                        max_documents: int | None = None) -> PerplexityReport:
    text_path = Path(text_path)
    if not text_path.is_file():
        raise ModelNotFoundError("text file not found", path=text_path)
    try:
        text = text_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise GenerationError(f"{text_path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    docs = split_documents(text)[:max_documents]
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
