"""The edge half: blocks [0, split) with early exits, and the KV rule for layers an exit skipped.

Exit rule (CE-CoLLM): after each exit layer the exit rule's score (`rules.py`; max-softmax confidence
unless the exits store another rule) is compared with that exit's threshold; the first confident exit
answers the token. A token nobody answers is "hard": its residual
stream at the boundary goes to the cloud.

Layers above an early exit have no K/V for that token yet. Two ways to fill them (`kv_fill`):

- "deferred" (default, exact): the exited token stays pending at its exit layer and is carried through
  the remaining edge layers together with the next token, as one multi-row batch at each layer. Exits
  only ever move tokens down to a shallower layer, so the pending tokens that join at layer j are
  always the most recent positions: each batch is a contiguous run of positions ending at the new one.
  The KV (and the boundary state the cloud needs) is exactly what a full forward gives.
- "copy" (CALM's state propagation, approximate): at the exit, K/V of the skipped layers are computed
  from the exited state, and that state is also the token's boundary state.

`docs/BRIDGE.md` has the measured comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import ConfigError, GenerationError
from edgekit.model.model import Model

from edgekit.cloud_bridge.exits import ExitHead, SplitPlan, load_exit_rule
from edgekit.cloud_bridge.layers import LayerStack
from edgekit.cloud_bridge.rules import ExitRule

KV_FILLS = ("deferred", "copy")


@dataclass
class EdgeStep:
    """The edge's answer for the token after `position`.

    token / exit_layer are None for a hard token; `confidence` is the exit rule's score; `logits` are the
    last evaluated exit's (for a hard token: the deepest exit's, the standalone fallback); `boundary` is the residual stream at the split
    for `position` (the vector a hard request carries)."""

    position: int
    token: int | None
    exit_layer: int | None
    confidence: float
    logits: np.ndarray
    boundary: np.ndarray | None


@dataclass
class _Pending:
    position: int
    hidden: np.ndarray      # [dim] residual stream after `reached` blocks
    reached: int


class EdgeRunner:
    """Runs the edge partition of one sequence; keeps every boundary state for (re-)upload."""

    def __init__(self, model: Model, heads: dict[int, ExitHead], plan: SplitPlan, kv_fill: str = "deferred",
                 context_length: int | None = None, stack: LayerStack | None = None, max_pending: int = 32,
                 rule: ExitRule | None = None):
        if kv_fill not in KV_FILLS:
            raise ConfigError(f"kv_fill {kv_fill!r} is not one of {list(KV_FILLS)}", fix="use deferred or copy")
        missing = sorted(set(plan.exits) - set(heads))
        if missing:
            exits = ",".join(map(str, plan.exits))
            raise ConfigError(f"no trained exit head for layers {missing}",
                              fix=f"train them: edgekit bridge train-exits MODEL --exits {exits}")
        self.model, self.plan, self.kv_fill = model, plan, kv_fill
        self.max_pending = max(1, max_pending)   # deferred tokens carried at most this long (bounds the cloud's lag)
        self.heads = {layer: heads[layer] for layer in plan.exits}
        self.rule = rule or load_exit_rule(model)   # default: the rule stored with the exits
        self.stack = stack or LayerStack(model)
        self.cache = self.stack.new_cache(context_length)
        self.boundary = np.zeros((self.cache.max_len, model.config.dim), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        self.length = 0          # tokens fed
        self.complete = 0        # boundary states known for positions [0, complete)
        self.pending: list[_Pending] = []
        self.layer_runs = 0      # token-layers computed (deferred ones included): the edge's compute

    @property
    def context_length(self) -> int:
        return self.cache.max_len

    def feed(self, tokens, threshold: float | dict[int, float]) -> EdgeStep:
        """Append `tokens` (a prompt, or the last emitted token) and decide the next token; `threshold` is
        one value for every exit or {exit layer: value} (calibrated per exit)."""
        tokens = list(tokens)
        if not tokens:
            raise GenerationError("no tokens to feed", fix="pass at least one token (BOS counts)")
        if self.length + len(tokens) > self.context_length:
            raise GenerationError(f"{self.length} + {len(tokens)} tokens exceed the edge context of "
                                  f"{self.context_length}", fix="start a new sequence")
        first = self.length
        rows = self.stack.embed(tokens)
        positions = np.arange(first, first + len(tokens))
        self.length += len(tokens)
        step, self._exit_logits = None, {}
        for layer in range(self.plan.split):
            rows, positions = self._join_pending(layer, rows, positions)
            rows = self.stack.run_layers(rows, layer, layer + 1, positions, self.cache)
            self.layer_runs += len(rows)
            if layer + 1 in self.heads:
                step = self._try_exit(layer + 1, rows, positions, threshold)
                if step.token is not None and layer + 1 < self.plan.split:
                    self._defer(layer + 1, rows, positions)
                    if len(self.pending) >= self.max_pending:
                        self.flush()
                    return step
        self._complete(rows, positions)
        step.boundary = rows[-1].copy() if step.token is None else None
        return step

    def flush(self) -> None:
        """Carry every pending token through the rest of the edge layers: exact K/V, boundary states complete."""
        if not self.pending:
            return
        rows = np.zeros((0, self.model.config.dim), dtype=np.float32)
        positions = np.zeros(0, dtype=np.int64)
        for layer in range(self.pending[-1].reached, self.plan.split):    # the newest token is the shallowest
            rows, positions = self._join_pending(layer, rows, positions)
            rows = self.stack.run_layers(rows, layer, layer + 1, positions, self.cache)
            self.layer_runs += len(rows)
        self._complete(rows, positions)

    def _try_exit(self, layer: int, rows: np.ndarray, positions: np.ndarray, threshold) -> EdgeStep:
        logits = self.heads[layer].logits(rows[-1:])[0]
        self._exit_logits[layer] = logits[None]
        conf = float(self.rule.score(layer, self._exit_logits)[0])
        confident = conf >= (threshold[layer] if isinstance(threshold, dict) else threshold)
        return EdgeStep(int(positions[-1]), int(np.argmax(logits)) if confident else None,
                        layer if confident else None, conf, logits, None)

    def _join_pending(self, layer: int, rows: np.ndarray, positions: np.ndarray):
        """Prepend the pending tokens waiting at `layer` (always the positions just before `positions`)."""
        joining = [p for p in self.pending if p.reached == layer]
        if not joining:
            return rows, positions
        self.pending = [p for p in self.pending if p.reached != layer]
        joined = np.arange(joining[0].position, joining[-1].position + 1)
        if (len(positions) and joined[-1] + 1 != positions[0]) or len(joined) != len(joining):
            raise AssertionError(f"pending positions {joined} do not precede {positions[0]}")  # the proof failed
        return np.vstack([np.stack([p.hidden for p in joining]), rows]), np.concatenate([joined, positions])

    def _defer(self, layer: int, rows: np.ndarray, positions: np.ndarray) -> None:
        if self.kv_fill == "copy":
            self.stack.fill_kv_copy(rows, layer, self.plan.split, positions, self.cache)
            self._complete(rows, positions)
            return
        self.pending += [_Pending(int(pos), rows[i].copy(), layer) for i, pos in enumerate(positions)]
        self.pending.sort(key=lambda p: p.position)

    def _complete(self, rows: np.ndarray, positions: np.ndarray) -> None:
        self.boundary[positions] = rows
        if not self.pending:
            self.complete = int(positions[-1]) + 1
        else:
            self.complete = self.pending[0].position


def cloud_only_tokens(stack: LayerStack, prompt, max_tokens: int, eos: set[int] = frozenset()) -> list[int]:
    """Greedy tokens of the full model alone (the cloud-only baseline), on the same kernels."""
    from edgekit.cloud_bridge.layers import full_forward

    cache = stack.new_cache()
    logits = full_forward(stack, prompt, cache)[-1]
    tokens: list[int] = []
    for _ in range(max_tokens):
        token = int(np.argmax(logits))
        if token in eos:
            break
        tokens.append(token)
        if cache.length >= cache.max_len:
            break
        logits = full_forward(stack, [token], cache)[-1]
    return tokens
