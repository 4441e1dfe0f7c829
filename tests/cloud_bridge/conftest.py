"""Fixtures of the bridge tests: the built-in model with small trained exit heads, written once per run."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.model import load
from edgekit.quantize.corpus import generate_corpus

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "edgekit" / "data" / "default.edgekit"
TEXT = generate_corpus(1, 100000, 6)     # six stories of the built-in model's own corpus (not its training part)


@pytest.fixture(scope="session")
def bridge_model_path(tmp_path_factory) -> Path:
    """default.edgekit (4 layers) with exit heads after blocks 1 and 2, trained briefly on generated stories."""
    from edgekit.cloud_bridge.exits import save_with_exits
    from edgekit.cloud_bridge.train import ExitTrainConfig, train_exits

    model = load(DEFAULT_MODEL)
    heads, report = train_exits(model, TEXT, ExitTrainConfig(exits=(1, 2), max_tokens=768, steps=100, seq_len=128))
    return save_with_exits(model, heads, tmp_path_factory.mktemp("bridge") / "default-exits.edgekit", report)


@pytest.fixture(scope="session")
def bridge_model(bridge_model_path):
    return load(bridge_model_path)


@pytest.fixture(scope="session")
def bridge_heads(bridge_model):
    from edgekit.cloud_bridge.exits import load_exit_heads

    return load_exit_heads(bridge_model)
