"""`edgekit bridge ...` and `edgekit run --backend bridge`, run as a user would (subprocesses)."""

from __future__ import annotations

import json

import pytest

from edgekit.cloud_bridge.server import ServerConfig
from edgekit.cloud_bridge.serving import BackgroundServer

from tests.cli.test_cli import edgekit_cli

TOKEN = "cli-test-token-0123"


@pytest.mark.slow
def test_train_exits_on_a_shared_checkpoint_writes_heads_and_reports(models, tinystories, tmp_path):
    out = tmp_path / "stories-exits.edgekit"
    result = edgekit_cli("bridge", "train-exits", models / "stories260K.bin", "--text", tinystories, "--exits", "2,4",
                         "-o", out, "--max-tokens", "768", "--steps", "20", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["exits"] == [2, 4] and report["split"] == 4
    assert {row["exit"] for row in report["trained"]["per_exit"]} == {2, 4}
    run = edgekit_cli("bridge", "run", out, "-n", "12", "-p", "Once upon a time")    # no --url: standalone
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Once upon a time") and "standalone" in run.stderr
    # new thresholds for the same heads from the same held-out rows, without training again
    recal = tmp_path / "stories-recal.edgekit"
    result = edgekit_cli("bridge", "calibrate-exits", out, "--text", tinystories, "--target-agreement", "0.6",
                         "--confidence", "0.95", "--curve", "0.6,0.6@0.95", "-o", recal, "--json")
    assert result.returncode == 0, result.stderr
    again = json.loads(result.stdout)
    assert again["heldout_tokens"] == report["heldout_tokens"] and again["calibration_confidence"] == 0.95
    assert [(r["target"], r["confidence"]) for r in again["calibration_curve"]] == [(0.6, None), (0.6, 0.95)]
    assert again["calibration_curve"][1]["thresholds"] == again["trained"]["calibrated"]["threshold"]
    from edgekit.cloud_bridge.exits import calibrated_thresholds, load_exit_heads
    from edgekit.model import load

    stored = calibrated_thresholds(load_exit_heads(load(recal)))
    assert {str(l): t for l, t in stored.items()} == again["trained"]["calibrated"]["threshold"]


def test_bad_exits_and_missing_token_are_one_line_errors(tmp_path):
    result = edgekit_cli("bridge", "train-exits", "edgekit/data/default.edgekit", "--text", "README.md",
                         "--exits", "3,1", "-o", tmp_path / "x.edgekit")
    assert result.returncode == 1 and "ascending" in result.stderr and "Traceback" not in result.stderr
    result = edgekit_cli("bridge", "train-exits", "edgekit/data/default.edgekit", "--text", "README.md",
                         "--exits", "1,2", "--curve", "0.99@high", "-o", tmp_path / "x.edgekit")
    assert result.returncode == 1 and "--curve entry '0.99@high'" in result.stderr and "Traceback" not in result.stderr
    result = edgekit_cli("bridge", "serve", "edgekit/data/default.edgekit", env={"EDGEKIT_BRIDGE_TOKEN": ""})
    assert result.returncode == 1 and "token" in result.stderr
    result = edgekit_cli("run", "edgekit/data/default.edgekit", "--backend", "bridge", "-n", "3")
    assert result.returncode == 1 and "no early-exit heads" in result.stderr and "train-exits" in result.stderr


def test_run_with_backend_bridge_against_a_live_server(bridge_model, bridge_model_path):
    with BackgroundServer(bridge_model, ServerConfig(token=TOKEN)) as server:
        env = {"EDGEKIT_BRIDGE_URL": server.ws_url, "EDGEKIT_BRIDGE_TOKEN": TOKEN, "EDGEKIT_BRIDGE_THRESHOLD": "2"}
        result = edgekit_cli("run", bridge_model_path, "--backend", "bridge", "-n", "10", "-p", "Once upon a time",
                             env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Once upon a time") and "bridge: prefill" in result.stderr
        bridged = edgekit_cli("bridge", "run", bridge_model_path, "--url", server.ws_url, "--threshold", "2", "-n",
                              "10", "-p", "Once upon a time", env={"EDGEKIT_BRIDGE_TOKEN": TOKEN})
        assert bridged.returncode == 0, bridged.stderr
        assert "cloud 10" in bridged.stderr
        assert bridged.stdout.strip() == result.stdout.strip()       # same greedy text both ways
        calibrated = edgekit_cli("bridge", "run", bridge_model_path, "--url", server.ws_url, "-n", "6", "-p",
                                 "Once upon a time", env={"EDGEKIT_BRIDGE_TOKEN": TOKEN})
        assert calibrated.returncode == 0, calibrated.stderr
        thresholds = json.loads(bridge_model.metadata["bridge_exits"])["thresholds"]   # the default: stored ones
        assert "exit rule max-softmax, thresholds calibrated 1: " + f"{thresholds['1']:g}" in calibrated.stderr
