"""The soak against a real `edgekit bridge serve` child process: 100 concurrent sessions, bounded duration."""

from __future__ import annotations

import json
import os

import pytest

from edgekit.cloud_bridge.session import Emitted
from edgekit.cloud_bridge.soak import ServerProcess, SoakConfig, check_sequence, run_soak, server_errors

SOAK_SECONDS = float(os.environ.get("EDGEKIT_SOAK_SECONDS", "60"))


def test_check_sequence_names_gaps_duplicates_wrong_and_standalone_tokens():
    def out(positions, tokens, source="cloud"):
        return [Emitted(p, t, source, None, 1.0) for p, t in zip(positions, tokens)]

    assert check_sequence(out([4, 5, 6], [1, 2, 3]), 5, [1, 2, 3]) == []
    assert "not consecutive" in check_sequence(out([4, 5, 5], [1, 2, 2]), 5, [1, 2, 2])[0]    # duplicated
    assert "not consecutive" in check_sequence(out([4, 6], [1, 3]), 5, [1, 3])[0]              # lost
    assert "first difference at 1" in check_sequence(out([4, 5], [1, 9]), 5, [1, 2])[0]
    assert "expected 3" in check_sequence(out([4, 5], [1, 2]), 5, [1, 2, 3])[0]                # incomplete
    assert "standalone" in check_sequence(out([4], [1], "standalone"), 5, [1])[0]


@pytest.mark.slow
def test_soak_100_sessions_has_no_errors_and_complete_streams(bridge_model_path, bridge_model, bridge_heads):
    config = SoakConfig(sessions=100, seconds=SOAK_SECONDS, tokens_per_sequence=16, threshold=0.8)
    with ServerProcess(bridge_model_path) as server:
        report = run_soak(bridge_model, bridge_heads, server.url, server.token, config)
        counters = server_errors(server.metrics())
    assert report["errors"] == 0, report["error_samples"]
    assert report["sessions_with_sequences"] == 100            # every session finished at least one sequence
    assert report["tokens"] == 16 * report["sequences"]         # complete streams (duplicates/gaps are errors)
    assert report["cloud_tokens"] > 0 and report["edge_tokens"] > 0
    assert sum(counters.values()) == 0, counters


def test_soak_command_starts_its_own_server_and_reports(bridge_model_path, tmp_path):
    from tests.cli.test_cli import edgekit_cli

    result = edgekit_cli("bridge", "soak", bridge_model_path, "--sessions", "3", "--minutes", "0.1", "--tokens", "8",
                         "-o", tmp_path / "soak.json", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "soak.json").read_text())
    assert report["errors"] == 0 and report["server_errors"] == {}
    assert report["sessions_with_sequences"] == 3 and report["tokens"] == 8 * report["sequences"]
    assert report["token_ms"]["p50"] is not None and json.loads(result.stdout)["tokens"] == report["tokens"]
