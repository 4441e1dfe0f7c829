"""Prometheus metrics of one bridge server (own registry, so several servers can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class BridgeMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.tokens = Counter("edgekit_bridge_tokens", "Tokens answered, by where they were answered "
                              "(edge counts are reported by the edges with their next hard request)",
                              ["where"], registry=r)
        self.sessions = Gauge("edgekit_bridge_sessions", "Open sessions", registry=r)
        self.queue_depth = Gauge("edgekit_bridge_queue_depth", "Hard requests waiting for the batcher", registry=r)
        self.request_seconds = Histogram("edgekit_bridge_request_seconds", "Hard request time in the server, "
                                         "queue included", buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("edgekit_bridge_batch_size", "Hard requests answered per batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.upload_bytes = Counter("edgekit_bridge_upload_bytes", "Bytes of boundary states uploaded", registry=r)
        self.mismatches = Counter("edgekit_bridge_context_mismatches", "Requests refused for a context mismatch",
                                  registry=r)
        self.resumed = Counter("edgekit_bridge_sessions_resumed", "Sessions resumed on a new connection",
                               registry=r)
        self.expired = Counter("edgekit_bridge_sessions_expired", "Sessions closed for idling", registry=r)
        self.errors = Counter("edgekit_bridge_errors", "Errors sent to edges, by code", ["code"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
