"""Split plan, exit-head training by distillation, and heads stored with the packed model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.errors import ConfigError, CorruptCheckpointError, UnsupportedModelError
from edgekit.formats import QuantizedTensor
from edgekit.model import load

from edgekit.cloud_bridge.exits import SplitPlan, confidence, load_exit_heads
from edgekit.cloud_bridge.train import ExitTrainConfig, train_exits

from tests.cloud_bridge.conftest import DEFAULT_MODEL


def test_split_plan_validates():
    assert SplitPlan.parse("2,4", 5).split == 4
    for text, layers in (("4,2", 5), ("0,2", 5), ("2,5", 5), ("", 5), ("2,x", 5), ("2,2", 5)):
        with pytest.raises(ConfigError):
            SplitPlan.parse(text, layers)


def test_confidence_is_max_softmax():
    logits = np.array([[0.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    assert confidence(logits) == pytest.approx([0.5, 1 / (1 + np.exp(-10))], rel=1e-6)


def test_heads_round_trip_packed_with_the_model(bridge_model_path, bridge_model, bridge_heads):
    assert sorted(bridge_heads) == [1, 2]
    head = bridge_heads[2]
    assert isinstance(head.output, QuantizedTensor) and head.output.format == "ek_i8"  # packed model, packed head
    assert head.output.shape == (bridge_model.config.vocab_size, bridge_model.config.dim)
    # the packed model itself is untouched: it loads and runs like the original
    original = load(DEFAULT_MODEL)
    for name, tensor in original.tensors.items():
        got = bridge_model.tensors[name]
        assert np.array_equal(getattr(got, "data", got), getattr(tensor, "data", tensor))
    report = json.loads(bridge_model.metadata["bridge_exits"])["report"]
    assert report["exits"] == [1, 2] and report["split"] == 2


def test_distillation_improves_agreement_over_the_copied_final_head(bridge_model_path):
    report = json.loads(load(bridge_model_path).metadata["bridge_exits"])["report"]
    for before, after in zip(report["untrained"]["per_exit"], report["trained"]["per_exit"]):
        assert after["exit"] == before["exit"] and after["threshold"] == before["threshold"]
        assert 0.0 <= after["coverage"] <= 1.0
    untrained = {(r["exit"]): r["agreement_all"] for r in report["untrained"]["per_exit"]}
    trained = {(r["exit"]): r["agreement_all"] for r in report["trained"]["per_exit"]}
    assert all(trained[layer] > untrained[layer] for layer in trained)
    shares = [row["edge_share"] for row in report["trained"]["cascade"]]
    assert shares == sorted(shares, reverse=True)       # a higher threshold never answers more at the edge


def test_training_on_a_shared_checkpoint(models, tinystories):
    model = load(models / "stories260K.bin")
    text = tinystories.read_text()
    heads, report = train_exits(model, text, ExitTrainConfig(exits=(2, 4), max_tokens=512, steps=20))
    assert sorted(heads) == [2, 4] and not isinstance(heads[2].output, QuantizedTensor)  # float model, float head
    assert report["trained"]["tokens"] > 0 and set(report["train_kl"]) == {"2", "4"}


def test_files_without_heads_and_damaged_heads_are_typed_errors(bridge_model_path, tmp_path, models):
    with pytest.raises(UnsupportedModelError, match="no early-exit heads"):
        load_exit_heads(load(DEFAULT_MODEL))
    with pytest.raises(UnsupportedModelError, match="only .edgekit"):
        load_exit_heads(load(models / "stories260K.bin"))
    raw = bytearray(bridge_model_path.read_bytes())
    damaged = tmp_path / "damaged.edgekit"
    raw[-10] ^= 0xFF     # the last bytes are tensor data (aux entries sort last: "__aux__" < lower-case names?)
    damaged.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError):
        load_exit_heads(load(damaged)) if _loads(damaged) else load(damaged)


def _loads(path) -> bool:
    try:
        load(path)
        return True
    except CorruptCheckpointError:
        return False


def test_train_config_rejects_bad_values():
    with pytest.raises(ConfigError):
        ExitTrainConfig(exits=(1,), holdout=1.5)
    with pytest.raises(ConfigError):
        ExitTrainConfig(exits=(1,), thresholds=(0.0,))
