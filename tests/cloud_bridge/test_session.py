"""Edge settings: the latency-aware threshold, validation, and secrets kept out of reprs."""

from __future__ import annotations

import pytest

from edgekit.errors import ConfigError

from edgekit.cloud_bridge.client import LinkConfig
from edgekit.cloud_bridge.server import ServerConfig
from edgekit.cloud_bridge.session import AdaptiveThreshold, BridgeConfig


def test_threshold_falls_as_the_cloud_gets_slower_or_busier():
    adaptive = AdaptiveThreshold(BridgeConfig(threshold=0.9, min_threshold=0.6, latency_budget_ms=40))
    assert adaptive.value == 0.9                      # nothing measured yet
    adaptive.observe(20.0, 0)
    assert adaptive.value == 0.9                      # within budget
    values = []
    for rtt in (50.0, 60.0, 80.0, 120.0, 400.0):
        adaptive.observe(rtt, 0)
        values.append(adaptive.value)
    assert values == sorted(values, reverse=True) and 0.6 <= values[-1] < 0.9   # EWMA: falls gradually
    busy = AdaptiveThreshold(BridgeConfig(threshold=0.9, min_threshold=0.6, latency_budget_ms=40))
    busy.observe(30.0, 3)                              # 30 ms x (1 + 3 queued) = 120 ms expected
    assert busy.value == pytest.approx(0.6)
    fixed = AdaptiveThreshold(BridgeConfig(threshold=0.9))
    fixed.observe(1000.0, 10)
    assert fixed.value == 0.9


def test_bad_settings_are_config_errors():
    for kwargs in ({"encoding": "bf16"}, {"threshold": -1}, {"url": "ws://x"}, {"timeout_s": 0},
                   {"top_k": 5000}):
        with pytest.raises(ConfigError):
            BridgeConfig(**kwargs)
    with pytest.raises(ConfigError, match="8 characters"):
        ServerConfig(token="short")


def test_tokens_never_appear_in_reprs():
    secret = "very-secret-token-42"
    for obj in (BridgeConfig(url="ws://127.0.0.1:1/v1/session", token=secret), ServerConfig(token=secret),
                LinkConfig("ws://127.0.0.1:1/v1/session", secret)):
        assert secret not in repr(obj)
