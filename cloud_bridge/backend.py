"""`--backend bridge`: the CE-CoLLM edge behind the runtime's `Backend` interface.

The cloud comes from the environment (the interface takes only a model and a context length):
EDGEKIT_BRIDGE_URL (ws://HOST:PORT/v1/session; unset: standalone), EDGEKIT_BRIDGE_TOKEN,
EDGEKIT_BRIDGE_THRESHOLD (default `calibrated`: the per-exit thresholds stored with the heads, 0.8 when
they have none; or one number), EDGEKIT_BRIDGE_ENCODING (default f16). The exit heads are the
ones stored in the model's .edgekit file (`edgekit bridge train-exits`).

Logits: `prefill` returns the next-token logits only, shape [1, vocab] (the edge never computes the
others). An edge exit gives its head's full logits; a cloud answer gives the top-64 logits the cloud
returns, every other entry -inf (greedy and top-k <= 64 sampling are exact; nucleus sampling sees only
those 64).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from edgekit.errors import ConfigError
from edgekit.model.model import Model

from edgekit.cloud_bridge.exits import SplitPlan, load_exit_heads
from edgekit.cloud_bridge.session import BridgeConfig, BridgeEdge, Emitted

CLOUD_TOP_K = 64


def open_bridge_edge(model: Model, config: BridgeConfig, context_length: int | None = None) -> BridgeEdge:
    """A BridgeEdge on the model's stored exit heads (the deepest one is the split)."""
    heads = load_exit_heads(model)
    plan = SplitPlan(tuple(sorted(heads)), model.config.n_layers)
    return BridgeEdge(model, heads, plan, config, context_length)


def config_from_environment() -> BridgeConfig:
    raw = os.environ.get("EDGEKIT_BRIDGE_THRESHOLD", "calibrated").strip()
    try:
        threshold = 1.0 if raw == "calibrated" else float(raw)
    except ValueError:
        raise ConfigError(f"EDGEKIT_BRIDGE_THRESHOLD={raw!r} is neither 'calibrated' nor a number",
                          fix="e.g. EDGEKIT_BRIDGE_THRESHOLD=calibrated or 0.8") from None
    return BridgeConfig(url=os.environ.get("EDGEKIT_BRIDGE_URL") or None,
                        token=os.environ.get("EDGEKIT_BRIDGE_TOKEN") or None, threshold=threshold,
                        calibrated=raw == "calibrated",
                        encoding=os.environ.get("EDGEKIT_BRIDGE_ENCODING", "f16"), top_k=CLOUD_TOP_K)


class BridgeBackend:
    name = "bridge"

    def __init__(self, model: Model, context_length: int | None = None):
        self.model = model
        self.edge = open_bridge_edge(model, config_from_environment(), context_length)

    @property
    def position(self) -> int:
        return self.edge.runner.length

    @property
    def context_length(self) -> int:
        return self.edge.runner.context_length

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        return self._logits(self.edge.feed(list(tokens)))[None]

    def decode(self, token: int) -> np.ndarray:
        return self._logits(self.edge.feed([int(token)]))

    def _logits(self, out: Emitted) -> np.ndarray:
        if out.logits is not None:
            return np.asarray(out.logits, dtype=np.float32)
        logits = np.full(self.model.config.vocab_size, -np.inf, dtype=np.float32)
        logits[out.top_ids] = out.top_logits
        logits[out.token] = max(logits[out.token], logits.max())   # the cloud's greedy choice stays the argmax
        return logits

    def reset(self) -> None:
        self.edge.reset()

    def close(self) -> None:
        self.edge.close()
