"""The edge side of CE-CoLLM end to end: early exits, async uploads, hard tokens, standalone mode, resync.

    edge = BridgeEdge(model, heads, plan, BridgeConfig(url=..., token=..., threshold=0.8))
    for out in edge.generate(prompt, 64):      # out.token, out.source in {"edge", "cloud", "standalone"}
        ...

Context sync: the edge keeps every boundary state. It uploads the new ones after each token; a hard
request states the token's position, which is the edge's context length. When the cloud holds a
different length (a restarted server, a lost replica) it answers "mismatch" with its own length and the
edge re-uploads from there. When the cloud is unreachable the deepest exit answers (standalone); on the
next hard token after `reconnect_s` the edge opens a new session and re-uploads everything.

Latency-aware threshold: the exit threshold drops linearly from `threshold` to `min_threshold` as the
expected cost of a cloud answer (round-trip EWMA x (1 + the cloud's queue depth)) grows from
`latency_budget_ms` to twice that, so a slow or busy cloud gets fewer requests.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from edgekit.errors import ConfigError
from edgekit.model.model import Model

from edgekit.cloud_bridge.client import CloudLink, CloudUnavailable, LinkConfig
from edgekit.cloud_bridge.edge import EdgeRunner, EdgeStep
from edgekit.cloud_bridge.exits import ExitHead, SplitPlan, calibrated_thresholds
from edgekit.cloud_bridge.protocol import ENCODINGS, model_fingerprint

logger = logging.getLogger(__name__)


@dataclass
class BridgeConfig:
    """Edge settings. url None: standalone only. threshold > 1 sends every token to the cloud."""

    url: str | None = None
    token: str | None = None
    threshold: float = 0.8
    exit_thresholds: dict[int, float] | None = None   # per exit (calibrated); the adaptive drop applies to each
    calibrated: bool = False    # without exit_thresholds: use the heads' stored calibrated ones (else `threshold`)
    min_threshold: float = 0.5
    latency_budget_ms: float | None = None     # None: fixed threshold
    encoding: str = "f16"
    kv_fill: str = "deferred"
    top_k: int = 0
    timeout_s: float = 5.0
    reconnect_s: float = 1.0

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"encoding {self.encoding!r} is not one of {list(ENCODINGS)}", fix="use f16 or int8")
        if not self.threshold >= 0 or not 0 <= self.min_threshold <= max(self.threshold, 1.0):
            raise ConfigError(f"threshold {self.threshold} / min_threshold {self.min_threshold} out of range",
                              fix="use 0 <= min_threshold <= threshold (above 1: every token to the cloud)")
        if self.url is not None and not self.token:
            raise ConfigError("a cloud URL needs a bearer token", fix="pass --token-file (or EDGEKIT_BRIDGE_TOKEN)")
        if self.timeout_s <= 0 or self.reconnect_s < 0 or not 0 <= self.top_k <= 1024:
            raise ConfigError(f"timeout_s {self.timeout_s}, reconnect_s {self.reconnect_s} or top_k {self.top_k} "
                              "out of range")

    def __repr__(self) -> str:
        return f"BridgeConfig(url={self.url!r}, threshold={self.threshold}, encoding={self.encoding!r}, ...)"


@dataclass
class Emitted:
    position: int          # the token comes after this position
    token: int
    source: str            # "edge" | "cloud" | "standalone"
    exit_layer: int | None
    confidence: float
    logits: np.ndarray | None = None
    top_ids: list[int] = field(default_factory=list)
    top_logits: list[float] = field(default_factory=list)


@dataclass
class BridgeStats:
    edge: int = 0
    cloud: int = 0
    standalone: int = 0
    requests: int = 0
    resyncs: int = 0
    reconnects: int = 0
    resumed: int = 0
    rtt_ms: list[float] = field(default_factory=list)

    @property
    def edge_share(self) -> float:
        total = self.edge + self.cloud + self.standalone
        return (self.edge + self.standalone) / total if total else 0.0


class AdaptiveThreshold:
    def __init__(self, config: BridgeConfig):
        self.config = config
        self.rtt_ms: float | None = None
        self.queue = 0

    def observe(self, rtt_ms: float, queue: int) -> None:
        self.rtt_ms = rtt_ms if self.rtt_ms is None else 0.8 * self.rtt_ms + 0.2 * rtt_ms
        self.queue = queue

    @property
    def value(self) -> float:
        c = self.config
        if c.latency_budget_ms is None or self.rtt_ms is None or c.threshold > 1.0:
            return c.threshold
        cost = self.rtt_ms * (1 + self.queue)
        over = min(1.0, max(0.0, (cost - c.latency_budget_ms) / c.latency_budget_ms))
        return max(c.min_threshold, c.threshold - (c.threshold - c.min_threshold) * over)


class BridgeEdge:
    """One edge sequence at a time (reset() starts another); thread-compatible, not thread-safe."""

    def __init__(self, model: Model, heads: dict[int, ExitHead], plan: SplitPlan, config: BridgeConfig,
                 context_length: int | None = None):
        self.model, self.plan, self.config = model, plan, config
        self.runner = EdgeRunner(model, heads, plan, config.kv_fill, context_length)
        self.fingerprint = model_fingerprint(model)
        self.threshold = AdaptiveThreshold(config)
        self.exit_thresholds = config.exit_thresholds
        if self.exit_thresholds is None and config.calibrated:
            self.exit_thresholds = calibrated_thresholds(heads)
            if self.exit_thresholds is None:
                logger.warning("the exit heads carry no calibrated thresholds: using threshold %s", config.threshold)
        self.link: CloudLink | None = None
        self.session_key = uuid.uuid4().hex     # one per edge: a load balancer keeps its sessions together
        self.stats = BridgeStats()
        self.reset()

    def reset(self) -> None:
        self.runner.reset()
        self.uploaded = 0
        self.edge_since_request = 0
        self._drop_link()           # the cloud's context belongs to the old sequence
        self._resume_id = None      # ... so the next session must not resume it
        self._last_attempt = float("-inf")   # a new sequence connects at once (the back-off is for failures)

    def close(self) -> None:
        self._drop_link()

    def _drop_link(self) -> None:
        if self.link is not None:
            self._resume_id = self.link.session      # a dropped connection: the cloud may still hold it
            self.link.close()
        self.link = None

    def generate(self, prompt, max_tokens: int, eos: set[int] = frozenset()) -> Iterator[Emitted]:
        """Greedy tokens after `prompt`, stopping at EOS, max_tokens or the context end."""
        out = self.feed(prompt)
        for i in range(max_tokens):
            if out.token in eos:
                return
            yield out
            if i + 1 == max_tokens or self.runner.length >= self.runner.context_length:
                return
            out = self.feed([out.token])

    def _exit_thresholds(self) -> float | dict[int, float]:
        value, c = self.threshold.value, self.config
        if self.exit_thresholds is None or c.threshold > 1.0:
            return value
        return {layer: max(min(c.min_threshold, t), t - (c.threshold - value))
                for layer, t in self.exit_thresholds.items()}

    def feed(self, tokens) -> Emitted:
        """Append tokens and answer the next one (edge exit, cloud, or standalone)."""
        step = self.runner.feed(tokens, self._exit_thresholds())
        if step.token is not None:
            self.stats.edge += 1
            self.edge_since_request += 1
            if self._ensure_link():           # stream boundary states even while the edge answers alone
                self._sync_uploads(step.position + 1)
            return Emitted(step.position, step.token, "edge", step.exit_layer, step.confidence, step.logits)
        reply = self._ask_cloud(step)
        if reply is None:
            self.stats.standalone += 1
            token = int(np.argmax(step.logits))
            return Emitted(step.position, token, "standalone", self.plan.split, step.confidence, step.logits)
        self.stats.cloud += 1
        return Emitted(step.position, int(reply["token"]), "cloud", None, step.confidence, None,
                       list(reply.get("top_ids") or []), list(reply.get("top_logits") or []))

    def _sync_uploads(self, limit: int) -> None:
        """Upload boundary states [uploaded, min(complete, limit)) if a session is open."""
        end = min(self.runner.complete, limit)
        if self.link is None or not self.link.alive or end <= self.uploaded:
            return
        self.link.upload(self.uploaded, self.runner.boundary[self.uploaded:end])
        self.uploaded = end

    def _ask_cloud(self, step: EdgeStep) -> dict | None:
        position = step.position
        for _ in range(3):
            if not self._ensure_link():
                return None
            if self.link.upload_have is not None:            # an upload was refused: restart from the cloud's length
                self.uploaded, self.link.upload_have = min(self.uploaded, self.link.upload_have), None
            self._sync_uploads(position)
            start = time.perf_counter()
            try:
                reply = self.link.ask(position, step.boundary, self.config.top_k, self.edge_since_request)
            except CloudUnavailable as exc:
                logger.info("cloud unavailable, standalone: %s", exc)
                self._drop_link()
                return None
            self.stats.requests += 1
            if reply["t"] == "token":
                self.threshold.observe((time.perf_counter() - start) * 1e3, int(reply.get("queue", 0)))
                self.stats.rtt_ms.append((time.perf_counter() - start) * 1e3)
                self.uploaded, self.edge_since_request = position + 1, 0
                return reply
            if reply["t"] == "mismatch" and int(reply["have"]) <= position:
                self.stats.resyncs += 1
                self.uploaded = int(reply["have"])
                continue
            if reply["t"] == "mismatch":                      # the cloud is ahead of us: start over
                self._drop_link()
                self._resume_id = None
                continue
            logger.info("cloud error %s: answering standalone", reply.get("code"))
            return None
        return None

    def _ensure_link(self) -> bool:
        """An open session, reconnecting at most every reconnect_s; a new session starts empty."""
        if self.link is not None and self.link.alive:
            return True
        self._drop_link()
        if self.config.url is None or time.monotonic() - self._last_attempt < self.config.reconnect_s:
            return False
        self._last_attempt = time.monotonic()
        try:
            link_config = LinkConfig(self.config.url, self.config.token, self.config.encoding, self.config.timeout_s,
                                     self.session_key)
            self.link = CloudLink(link_config, self.fingerprint, self.plan.split, self.runner.context_length,
                                  self._resume_id)
        except CloudUnavailable as exc:
            logger.info("%s", exc)
            return False
        self.stats.reconnects += 1
        self.uploaded = 0
        if 0 < self.link.have <= self.runner.complete:     # resumed: upload only what the cloud lacks
            self.uploaded = self.link.have
            self.stats.resumed += 1
        return True
