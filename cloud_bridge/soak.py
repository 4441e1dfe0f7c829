"""Soak: many concurrent edge sessions against a real cloud server for minutes, counting every error.

    report = run_soak(model, heads, url, token, SoakConfig(sessions=100, seconds=600))

Each worker thread owns one BridgeEdge and generates sequences back to back (every sequence opens a new
cloud session: session churn is part of the load). Before the load starts, every prompt's sequence is
generated once alone; under load each sequence must be the same: with f32 boundary states the cloud's
answers are exact and batching is bit-exact, so the token stream is deterministic. An error is anything
that breaks that promise or needs recovery in a healthy run: an exception, a token answered standalone
(cloud unreachable, refused or erroring), a resync, a wrong token, a missing or duplicated position.

`start_server_process` runs `edgekit bridge serve` in a child process (a real server; the edges' GIL
does not slow it) on a free loopback port; `edgekit bridge soak` uses it when no --url is given.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from edgekit.errors import ConfigError, EdgekitError
from edgekit.model.model import Model

from edgekit.cloud_bridge.exits import ExitHead, SplitPlan
from edgekit.cloud_bridge.session import BridgeConfig, BridgeEdge

logger = logging.getLogger(__name__)

SOAK_PROMPTS = ("Once upon a time", "The cat", "A big red ball", "Lily and Tom", "One day", "The sun",
                "Sam had", "Mom said", "The little dog", "In the park")


@dataclass
class SoakConfig:
    sessions: int = 100
    seconds: float = 600.0
    tokens_per_sequence: int = 24
    threshold: float = 0.8
    timeout_s: float = 30.0       # per hard request: 100 edges share 2 cores with the server
    prompts: tuple[str, ...] = SOAK_PROMPTS

    def __post_init__(self) -> None:
        if self.sessions < 1 or not self.seconds > 0 or self.tokens_per_sequence < 1 or not self.prompts:
            raise ConfigError(f"bad soak settings: sessions={self.sessions}, seconds={self.seconds}, "
                              f"tokens_per_sequence={self.tokens_per_sequence}, {len(self.prompts)} prompts",
                              fix="use at least 1 session, a positive duration and at least 1 token and prompt")


@dataclass
class _Worker:
    sequences: int = 0
    tokens: int = 0
    cloud_tokens: int = 0
    edge_tokens: int = 0
    errors: list[str] = field(default_factory=list)
    token_ms: list[float] = field(default_factory=list)
    rtt_ms: list[float] = field(default_factory=list)


def check_sequence(out, prompt_len: int, expected: list[int]) -> list[str]:
    """Problems of one generated sequence: gaps or repeats in positions, wrong tokens, standalone answers."""
    problems = []
    positions = [o.position for o in out]
    if positions != list(range(prompt_len - 1, prompt_len - 1 + len(out))):
        problems.append(f"positions {positions[:3]}...{positions[-3:]} are not consecutive from {prompt_len - 1}")
    tokens = [o.token for o in out]
    if tokens != expected:
        first = next((i for i, (a, b) in enumerate(zip(tokens, expected)) if a != b), min(len(tokens), len(expected)))
        problems.append(f"{len(tokens)} tokens, expected {len(expected)}; first difference at {first}")
    standalone = sum(o.source == "standalone" for o in out)
    if standalone:
        problems.append(f"{standalone} tokens answered standalone (cloud unavailable or erroring)")
    return problems


def _generate(edge: BridgeEdge, prompt: list[int], n: int, timings: list[float] | None = None) -> list:
    edge.reset()
    out, tick = [], time.perf_counter()
    for emitted in edge.generate(prompt, n):     # no EOS: every sequence has exactly n tokens
        now = time.perf_counter()
        if timings is not None:
            timings.append((now - tick) * 1e3)
        out.append(emitted)
        tick = now
    return out


def run_soak(model: Model, heads: dict[int, ExitHead], url: str, token: str, config: SoakConfig) -> dict:
    """Run the soak against the server at `url`; returns the report (errors, tokens, latency percentiles)."""
    plan = SplitPlan(tuple(sorted(heads)), model.config.n_layers)
    edge_config = BridgeConfig(url=url, token=token, threshold=config.threshold, encoding="f32",
                               timeout_s=config.timeout_s, reconnect_s=1.0)
    prompts = [model.tokenizer.encode(text, add_bos=True) for text in config.prompts]
    reference_edge = BridgeEdge(model, heads, plan, edge_config)
    expected = []
    for prompt in prompts:
        alone = _generate(reference_edge, prompt, config.tokens_per_sequence)
        if any(o.source == "standalone" for o in alone):
            raise EdgekitError(f"the cloud at {url} does not answer (reference run went standalone)",
                               fix="start the server (edgekit bridge serve) and check the URL and token")
        expected.append([o.token for o in alone])
    reference_edge.close()
    workers = [_Worker() for _ in range(config.sessions)]
    stop_at = time.monotonic() + config.seconds
    threads = [threading.Thread(target=_work, args=(i, workers[i], model, heads, plan, edge_config, prompts,
                                                     expected, config, stop_at), daemon=True, name=f"soak-{i}")
               for i in range(config.sessions)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=config.seconds + 10 * config.timeout_s + 60)
    hung = sum(thread.is_alive() for thread in threads)
    return _report(workers, config, time.perf_counter() - started, hung)


def _work(index, worker: _Worker, model, heads, plan, edge_config, prompts, expected, config, stop_at) -> None:
    edge = BridgeEdge(model, heads, plan, edge_config)
    k = index
    try:
        while time.monotonic() < stop_at:
            prompt, want = prompts[k % len(prompts)], expected[k % len(prompts)]
            k += 1
            resyncs_before = edge.stats.resyncs
            try:
                out = _generate(edge, prompt, config.tokens_per_sequence, worker.token_ms)
            except Exception as exc:  # any failure is a soak error, counted and reported
                worker.errors.append(f"session {index}: {type(exc).__name__}: {exc}")
                continue
            problems = check_sequence(out, len(prompt), want)
            if edge.stats.resyncs != resyncs_before:
                problems.append(f"{edge.stats.resyncs - resyncs_before} resyncs")
            worker.errors += [f"session {index} sequence {worker.sequences}: {p}" for p in problems]
            worker.sequences += 1
            worker.tokens += len(out)
            worker.cloud_tokens += sum(o.source == "cloud" for o in out)
            worker.edge_tokens += sum(o.source == "edge" for o in out)
    finally:
        worker.rtt_ms = list(edge.stats.rtt_ms)
        edge.close()


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    v = np.asarray(values)
    return {"p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
            "p99": float(np.percentile(v, 99)), "max": float(v.max())}


def _report(workers: list[_Worker], config: SoakConfig, elapsed: float, hung: int) -> dict:
    errors = [e for w in workers for e in w.errors] + [f"{hung} sessions still running at the end"] * bool(hung)
    tokens = sum(w.tokens for w in workers)
    return {"config": asdict(config), "elapsed_s": elapsed, "errors": len(errors), "error_samples": errors[:20],
            "sequences": sum(w.sequences for w in workers), "tokens": tokens,
            "cloud_tokens": sum(w.cloud_tokens for w in workers), "edge_tokens": sum(w.edge_tokens for w in workers),
            "tokens_per_second": tokens / elapsed if elapsed > 0 else 0.0,
            "sessions_with_sequences": sum(w.sequences > 0 for w in workers),
            "token_ms": _percentiles([t for w in workers for t in w.token_ms]),
            "cloud_rtt_ms": _percentiles([t for w in workers for t in w.rtt_ms])}


class ServerProcess:
    """`edgekit bridge serve MODEL` in a child process on a free loopback port, with a fresh random token."""

    def __init__(self, model_path, extra_args: tuple[str, ...] = (), nice: int = 0, start_timeout_s: float = 180.0):
        from edgekit.cloud_bridge.serving import bind_socket

        sock = bind_socket("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        sock.close()
        self.token = secrets.token_hex(16)
        env = {**os.environ, "EDGEKIT_BRIDGE_TOKEN": self.token}
        command = [sys.executable, "-m", "edgekit.cli.main", "bridge", "serve", str(model_path), "--port",
                   str(self.port), *extra_args]
        # the server logs every connection: to a file, never an unread pipe (a full pipe blocks the server)
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=self.log,
                                        preexec_fn=(lambda: os.nice(nice)) if nice else None)
        self._wait_healthy(start_timeout_s)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/session"

    def _wait_healthy(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EdgekitError(f"the bridge server exited: {self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise EdgekitError(f"the bridge server did not answer /v1/health within {timeout_s:.0f} s")

    def log_tail(self, n: int = 2000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-n:]

    def metrics(self) -> str:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10,
                         headers={"Authorization": f"Bearer {self.token}"}).text

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()      # SIGTERM: uvicorn's graceful shutdown
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def server_errors(metrics_text: str) -> dict[str, float]:
    """edgekit_bridge_errors_total by code, from the server's Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "edgekit_bridge_errors":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["code"]] = sample.value
    return counts
