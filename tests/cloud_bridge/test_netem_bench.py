"""The network-emulating proxy and `edgekit bridge bench` (correctness only: timings live in the report)."""

from __future__ import annotations

import socket
import threading

import pytest

from edgekit.cloud_bridge.bench import BridgeBenchConfig, kv_fill_comparison, run_bridge_bench
from edgekit.cloud_bridge.exits import SplitPlan
from edgekit.cloud_bridge.netem import NetemProxy
from edgekit.cloud_bridge.server import ServerConfig
from edgekit.cloud_bridge.serving import BackgroundServer
from edgekit.cloud_bridge.session import BridgeConfig, BridgeEdge

from tests.cloud_bridge.test_server import _assert_cloud_tokens_are_full_model_tokens

TOKEN = "netem-test-token-01"


def _echo_server() -> tuple[socket.socket, int]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1]


def test_proxy_forwards_bytes_in_order_with_delay_and_bandwidth():
    listener, port = _echo_server()
    payload = bytes(range(256)) * 1000
    with NetemProxy(port, rtt_ms=20, bandwidth_mbit=50) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
            conn.sendall(payload)
            received = b""
            while len(received) < len(payload):
                received += conn.recv(65536)
    listener.close()
    assert received == payload and proxy.bytes_forwarded == 2 * len(payload)


def test_cut_connections_send_the_edge_standalone_then_it_resyncs(bridge_model, bridge_heads):
    with BackgroundServer(bridge_model, ServerConfig(token=TOKEN)) as server, NetemProxy(server.port, 2) as proxy:
        edge = BridgeEdge(bridge_model, bridge_heads, SplitPlan((1, 2), 4),
                          BridgeConfig(url=f"ws://127.0.0.1:{proxy.port}/v1/session", token=TOKEN, threshold=2.0,
                                       encoding="f32", reconnect_s=0.0, timeout_s=2.0))
        prompt = bridge_model.tokenizer.encode("Once upon a time", add_bos=True)
        out = [edge.feed(prompt)]
        for i in range(15):
            if i == 5:
                proxy.cut()
            out.append(edge.feed([out[-1].token]))
        edge.close()
    assert edge.stats.reconnects >= 2 and out[-1].source == "cloud"
    _assert_cloud_tokens_are_full_model_tokens(bridge_model, prompt, out)


def test_bench_rows_are_consistent(bridge_model, bridge_heads):
    prompts = [bridge_model.tokenizer.encode("Once upon a time", add_bos=True)]
    report = run_bridge_bench(bridge_model, bridge_heads, prompts,
                              BridgeBenchConfig(rtts_ms=(0.0,), thresholds=(0.5,), max_tokens=8, encoding="f32"))
    rows = {r["mode"]: r for r in report["rows"]}
    assert set(rows) == {"cloud-only", "naive split", "ce-collm@0.5"}
    assert rows["cloud-only"]["top1_own_prefix"] == 1.0 and rows["cloud-only"]["edge_share"] == 0.0
    assert rows["naive split"]["top1_vs_cloud_only"] == 1.0      # f32 states: the split changes nothing
    assert rows["naive split"]["cloud_layer_share"] == pytest.approx(2 / 4)
    ce = rows["ce-collm@0.5"]
    assert 0.0 <= ce["edge_share"] <= 1.0 and ce["cloud_head_share"] == pytest.approx(1 - ce["edge_share"])
    assert all(r["tokens"] == 8 and r["bytes_per_response"] > 0 for r in rows.values())
    kv = kv_fill_comparison(bridge_model, bridge_heads, prompts, 0.5, 8)
    assert [r["kv_fill"] for r in kv] == ["deferred", "copy"] and all(r["tokens"] == 8 for r in kv)


def test_bench_runs_the_calibrated_thresholds(bridge_model, bridge_heads):
    prompts = [bridge_model.tokenizer.encode("Once upon a time", add_bos=True)]
    report = run_bridge_bench(bridge_model, bridge_heads, prompts,
                              BridgeBenchConfig(rtts_ms=(0.0,), thresholds=(), calibrated=True, max_tokens=6))
    assert [r["mode"] for r in report["rows"]] == ["cloud-only", "naive split", "ce-collm@calibrated"]
    assert report["calibrated_thresholds"] == {str(l): h.threshold for l, h in bridge_heads.items()}
