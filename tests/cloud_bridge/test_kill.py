"""Kill the cloud server (SIGKILL, a real `edgekit bridge serve` process) mid-answer and bring it back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from edgekit.cloud_bridge.exits import SplitPlan
from edgekit.cloud_bridge.serving import bind_socket
from edgekit.cloud_bridge.session import BridgeConfig, BridgeEdge

from tests.cloud_bridge.test_server import _assert_cloud_tokens_are_full_model_tokens

TOKEN = "kill-test-token-0123"


def _start_server(model_path, port) -> subprocess.Popen:
    env = {**os.environ, "EDGEKIT_BRIDGE_TOKEN": TOKEN}
    process = subprocess.Popen([sys.executable, "-m", "edgekit.cli.main", "bridge", "serve", str(model_path),
                                "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not come up")


@pytest.mark.slow
def test_kill_the_server_mid_answer_then_resync(bridge_model_path, bridge_model, bridge_heads):
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    server = _start_server(bridge_model_path, port)
    edge = BridgeEdge(bridge_model, bridge_heads, SplitPlan((1, 2), bridge_model.config.n_layers),
                      BridgeConfig(url=f"ws://127.0.0.1:{port}/v1/session", token=TOKEN, threshold=2.0,
                                   encoding="f32", reconnect_s=0.0, timeout_s=5.0))
    prompt = bridge_model.tokenizer.encode("Once upon a time", add_bos=True)
    try:
        out = [edge.feed(prompt)]
        for i in range(35):
            if i == 10:
                server.send_signal(signal.SIGKILL)       # mid-answer: the next hard token finds no cloud
                server.wait(timeout=10)
            if i == 20:
                server = _start_server(bridge_model_path, port)
            out.append(edge.feed([out[-1].token]))
    finally:
        edge.close()
        server.kill()
        server.wait(timeout=10)
    sources = [o.source for o in out]
    assert len(out) == 36
    assert sources[:11] == ["cloud"] * 11 and "standalone" in sources[11:21] and sources[-5:] == ["cloud"] * 5
    assert edge.stats.reconnects == 2
    _assert_cloud_tokens_are_full_model_tokens(bridge_model, prompt, out)   # the resynced context is right
