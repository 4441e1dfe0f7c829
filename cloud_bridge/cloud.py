"""The cloud half of one session: boundary states received from the edge, blocks [split, n_layers) run lazily.

Uploads only store rows; the blocks run when a hard token needs them, over every row received since the
last run, as one prefill-sized batch (CE-CoLLM's lazy context extension). `batch_answers` serves hard
requests of several sessions at once: each session's rows run through the blocks with its own cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import EdgekitError

from edgekit.cloud_bridge.layers import LayerStack


class ContextMismatch(EdgekitError):
    """The edge's stated context length differs from what the cloud holds: the edge must re-upload."""

    def __init__(self, have: int, claimed: int):
        super().__init__(f"the cloud holds {have} positions but the edge states {claimed}",
                         fix="re-upload the boundary states from the cloud's length")
        self.have, self.claimed = have, claimed


class ContextLimit(EdgekitError):
    """A session would grow past the server's per-session context limit."""


@dataclass
class Answer:
    position: int
    token: int
    top_ids: list[int]
    top_logits: list[float]


class CloudContext:
    """Boundary states [max_len, dim] and the KV cache of blocks [split, n_layers) for one session."""

    def __init__(self, stack: LayerStack, split: int, max_len: int):
        self.stack, self.split = stack, split
        self.cache = stack.new_cache(max_len)
        self.rows = np.zeros((max_len, stack.config.dim), dtype=np.float32)
        self.received = 0     # positions [0, received) have boundary states
        self.processed = 0    # positions [0, processed) have run through the cloud's blocks

    @property
    def max_len(self) -> int:
        return self.cache.max_len

    def append(self, start: int, rows: np.ndarray) -> None:
        """Store boundary states for positions [start, start + n); start must equal `received`."""
        if start != self.received:
            raise ContextMismatch(self.received, start)
        if start + len(rows) > self.max_len:
            raise ContextLimit(f"positions up to {start + len(rows)} exceed this session's context limit of "
                               f"{self.max_len}", fix="start a new session (or raise the server's --max-context)")
        self.rows[start:start + len(rows)] = rows
        self.received += len(rows)

    def pending_segment(self, end: int) -> tuple[np.ndarray, np.ndarray, object]:
        """(rows [n, dim], positions, cache) for positions [processed, end): received, not yet run."""
        positions = np.arange(self.processed, end)
        return self.rows[positions], positions, self.cache

    def extend(self, end: int) -> np.ndarray:
        """Run positions [processed, end) through the cloud blocks; returns their outputs [n, dim]. Uploads
        may keep arriving meanwhile (they only write rows >= received >= end)."""
        rows, positions, cache = self.pending_segment(end)
        out = self.stack.run_layers(rows, self.split, self.stack.n_layers, positions, cache)
        self.processed = end
        return out


def answer_from_logits(position: int, logits: np.ndarray, top_k: int) -> Answer:
    """Greedy token and the top-k (ids, logits), highest first."""
    token = int(np.argmax(logits))
    if top_k <= 0:
        return Answer(position, token, [], [])
    k = min(top_k, len(logits))
    ids = np.argpartition(-logits, k - 1)[:k]
    ids = ids[np.argsort(-logits[ids], kind="stable")]
    return Answer(position, token, [int(i) for i in ids], [float(logits[i]) for i in ids])


def batch_answers(stack: LayerStack, requests: list[tuple[CloudContext, int, int]]) -> list[Answer | EdgekitError]:
    """Answer hard requests (context, position, top_k) from several sessions together: contexts with the
    same split run their pending rows through the cloud blocks in one batched pass (linears on all rows
    stacked, attention per session), and the final head runs once for all ([B, dim] -> [B, vocab]).
    A refused request (context mismatch) answers only itself."""
    results: list[Answer | EdgekitError | None] = []
    groups: dict[int, list[int]] = {}
    for i, (context, position, _) in enumerate(requests):
        if context.received < position + 1 or context.processed > position:
            results.append(ContextMismatch(context.received, position))
            continue
        results.append(None)
        groups.setdefault(context.split, []).append(i)
    finals: dict[int, np.ndarray] = {}
    for split, members in groups.items():
        contexts = [requests[i][0] for i in members]
        ends = [requests[i][1] + 1 for i in members]
        outs = stack.run_layers_batched([c.pending_segment(end) for c, end in zip(contexts, ends)], split,
                                        stack.n_layers)
        for i, context, end, out in zip(members, contexts, ends, outs):
            context.processed = end
            finals[i] = out[-1]
    if finals:
        order = sorted(finals)
        logits = stack.final_logits(np.stack([finals[i] for i in order]))
        for row, i in zip(logits, order):
            results[i] = answer_from_logits(requests[i][1], row, requests[i][2])
    return results
