"""`edgekit bridge bench`: cloud-only vs naive split vs CE-CoLLM through an emulated network.

One in-process cloud server on loopback, reached through `NetemProxy` at each round-trip time. Modes:

- cloud-only: the edge sends each token's embedding (split 0) and the cloud runs every layer;
- naive split: the edge runs [0, split) and sends every token's boundary state (threshold above 1);
- ce-collm@t: early exits at threshold t answer confident tokens on the edge;
- ce-collm@calibrated: each exit at its own threshold, calibrated on held-out text when the heads were
  trained (`train.calibrate_thresholds`); the bench's prompts should come from other text.

Per mode: share of tokens answered on the edge, the cloud's share of layer work and of head calls
against cloud-only, bytes on the wire per response, wall time per response, and top-1 agreement: the
share of emitted tokens equal to the full model's greedy token for the prefix actually generated
(teacher forcing on the mode's own output), plus agreement with the cloud-only text position by position.
Greedy decoding throughout; the edge and the cloud share this machine's CPU, so compute times add up.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from edgekit.errors import ConfigError
from edgekit.model.model import Model

from edgekit.cloud_bridge.client import CloudLink, LinkConfig
from edgekit.cloud_bridge.edge import cloud_only_tokens
from edgekit.cloud_bridge.exits import ExitHead, SplitPlan, calibrated_thresholds
from edgekit.cloud_bridge.layers import LayerStack, full_forward
from edgekit.cloud_bridge.netem import NetemProxy
from edgekit.cloud_bridge.protocol import model_fingerprint
from edgekit.cloud_bridge.server import ServerConfig
from edgekit.cloud_bridge.serving import BackgroundServer
from edgekit.cloud_bridge.session import BridgeConfig, BridgeEdge

BENCH_TOKEN = "bridge-bench-token"


@dataclass
class BridgeBenchConfig:
    rtts_ms: tuple[float, ...] = (0.0, 50.0)
    thresholds: tuple[float, ...] = (0.8, 0.9)
    bandwidth_mbit: float | None = None
    max_tokens: int = 48
    encoding: str = "f16"
    kv_fill: str = "deferred"
    calibrated: bool = False        # also run the heads' calibrated per-exit thresholds (first)

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or any(r < 0 for r in self.rtts_ms) or not (self.thresholds or self.calibrated):
            raise ConfigError(f"bad bench settings: max_tokens={self.max_tokens}, rtts_ms={self.rtts_ms}, "
                              f"thresholds={self.thresholds}")


@dataclass
class ModeResult:
    mode: str
    rtt_ms: float
    responses: int = 0
    tokens: int = 0
    edge_tokens: int = 0
    seconds: float = 0.0
    bytes: int = 0
    agree_own_prefix: int = 0
    agree_cloud_only: int = 0
    cloud_layer_share: float = 1.0
    cloud_head_share: float = 1.0
    outputs: list[list[int]] = field(default_factory=list)

    def summary(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "outputs"}
        n = max(self.tokens, 1)
        d.update(edge_share=self.edge_tokens / n, top1_own_prefix=self.agree_own_prefix / n,
                 top1_vs_cloud_only=self.agree_cloud_only / n, ms_per_token=1e3 * self.seconds / n,
                 ms_per_response=1e3 * self.seconds / max(self.responses, 1),
                 bytes_per_response=self.bytes / max(self.responses, 1))
        return d


def run_cloud_only(model: Model, stack: LayerStack, url: str, prompt: list[int], n: int, encoding: str) -> tuple:
    """Every token to the cloud: embeddings up (split 0), token ids back. Returns (tokens, bytes)."""
    link = CloudLink(LinkConfig(url, BENCH_TOKEN, encoding), model_fingerprint(model), 0, model.config.max_seq_len)
    try:
        rows = stack.embed(prompt)
        link.upload(0, rows[:-1])
        tokens, position, row = [], len(prompt) - 1, rows[-1]
        for _ in range(n):
            reply = link.ask(position, row)
            tokens.append(int(reply["token"]))
            position, row = position + 1, stack.embed([tokens[-1]])[0]
        return tokens, link.bytes_sent + link.bytes_received
    finally:
        link.close()


def bench_thresholds(config: BridgeBenchConfig, heads: dict[int, ExitHead]) -> list[tuple[str, float | dict]]:
    """(mode name, threshold or {exit: threshold}) for every CE-CoLLM mode of the bench."""
    modes: list[tuple[str, float | dict]] = []
    if config.calibrated:
        calibrated = calibrated_thresholds(heads)
        if calibrated is None:
            raise ConfigError("the exit heads carry no calibrated thresholds",
                              fix="retrain them with edgekit bridge train-exits (it calibrates on held-out text), "
                                  "or pass numeric --thresholds")
        modes.append(("ce-collm@calibrated", calibrated))
    return modes + [(f"ce-collm@{t:g}", t) for t in config.thresholds]


def run_edge(model, heads, plan, url: str, prompt, n: int, threshold: float | dict, config: BridgeBenchConfig) -> tuple:
    per_exit = threshold if isinstance(threshold, dict) else None
    edge = BridgeEdge(model, heads, plan, BridgeConfig(url=url, token=BENCH_TOKEN, encoding=config.encoding,
                                                       threshold=1.0 if per_exit else threshold,
                                                       exit_thresholds=per_exit, kv_fill=config.kv_fill))
    try:
        out = list(edge.generate(prompt, n))
        wire = edge.link.bytes_sent + edge.link.bytes_received if edge.link is not None else 0
        return [o.token for o in out], sum(o.source != "cloud" for o in out), wire, edge.stats
    finally:
        edge.close()


def score(result: ModeResult, stack: LayerStack, prompt: list[int], tokens: list[int], cloud_only: list[int]) -> None:
    logits = full_forward(stack, prompt + tokens)
    greedy = logits[len(prompt) - 1: len(prompt) - 1 + len(tokens)].argmax(axis=-1)
    result.agree_own_prefix += int((greedy == np.array(tokens)).sum())
    result.agree_cloud_only += sum(a == b for a, b in zip(tokens, cloud_only))
    result.tokens += len(tokens)
    result.responses += 1
    result.outputs.append(tokens)


def run_bridge_bench(model: Model, heads: dict[int, ExitHead], prompts: list[list[int]],
                     config: BridgeBenchConfig) -> dict:
    plan = SplitPlan(tuple(sorted(heads)), model.config.n_layers)
    stack = LayerStack(model)
    L, k = model.config.n_layers, plan.split
    baselines = [cloud_only_tokens(stack, p, config.max_tokens) for p in prompts]
    rows = []
    with BackgroundServer(model, ServerConfig(token=BENCH_TOKEN, max_requests_per_second=1e6)) as server:
        for rtt in config.rtts_ms:
            with NetemProxy(server.port, rtt_ms=rtt, bandwidth_mbit=config.bandwidth_mbit) as proxy:
                url = f"ws://127.0.0.1:{proxy.port}/v1/session"
                rows += _bench_one_rtt(model, heads, plan, stack, url, prompts, baselines, rtt, config, L, k)
    return {"model": str(model.source), "n_layers": L, "split": k, "exits": list(plan.exits),
            "calibrated_thresholds": {str(l): t for l, t in (calibrated_thresholds(heads) or {}).items()},
            "config": asdict(config), "prompts": len(prompts), "rows": rows}


def _bench_one_rtt(model, heads, plan, stack, url, prompts, baselines, rtt, config, L, k) -> list[dict]:
    n = config.max_tokens
    cloud = ModeResult("cloud-only", rtt)
    for prompt, base in zip(prompts, baselines):
        start = time.perf_counter()
        tokens, wire = run_cloud_only(model, stack, url, prompt, len(base) or n, config.encoding)
        cloud.seconds += time.perf_counter() - start
        cloud.bytes += wire
        score(cloud, stack, prompt, tokens, base)
    results = [cloud]
    for mode, threshold in [("naive split", 2.0)] + bench_thresholds(config, heads):
        result = ModeResult(mode, rtt, cloud_layer_share=(L - k) / L)
        for prompt, base in zip(prompts, baselines):
            start = time.perf_counter()
            tokens, edge_tokens, wire, _ = run_edge(model, heads, plan, url, prompt, len(base) or n, threshold,
                                                    config)
            result.seconds += time.perf_counter() - start
            result.bytes += wire
            result.edge_tokens += edge_tokens
            score(result, stack, prompt, tokens, base)
        result.cloud_head_share = 1.0 - result.edge_tokens / max(result.tokens, 1)
        results.append(result)
    cloud_ms = cloud.summary()["ms_per_response"]
    rows = []
    for r in results:
        row = r.summary()
        row["latency_vs_cloud_only"] = row["ms_per_response"] / cloud_ms if cloud_ms else None
        rows.append(row)
    return rows


def kv_fill_comparison(model: Model, heads: dict[int, ExitHead], prompts: list[list[int]],
                       threshold: float | dict[int, float], max_tokens: int) -> list[dict]:
    """Deferred vs state-copy KV for layers above an exit, standalone-free (every hard token answered by an
    in-process cloud): top-1 agreement with the full model on its own prefix, and edge time per token."""
    from edgekit.cloud_bridge.cloud import CloudContext, batch_answers
    from edgekit.cloud_bridge.edge import EdgeRunner

    plan = SplitPlan(tuple(sorted(heads)), model.config.n_layers)
    stack = LayerStack(model)
    rows = []
    for kv_fill in ("deferred", "copy"):
        agree = total = edge = 0
        edge_seconds = 0.0
        for prompt in prompts:
            runner = EdgeRunner(model, heads, plan, kv_fill, stack=stack)
            cloud = CloudContext(stack, plan.split, model.config.max_seq_len)
            tokens: list[int] = []
            start = time.perf_counter()
            step = runner.feed(prompt, threshold)
            for _ in range(max_tokens):
                edge_seconds += time.perf_counter() - start
                if step.token is None:
                    cloud.append(cloud.received, runner.boundary[cloud.received:step.position])
                    cloud.append(step.position, step.boundary[None])
                    token = batch_answers(stack, [(cloud, step.position, 0)])[0].token
                else:
                    token, edge = step.token, edge + 1
                tokens.append(token)
                start = time.perf_counter()
                step = runner.feed([token], threshold)
            greedy = full_forward(stack, prompt + tokens)[len(prompt) - 1:-1].argmax(axis=-1)
            agree += int((greedy == np.array(tokens)).sum())
            total += len(tokens)
        name = "calibrated" if isinstance(threshold, dict) else f"{threshold:g}"
        rows.append({"kv_fill": kv_fill, "threshold_name": name, "tokens": total, "edge_share": edge / total,
                     "top1_own_prefix": agree / total, "edge_ms_per_token": 1e3 * edge_seconds / total})
    return rows
