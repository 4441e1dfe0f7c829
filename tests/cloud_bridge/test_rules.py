"""Exit rules (max-softmax, margin, learned): scores, fitting, storage with the exits, use on the edge."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import ConfigError
from edgekit.model import load

from edgekit.cloud_bridge.edge import EdgeRunner
from edgekit.cloud_bridge.exits import (SplitPlan, calibrated_thresholds, load_exit_heads, load_exit_rule,
                                        save_with_exits)
from edgekit.cloud_bridge.rules import Learned, Margin, MaxSoftmax, features, rule_from_json
from edgekit.cloud_bridge.session import BridgeConfig, BridgeEdge
from edgekit.cloud_bridge.train import ExitTrainConfig, train_exits

from edgekit.quantize.corpus import generate_corpus

from tests.cloud_bridge.conftest import DEFAULT_MODEL

LOGITS = np.log(np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]))


def test_max_softmax_and_margin_scores():
    assert MaxSoftmax().score(1, {1: LOGITS}) == pytest.approx([0.7, 0.4])
    assert Margin().score(1, {1: LOGITS}) == pytest.approx([0.5, 0.05])


def test_features_see_the_agreement_of_the_exit_below():
    lower = np.log(np.array([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1]]))       # agrees on row 0, not on row 1
    x = features(2, {1: lower, 2: LOGITS})
    assert x.shape == (2, 8)
    assert list(x[:, 6]) == [1.0, 0.0] and x[:, 7] == pytest.approx([0.7, 0.35])   # p_2(argmax of exit 1)
    assert features(1, {1: lower}).shape == (2, 5)


def test_learned_rule_fits_separable_rows_and_round_trips_through_json():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    correct = x[:, 0] + 0.1 * rng.normal(size=400) > 0
    rule = Learned.fit({1: x}, {1: correct})
    mean, std, w = rule.weights[1]
    p = 1 / (1 + np.exp(-(((x - mean) / std) @ w[1:] + w[0])))
    assert ((p > 0.5) == correct).mean() > 0.95
    again = rule_from_json(rule.to_json())
    assert all(np.array_equal(a, b) for a, b in zip(again.weights[1], rule.weights[1]))
    with pytest.raises(ConfigError, match="not one of"):
        rule_from_json({"name": "vibes"})
    assert isinstance(rule_from_json(None), MaxSoftmax)       # files without a rule were calibrated on max-softmax


def test_learned_rule_is_stored_with_the_exits_and_used_by_the_edge(tmp_path):
    model = load(DEFAULT_MODEL)
    config = ExitTrainConfig(exits=(1, 2), max_tokens=768, steps=20, seq_len=128, rule="learned")
    heads, report = train_exits(model, generate_corpus(1, 100000, 12), config)   # 2 held-out documents: fit, calibrate
    assert report["rule"]["name"] == "learned" and report["rule_fit_documents"] >= 1
    path = save_with_exits(model, heads, tmp_path / "learned.edgekit", report)
    loaded = load(path)
    rule, stored = load_exit_rule(loaded), load_exit_heads(loaded)
    assert isinstance(rule, Learned) and sorted(rule.weights) == [1, 2]
    plan = SplitPlan((1, 2), model.config.n_layers)
    runner = EdgeRunner(loaded, stored, plan)
    assert isinstance(runner.rule, Learned)                     # the stored rule is the edge's default
    prompt = model.tokenizer.encode("Once upon a time", add_bos=True)
    step = runner.feed(prompt, 2.0)                             # no exit answers: the deepest exit's score
    boundary = runner.stack.run_layers(runner.stack.embed(prompt), 0, 1, np.arange(len(prompt)),
                                       runner.stack.new_cache())
    exit1 = stored[1].logits(boundary[-1:])
    exit2 = stored[2].logits(step.boundary[None])
    assert step.confidence == pytest.approx(float(rule.score(2, {1: exit1, 2: exit2})[0]), rel=1e-5)


def test_the_edge_uses_the_calibrated_thresholds_when_asked(bridge_model, bridge_heads):
    plan = SplitPlan((1, 2), bridge_model.config.n_layers)
    calibrated = calibrated_thresholds(bridge_heads)
    assert calibrated is not None
    edge = BridgeEdge(bridge_model, bridge_heads, plan, BridgeConfig(threshold=1.0, calibrated=True))
    assert edge.exit_thresholds == calibrated and edge._exit_thresholds() == calibrated
    fixed = BridgeEdge(bridge_model, bridge_heads, plan, BridgeConfig(threshold=0.8))
    assert fixed.exit_thresholds is None and fixed._exit_thresholds() == 0.8


def test_the_latency_drop_never_raises_a_calibrated_threshold(bridge_model, bridge_heads):
    plan = SplitPlan((1, 2), bridge_model.config.n_layers)
    config = BridgeConfig(threshold=1.0, exit_thresholds={1: 0.3, 2: 0.9}, min_threshold=0.5, latency_budget_ms=10)
    edge = BridgeEdge(bridge_model, bridge_heads, plan, config)
    edge.threshold.observe(1000.0, 0)                          # a very slow cloud: the full drop
    assert edge._exit_thresholds() == {1: 0.3, 2: pytest.approx(0.5)}
