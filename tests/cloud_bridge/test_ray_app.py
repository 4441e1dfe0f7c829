"""The bridge as a Ray Serve application on a local Ray cluster: session affinity, and a replica killed mid-answer.

Bounded: one cluster for the module (2 CPUs, replicas at 0.25 CPU), 2 replicas, 6 edges x 30 tokens.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import tempfile
import threading
import time

import httpx
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from edgekit.cloud_bridge.client import SESSION_KEY_HEADER  # noqa: E402
from edgekit.cloud_bridge.exits import SplitPlan  # noqa: E402
from edgekit.cloud_bridge.ray_app import start_ray_bridge, stop_ray_bridge  # noqa: E402
from edgekit.cloud_bridge.server import ServerConfig  # noqa: E402
from edgekit.cloud_bridge.serving import bind_socket  # noqa: E402
from edgekit.cloud_bridge.session import BridgeConfig, BridgeEdge  # noqa: E402

from tests.cloud_bridge.test_server import _assert_cloud_tokens_are_full_model_tokens  # noqa: E402

pytestmark = pytest.mark.slow
TOKEN = "ray-test-token-0123456789"
EDGES, TOKENS, KILL_AT = 6, 30, 10


@pytest.fixture(scope="module")
def ray_bridge(bridge_model_path):
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="ekray", dir="/tmp"),
             configure_logging=False)
    try:
        start_ray_bridge(bridge_model_path, ServerConfig(token=TOKEN), replicas=2, port=port)
        _wait_for_replicas(port, 2)
        yield port
    finally:
        stop_ray_bridge()
        ray.shutdown()


def _health(port: int, key: str) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/v1/health", headers={SESSION_KEY_HEADER: key}, timeout=30).json()


def _wait_for_replicas(port: int, n: int, timeout_s: float = 180) -> None:
    deadline, seen = time.monotonic() + timeout_s, set()
    while time.monotonic() < deadline and len(seen) < n:
        try:
            seen.add(_health(port, os.urandom(8).hex())["replica"])
        except (httpx.HTTPError, KeyError, ValueError):
            time.sleep(0.5)
    assert len(seen) == n, f"saw replicas {seen}"


def _edge(model, heads, port) -> BridgeEdge:
    return BridgeEdge(model, heads, SplitPlan((1, 2), model.config.n_layers),
                      BridgeConfig(url=f"ws://127.0.0.1:{port}/v1/session", token=TOKEN, threshold=2.0,
                                   encoding="f32", reconnect_s=0.0, timeout_s=30.0))


def test_sessions_stick_to_one_replica(ray_bridge, bridge_model, bridge_heads):
    prompt = bridge_model.tokenizer.encode("Once upon a time", add_bos=True)
    placements = {}
    for _ in range(4):
        edge = _edge(bridge_model, bridge_heads, ray_bridge)
        replicas = set()
        for _ in range(3):                          # three sessions of one edge: always the same replica
            edge.reset()
            out = list(edge.generate(prompt, 3))
            assert [o.source for o in out] == ["cloud"] * 3
            replicas.add(edge.link.replica)
        replicas |= {_health(ray_bridge, edge.session_key)["replica"] for _ in range(3)}   # HTTP too
        edge.close()
        assert len(replicas) == 1, replicas
        placements[edge.session_key] = replicas.pop()
    assert all(re.fullmatch(r"\w+:rank\d+", r) for r in placements.values()), placements


def test_dropped_connection_resumes_on_the_same_replica(ray_bridge, bridge_model, bridge_heads):
    """Affinity is what makes a resume possible: the reconnect reaches the replica holding the context."""
    prompt = bridge_model.tokenizer.encode("The little dog", add_bos=True)
    edge = _edge(bridge_model, bridge_heads, ray_bridge)
    out = [edge.feed(prompt)]
    for i in range(12):
        if i == 5:
            first, home = edge.link.session, edge.link.replica
            edge.link.ws.socket.shutdown(socket.SHUT_RDWR)     # the network drops: no close frame
        out.append(edge.feed([out[-1].token]))
    assert edge.link.session == first and edge.link.replica == home
    edge.close()
    assert edge.stats.reconnects == 2 and edge.stats.resumed == 1
    _assert_cloud_tokens_are_full_model_tokens(bridge_model, prompt, out)


def test_killed_replica_sessions_rebuild_without_lost_or_duplicated_tokens(ray_bridge, bridge_model, bridge_heads):
    prompts = [bridge_model.tokenizer.encode(text, add_bos=True) for text in
               ("Once upon a time", "The cat", "A big red ball", "Lily and Tom", "One day", "The sun")]
    edges = [_edge(bridge_model, bridge_heads, ray_bridge) for _ in range(EDGES)]
    by_replica: dict[str, list[str]] = {}
    while min(map(len, by_replica.values()), default=0) < EDGES // 2 or len(by_replica) < 2:
        key = os.urandom(8).hex()                   # keys the router places on each replica, half and half
        by_replica.setdefault(_health(ray_bridge, key)["replica"], []).append(key)
    keys = [k for ks in by_replica.values() for k in ks[:EDGES // 2]]
    for edge, key in zip(edges, keys):
        edge.session_key = key
    outs = [[e.feed(p)] for e, p in zip(edges, prompts)]
    homes = [e.link.replica for e in edges]
    assert len(set(homes)) == 2                     # the WebSocket sessions went where the router said
    victim = homes[0]
    victim_pid = _health(ray_bridge, edges[0].session_key)["pid"]
    assert _health(ray_bridge, edges[0].session_key)["replica"] == victim
    barrier = threading.Barrier(EDGES + 1)

    def run(i):
        for step in range(1, TOKENS):
            if step == KILL_AT:
                barrier.wait(timeout=300)          # every edge is mid-answer when the replica dies
                barrier.wait(timeout=300)
            outs[i].append(edges[i].feed([outs[i][-1].token]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(EDGES)]
    for t in threads:
        t.start()
    barrier.wait(timeout=300)
    os.kill(victim_pid, signal.SIGKILL)             # the replica process dies; Ray restarts it later
    barrier.wait(timeout=300)
    for t in threads:
        t.join(timeout=600)
    for edge in edges:
        edge.close()
    affected = [i for i in range(EDGES) if homes[i] == victim]
    assert len(affected) == EDGES // 2
    for i, (edge, out, prompt) in enumerate(zip(edges, outs, prompts)):
        assert len(out) == TOKENS
        _assert_cloud_tokens_are_full_model_tokens(bridge_model, prompt, out)   # positions consecutive, rebuilt
        sources = [o.source for o in out]                                         # contexts give full-model tokens
        if i in affected:
            assert edge.stats.reconnects >= 2 and sources[-3:] == ["cloud"] * 3, (sources, edge.stats)
        else:
            assert sources == ["cloud"] * TOKENS and edge.stats.reconnects == 1, (sources, edge.stats)
