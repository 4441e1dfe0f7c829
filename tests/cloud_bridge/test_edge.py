"""The edge runner: exit rule and the KV of layers above an exit (deferred = exact, copy = approximate)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import ConfigError

from edgekit.cloud_bridge.cloud import CloudContext, batch_answers
from edgekit.cloud_bridge.edge import EdgeRunner, cloud_only_tokens
from edgekit.cloud_bridge.exits import SplitPlan
from edgekit.cloud_bridge.layers import LayerStack, full_forward


def _run(model, heads, threshold, kv_fill, n=30, prompt_text="Once upon a time"):
    """Generate greedily with the edge and an in-process cloud; returns tokens, sources, runner."""
    plan = SplitPlan((1, 2), model.config.n_layers)
    stack = LayerStack(model)
    runner = EdgeRunner(model, heads, plan, kv_fill, stack=stack)
    cloud = CloudContext(stack, plan.split, model.config.max_seq_len)
    prompt = model.tokenizer.encode(prompt_text, add_bos=True)
    tokens, sources = [], []
    step = runner.feed(prompt, threshold)
    for _ in range(n):
        if step.token is None:
            cloud.append(cloud.received, runner.boundary[cloud.received:step.position])
            cloud.append(step.position, step.boundary[None])
            token = batch_answers(stack, [(cloud, step.position, 0)])[0].token
            sources.append("cloud")
        else:
            token = step.token
            sources.append(f"exit{step.exit_layer}")
        tokens.append(token)
        step = runner.feed([token], threshold)
    return prompt, tokens, sources, runner, stack


def test_every_token_to_the_cloud_equals_cloud_only(bridge_model, bridge_heads):
    prompt, tokens, sources, _, stack = _run(bridge_model, bridge_heads, 2.0, "deferred")
    assert set(sources) == {"cloud"}
    assert tokens == cloud_only_tokens(stack, prompt, len(tokens))


def test_deferred_kv_is_exactly_the_full_forward(bridge_model, bridge_heads):
    prompt, tokens, sources, runner, stack = _run(bridge_model, bridge_heads, 0.3, "deferred")
    assert any(s.startswith("exit1") for s in sources), "the test needs early exits at layer 1"
    full = stack.new_cache()
    full_forward(stack, prompt + tokens, full)             # _run feeds every token it emits
    runner.flush()
    done = runner.complete
    assert done == len(prompt) + len(tokens)
    # every position the edge completed has the K/V and boundary state a full forward gives
    for layer in range(2):
        assert np.allclose(runner.cache.k[layer, :done], full.k[layer, :done], atol=1e-5, rtol=1e-5)
    h = stack.run_layers(stack.embed(prompt + tokens), 0, 2, np.arange(len(prompt) + len(tokens)),
                         stack.new_cache())
    assert np.allclose(runner.boundary[:done], h[:done], atol=1e-4, rtol=1e-4)


def test_pending_tokens_stay_contiguous_under_mixed_exits(bridge_model, bridge_heads):
    # thresholds near the confidence median mix exits at 1, 2 and cloud tokens: _join_pending asserts the order
    for threshold in (0.2, 0.4, 0.6):
        _, tokens, sources, runner, _ = _run(bridge_model, bridge_heads, threshold, "deferred", n=40)
        assert len(tokens) == 40
        assert all(p.reached in (1,) for p in runner.pending)


def test_per_exit_thresholds_decide_per_exit(bridge_model, bridge_heads):
    plan = SplitPlan((1, 2), bridge_model.config.n_layers)
    prompt = bridge_model.tokenizer.encode("Once upon a time", add_bos=True)
    same = [EdgeRunner(bridge_model, bridge_heads, plan).feed(prompt, t) for t in (0.4, {1: 0.4, 2: 0.4})]
    assert same[0].token == same[1].token and same[0].exit_layer == same[1].exit_layer
    never_first = EdgeRunner(bridge_model, bridge_heads, plan).feed(prompt, {1: 1.01, 2: 0.0})
    assert never_first.exit_layer == 2          # exit 1 can never fire; exit 2 always does


def test_state_copy_completes_every_boundary_at_once(bridge_model, bridge_heads):
    _, tokens, sources, runner, _ = _run(bridge_model, bridge_heads, 0.3, "copy")
    assert not runner.pending and runner.complete == runner.length


def test_runner_rejects_missing_heads_and_bad_kv_fill(bridge_model, bridge_heads):
    plan = SplitPlan((1, 3), bridge_model.config.n_layers)
    with pytest.raises(ConfigError, match="no trained exit head"):
        EdgeRunner(bridge_model, bridge_heads, plan)
    with pytest.raises(ConfigError, match="kv_fill"):
        EdgeRunner(bridge_model, bridge_heads, SplitPlan((1, 2), 4), kv_fill="guess")


def test_the_edge_path_imports_no_torch_and_no_server():
    import subprocess
    import sys

    code = ("import sys; import edgekit.cloud_bridge.session, edgekit.cloud_bridge.backend; "
            "print(sorted(m for m in ('torch', 'transformers', 'fastapi', 'uvicorn') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
