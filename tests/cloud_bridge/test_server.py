"""The cloud server and the edge client over real sockets on loopback (uvicorn + websockets, no mocks)."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from edgekit.cloud_bridge.edge import cloud_only_tokens
from edgekit.cloud_bridge.exits import SplitPlan
from edgekit.cloud_bridge.layers import LayerStack, full_forward
from edgekit.cloud_bridge.protocol import (CLOSE_BAD_FRAME, CLOSE_IDLE, CLOSE_MODEL_MISMATCH, CLOUD_FRAMES,
                                           encode_rows, model_fingerprint, pack_frame, unpack_frame)
from edgekit.cloud_bridge.server import ServerConfig
from edgekit.cloud_bridge.serving import BackgroundServer
from edgekit.cloud_bridge.session import BridgeConfig, BridgeEdge

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(bridge_model):
    with BackgroundServer(bridge_model, ServerConfig(token=TOKEN)) as running:
        yield running


def _edge(model, heads, url, **options) -> BridgeEdge:
    return BridgeEdge(model, heads, SplitPlan((1, 2), model.config.n_layers),
                      BridgeConfig(url=url, token=options.pop("token", TOKEN), **options))


def _prompt(model, text="Once upon a time"):
    return model.tokenizer.encode(text, add_bos=True)


def _open_raw(server, model, **overrides):
    ws = connect(server.ws_url, additional_headers=AUTH).__enter__()     # websockets >= 17 wants a context
    fields = {"fingerprint": model_fingerprint(model), "split": 2, "context": 256, "encoding": "f32", **overrides}
    ws.send(pack_frame("open", **fields))
    return ws, unpack_frame(ws.recv(timeout=10), CLOUD_FRAMES)


def test_forced_cloud_split_equals_cloud_only(server, bridge_model, bridge_heads):
    prompt = _prompt(bridge_model)
    baseline = cloud_only_tokens(LayerStack(bridge_model), prompt, 24)
    for encoding in ("f32", "f16", "int8"):
        edge = _edge(bridge_model, bridge_heads, server.ws_url, threshold=2.0, encoding=encoding)
        out = list(edge.generate(prompt, 24))
        edge.close()
        assert {o.source for o in out} == {"cloud"}
        tokens = [o.token for o in out]
        if encoding == "f32":
            assert tokens == baseline         # the split is exact: same kernels, same states
        else:                                 # rounded boundary states: the greedy path may only rarely differ
            assert np.mean(np.array(tokens) == np.array(baseline)) >= 0.9


def test_mixed_edge_and_cloud_tokens_follow_the_full_model_on_cloud_tokens(server, bridge_model, bridge_heads):
    prompt = _prompt(bridge_model, "The little dog")
    edge = _edge(bridge_model, bridge_heads, server.ws_url, threshold=0.87, encoding="f32", top_k=5)  # heads: ~0.86-0.9
    out = list(edge.generate(prompt, 30))
    edge.close()
    assert {"edge", "cloud"} <= {o.source for o in out}
    _assert_cloud_tokens_are_full_model_tokens(bridge_model, prompt, out)
    cloud = [o for o in out if o.source == "cloud"]
    assert all(len(o.top_ids) == 5 and o.top_ids[0] == o.token for o in cloud)
    assert all(a >= b for o in cloud for a, b in zip(o.top_logits, o.top_logits[1:]))


def _assert_cloud_tokens_are_full_model_tokens(model, prompt, out):
    """Every cloud answer is the full model's greedy token for the prefix actually generated."""
    tokens = [o.token for o in out]
    logits = full_forward(LayerStack(model), prompt + tokens)
    expected = logits[len(prompt) - 1: len(prompt) - 1 + len(tokens)].argmax(axis=-1)
    for i, o in enumerate(out):
        assert o.position == len(prompt) - 1 + i                      # no lost or duplicated positions
        if o.source == "cloud":
            assert o.token == expected[i], f"cloud token {i} disagrees with the full model"


def test_http_control_plane_needs_the_token(server):
    with httpx.Client(base_url=server.http_url, timeout=10) as http:
        assert http.get("/v1/health").json()["status"] == "ok"
        for method, path in (("GET", "/v1/sessions"), ("GET", "/metrics"), ("DELETE", "/v1/sessions/nope")):
            assert http.request(method, path).status_code == 401
            assert http.request(method, path, headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        assert http.get("/v1/sessions", headers=AUTH).status_code == 200
        assert http.delete("/v1/sessions/nope", headers=AUTH).status_code == 404
        metrics = http.get("/metrics", headers=AUTH).text
        assert "edgekit_bridge_request_seconds_bucket" in metrics and "edgekit_bridge_queue_depth" in metrics
        schema = http.get("/openapi.json").json()
        assert {"/v1/health", "/v1/sessions", "/v1/sessions/{session_id}", "/metrics"} <= set(schema["paths"])


def test_websocket_without_a_token_gets_401(server, bridge_model, bridge_heads):
    for headers in ({}, {"Authorization": "Bearer wrong-token"}):
        with pytest.raises(InvalidStatus) as info:
            connect(server.ws_url, additional_headers=headers)
        assert info.value.response.status_code == 401
    edge = _edge(bridge_model, bridge_heads, server.ws_url, threshold=2.0, token="wrong-token-123")
    assert {o.source for o in edge.generate(_prompt(bridge_model), 4)} == {"standalone"}


def test_malformed_frame_closes_only_that_session(server, bridge_model):
    good, opened = _open_raw(server, bridge_model)
    assert opened["t"] == "opened"
    for garbage in (b"\xc1 not msgpack", pack_frame("hard", id=1), b"\x93\x01\x02\x03",
                    pack_frame("upload", start=0, n=3, data=b"short"), "a text frame",
                    pack_frame("open", fingerprint="x", split=2, context=8, encoding="f32"),   # open twice
                    pack_frame("upload", start=0, n=1, data=b"\x00\x00\xc0\x7f" * bridge_model.config.dim)):  # NaN
        bad, _ = _open_raw(server, bridge_model)
        bad.send(garbage)
        error = unpack_frame(bad.recv(timeout=10), CLOUD_FRAMES)
        assert error["t"] == "error" and error["code"] == "bad_frame"
        with pytest.raises(ConnectionClosed) as closed:
            bad.recv(timeout=10)
        assert closed.value.rcvd.code == CLOSE_BAD_FRAME
    # the other session is still served
    stack = LayerStack(bridge_model)
    row = stack.run_layers(stack.embed([1]), 0, 2, np.arange(1), stack.new_cache())
    good.send(pack_frame("hard", id=7, pos=0, top_k=0, **encode_rows(row, "f32")))
    reply = unpack_frame(good.recv(timeout=10), CLOUD_FRAMES)
    assert reply["t"] == "token" and reply["id"] == 7
    assert reply["token"] == int(full_forward(stack, [1])[-1].argmax())
    good.close()


def test_context_mismatch_is_refused_and_reported(server, bridge_model):
    ws, _ = _open_raw(server, bridge_model)
    row = np.zeros((1, bridge_model.config.dim), np.float32)
    ws.send(pack_frame("hard", id=1, pos=5, top_k=0, **encode_rows(row, "f32")))
    reply = unpack_frame(ws.recv(timeout=10), CLOUD_FRAMES)
    assert reply == {**reply, "t": "mismatch", "id": 1, "have": 0}
    ws.send(pack_frame("upload", start=3, n=1, **encode_rows(row, "f32")))
    assert unpack_frame(ws.recv(timeout=10), CLOUD_FRAMES)["have"] == 0
    ws.close()


def test_model_mismatch_is_refused(server, bridge_model):
    ws, reply = _open_raw(server, bridge_model, fingerprint="someone-else")
    assert reply["t"] == "error" and reply["code"] == "model_mismatch"
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd.code == CLOSE_MODEL_MISMATCH


def test_lost_cloud_session_resyncs_without_lost_tokens(server, bridge_model, bridge_heads):
    prompt = _prompt(bridge_model)
    edge = _edge(bridge_model, bridge_heads, server.ws_url, threshold=2.0, encoding="f32", reconnect_s=0.0)
    out = [edge.feed(prompt)]
    for i in range(29):
        if i == 12:   # the operator (or a dead replica) drops the session: the cloud context is gone
            for session in httpx.get(server.http_url + "/v1/sessions", headers=AUTH).json():
                httpx.delete(f"{server.http_url}/v1/sessions/{session['id']}", headers=AUTH)
        out.append(edge.feed([out[-1].token]))
    edge.close()
    assert edge.stats.reconnects >= 2
    _assert_cloud_tokens_are_full_model_tokens(bridge_model, prompt, out)


def test_dropped_connection_resumes_the_cloud_session_without_a_full_re_upload(server, bridge_model, bridge_heads):
    prompt = _prompt(bridge_model)
    edge = _edge(bridge_model, bridge_heads, server.ws_url, threshold=2.0, encoding="f32", reconnect_s=0.0)
    out = [edge.feed(prompt)]
    for i in range(14):
        if i == 6:
            first = edge.link.session
            edge.link.ws.socket.shutdown(socket.SHUT_RDWR)     # the network drops: no close frame
        if i == 10:
            assert edge.link.session == first and edge.link.have > len(prompt)   # the same cloud context
        out.append(edge.feed([out[-1].token]))
    edge.close()
    assert edge.stats.reconnects == 2 and edge.stats.resumed == 1
    _assert_cloud_tokens_are_full_model_tokens(bridge_model, prompt, out)


def test_resume_s_zero_rebuilds_a_dropped_connection_by_re_upload(bridge_model, bridge_heads):
    prompt = _prompt(bridge_model)
    with BackgroundServer(bridge_model, ServerConfig(token=TOKEN, resume_s=0.0)) as no_resume:
        edge = _edge(bridge_model, bridge_heads, no_resume.ws_url, threshold=2.0, encoding="f32", reconnect_s=0.0)
        out = [edge.feed(prompt)]
        for i in range(10):
            if i == 5:
                edge.link.ws.socket.shutdown(socket.SHUT_RDWR)     # no close frame, but the server keeps nothing
            out.append(edge.feed([out[-1].token]))
        edge.close()
    assert edge.stats.reconnects == 2 and edge.stats.resumed == 0
    _assert_cloud_tokens_are_full_model_tokens(bridge_model, prompt, out)


def test_concurrent_sessions_are_isolated(server, bridge_model, bridge_heads):
    """A bounded soak: 8 sessions at once, each must produce exactly what it produces alone."""
    prompts = [_prompt(bridge_model, text) for text in ("Once upon a time", "The cat", "A big red ball",
                                                         "Lily and Tom", "One day", "The sun", "Sam had", "Mom")]

    def run(prompt):
        edge = _edge(bridge_model, bridge_heads, server.ws_url, threshold=0.6, encoding="f32")
        out = [o.token for o in edge.generate(prompt, 20)]
        edge.close()
        return out, edge.stats

    alone = [run(p)[0] for p in prompts]
    results: dict[int, tuple] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, run(prompts[i]))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [results[i][0] for i in range(8)] == alone
    assert all(stats.standalone == 0 for _, stats in results.values())


def test_idle_sessions_expire(bridge_model):
    with BackgroundServer(bridge_model, ServerConfig(token=TOKEN, idle_timeout_s=0.3)) as short:
        ws, _ = _open_raw(short, bridge_model)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == CLOSE_IDLE
        assert httpx.get(short.http_url + "/v1/sessions", headers=AUTH).json() == []


def test_limits_rate_and_sessions(bridge_model, bridge_heads):
    config = ServerConfig(token=TOKEN, max_sessions=1, max_requests_per_second=1.0)
    with BackgroundServer(bridge_model, config) as limited:
        edge = _edge(bridge_model, bridge_heads, limited.ws_url, threshold=2.0)
        out = list(edge.generate(_prompt(bridge_model), 4))
        assert out[0].source == "cloud" and "standalone" in {o.source for o in out[1:]}   # rate limited
        _, reply = _open_raw(limited, bridge_model)                                         # one session only
        assert reply["t"] == "error" and reply["code"] == "busy"
        edge.close()


def test_graceful_shutdown_closes_sessions_and_the_edge_goes_standalone(bridge_model, bridge_heads):
    running = BackgroundServer(bridge_model, ServerConfig(token=TOKEN)).start()
    edge = _edge(bridge_model, bridge_heads, running.ws_url, threshold=2.0, reconnect_s=0.0)
    out = [edge.feed(_prompt(bridge_model))]
    running.stop()
    for _ in range(3):
        out.append(edge.feed([out[-1].token]))
    edge.close()
    assert out[0].source == "cloud" and [o.source for o in out[1:]] == ["standalone"] * 3


def test_cloud_that_lost_its_context_is_resynced_by_re_upload(server, bridge_model, bridge_heads):
    """A server that silently lost a session's state (a restarted replica) answers "mismatch": re-upload."""
    prompt = _prompt(bridge_model)
    edge = _edge(bridge_model, bridge_heads, server.ws_url, threshold=2.0, encoding="f32")
    out = [edge.feed(prompt)]
    for i in range(12):
        if i == 6:
            for session in list(server.bridge.sessions.values()):
                if session.context.received > 0:         # forget everything, keep the connection
                    session.context.received = session.context.processed = 0
        out.append(edge.feed([out[-1].token]))
    edge.close()
    assert edge.stats.resyncs >= 1 and edge.stats.reconnects == 1
    _assert_cloud_tokens_are_full_model_tokens(bridge_model, prompt, out)


def test_control_plane_fuzz_finds_no_server_errors(server):
    """Random methods, paths, session ids and auth headers (schemathesis-style): never a 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    paths = st.sampled_from(["/v1/health", "/v1/sessions", "/v1/sessions/", "/metrics", "/openapi.json",
                             "/v1/session"])
    ids = st.text(alphabet="abcdef0123456789-%._~", max_size=40)
    headers = st.one_of(st.just({}), st.just(AUTH),
                        st.text(alphabet="abcXYZ 012=+/", max_size=30)
                        .map(lambda t: {"Authorization": t.strip() or "x"}))   # h11 refuses padded values

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(method=st.sampled_from(["GET", "DELETE", "POST", "PUT"]), path=paths, suffix=ids, header=headers)
    def probe(method, path, suffix, header):
        url = path + (suffix if path.endswith("/") else "")
        response = http.request(method, url, headers=header)
        assert response.status_code < 500, (method, url, response.status_code, response.text[:200])

    with httpx.Client(base_url=server.http_url, timeout=10) as http:
        probe()
