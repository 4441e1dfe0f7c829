"""`--backend bridge`: the registry entry and the Backend interface over a live cloud and standalone."""

from __future__ import annotations

import numpy as np

from edgekit.model.sampling import SamplingConfig
from edgekit.runtime import generate_tokens, open_backend
from edgekit.runtime.backend import backend_class

from edgekit.cloud_bridge.backend import BridgeBackend
from edgekit.cloud_bridge.edge import cloud_only_tokens
from edgekit.cloud_bridge.layers import LayerStack
from edgekit.cloud_bridge.server import ServerConfig
from edgekit.cloud_bridge.serving import BackgroundServer

TOKEN = "backend-test-token-1"


def test_registry_entry_and_live_cloud(bridge_model, monkeypatch):
    assert backend_class("bridge") is BridgeBackend
    prompt = bridge_model.tokenizer.encode("Once upon a time", add_bos=True)
    with BackgroundServer(bridge_model, ServerConfig(token=TOKEN)) as server:
        monkeypatch.setenv("EDGEKIT_BRIDGE_URL", server.ws_url)
        monkeypatch.setenv("EDGEKIT_BRIDGE_TOKEN", TOKEN)
        monkeypatch.setenv("EDGEKIT_BRIDGE_THRESHOLD", "2")
        monkeypatch.setenv("EDGEKIT_BRIDGE_ENCODING", "f32")
        backend = open_backend(bridge_model, "bridge")
        tokens = list(generate_tokens(backend, prompt, 16, SamplingConfig(temperature=0.0), stop_at_eos=False))
        assert backend.position == len(prompt) + 15
        backend.reset()
        again = list(generate_tokens(backend, prompt, 16, SamplingConfig(temperature=0.0), stop_at_eos=False))
        backend.close()
    assert tokens == again == cloud_only_tokens(LayerStack(bridge_model), prompt, 16)


def test_standalone_logits_are_the_deepest_exits(bridge_model, bridge_heads, monkeypatch):
    monkeypatch.delenv("EDGEKIT_BRIDGE_URL", raising=False)
    monkeypatch.setenv("EDGEKIT_BRIDGE_THRESHOLD", "2")
    backend = BridgeBackend(bridge_model)
    prompt = bridge_model.tokenizer.encode("The dog", add_bos=True)
    logits = backend.prefill(prompt)
    assert logits.shape == (1, bridge_model.config.vocab_size) and np.isfinite(logits).all()
    stack = LayerStack(bridge_model)
    h = stack.run_layers(stack.embed(prompt), 0, 2, np.arange(len(prompt)), stack.new_cache())
    assert np.array_equal(logits[0], bridge_heads[2].logits(h[-1:])[0])
    assert backend.decode(int(logits.argmax())).shape == (bridge_model.config.vocab_size,)
    backend.close()
