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


def test_calibration_keeps_the_target_agreement_and_takes_the_most_tokens():
    from edgekit.cloud_bridge.train import calibrate_thresholds, cascade_row

    rng = np.random.default_rng(0)
    n = 4000
    teacher = rng.integers(0, 50, n)
    conf, top1 = {}, {}
    for layer, skill in ((1, 0.6), (2, 0.9)):              # confident tokens are more often right
        conf[layer] = rng.uniform(0.2, 1.0, n)
        right = rng.uniform(size=n) < np.minimum(1.0, skill * conf[layer] + 0.15)
        top1[layer] = np.where(right, teacher, (teacher + 1) % 50)
    chosen = calibrate_thresholds(conf, top1, teacher, 0.99)
    row = cascade_row(conf, top1, teacher, chosen)
    assert row["agreement"] >= 0.99
    # no single step of any exit's threshold to the next lower candidate keeps the target with more tokens
    for layer in chosen:
        lower = {**chosen, layer: round(chosen[layer] - 0.005, 3)}
        looser = cascade_row(conf, top1, teacher, lower)
        assert looser["agreement"] < 0.99 or looser["edge_share"] <= row["edge_share"]
    uniform = max((cascade_row(conf, top1, teacher, t) for t in np.arange(0.3, 1.0, 0.005)
                   if cascade_row(conf, top1, teacher, t)["agreement"] >= 0.99), key=lambda r: r["edge_share"])
    assert row["edge_share"] >= uniform["edge_share"]       # per-exit thresholds never lose to one shared one


def test_binomial_upper_bound_is_the_exact_clopper_pearson_bound():
    from math import comb

    from edgekit.cloud_bridge.train import binomial_upper_bound

    assert binomial_upper_bound(0, 400, 0.95) == pytest.approx(1 - 0.05 ** (1 / 400))   # closed form at 0 errors
    assert binomial_upper_bound(7, 7, 0.95) == 1.0
    for errors, n in ((1, 20), (3, 50), (12, 300)):
        p = binomial_upper_bound(errors, n, 0.95)
        cdf = sum(comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(errors + 1))
        assert cdf == pytest.approx(0.05, abs=1e-9) and p > errors / n     # P(X <= errors | p) = 1 - confidence
    bounds = [binomial_upper_bound(k, 1000, 0.95) for k in range(6)]
    assert bounds == sorted(bounds) and binomial_upper_bound(5, 1000, 0.99) > bounds[5]
    with pytest.raises(ConfigError):
        binomial_upper_bound(5, 4, 0.95)


def test_calibration_with_a_confidence_bound_picks_the_known_threshold():
    """One exit, 400 tokens with scores (i + 0.04) / 400, so candidate threshold j / 400 answers exactly
    tokens i >= j; tokens i < 80 are wrong. At 99% the plain calibration may take 4 wrong tokens (j = 76:
    threshold 0.19, agreement exactly 99%); with the 95% bound even 1 wrong token in 400 fails (bound
    1.18% > 1%) while 0 passes (0.75%), so the threshold is j = 80: 0.2."""
    from edgekit.cloud_bridge.train import binomial_upper_bound, calibrate_thresholds, calibration_curve, cascade_row

    n = 400
    teacher = np.zeros(n, dtype=np.int64)
    conf = {1: (np.arange(n) + 0.04) / n}
    top1 = {1: np.where(np.arange(n) < 80, 1, 0)}
    assert calibrate_thresholds(conf, top1, teacher, 0.99) == {1: 0.19}
    assert cascade_row(conf, top1, teacher, {1: 0.19})["agreement"] == 0.99
    assert binomial_upper_bound(1, n, 0.95) > 0.01 > binomial_upper_bound(0, n, 0.95)
    assert calibrate_thresholds(conf, top1, teacher, 0.99, confidence=0.95) == {1: 0.2}
    curve = calibration_curve((conf, top1, teacher), (conf, top1, teacher), [(0.99, None), (0.99, 0.95), (0.995, None)])
    assert [r["thresholds"]["1"] for r in curve] == [0.19, 0.2, 0.195]          # 0.995: 2 wrong tokens allowed
    assert [r["test"]["edge_share"] for r in curve] == [0.81, 0.8, 0.805]
    assert curve[1]["heldout"]["agreement"] == 1.0 and curve[1]["confidence"] == 0.95
    with pytest.raises(ConfigError, match="confidence"):
        ExitTrainConfig(exits=(1,), calibration_confidence=1.0)
    with pytest.raises(ConfigError, match="curve"):
        ExitTrainConfig(exits=(1,), curve=((0.99, 1.5),))


def test_adapter_heads_and_calibrated_thresholds_round_trip(tmp_path):
    from edgekit.cloud_bridge.exits import calibrated_thresholds, save_with_exits
    from edgekit.cloud_bridge.train import split_text

    from tests.cloud_bridge.conftest import TEXT

    train_docs, held_docs = split_text(TEXT, 0.2)
    assert len(train_docs) == 5 and len(held_docs) == 1      # whole documents are held out, never tokens
    model = load(DEFAULT_MODEL)
    config = ExitTrainConfig(exits=(1, 2), max_tokens=512, steps=10, seq_len=128, adapter_hidden=16,
                             curve=((0.99, None), (0.995, None), (0.99, 0.95)))
    heads, report = train_exits(model, TEXT, config, test_text=TEXT)
    assert heads[1].adapter is not None and heads[1].adapter.up.shape == (16, model.config.dim)
    assert report["trained"]["calibrated"]["agreement"] >= 0.99 + config.calibration_margin
    assert "calibrated" in report["test"]
    curve = report["calibration_curve"]        # stricter settings keep their held-out agreement, take fewer tokens
    assert [(r["target"], r["confidence"]) for r in curve] == list(config.curve)
    assert all(r["heldout"]["agreement"] >= r["target"] for r in curve) and all("test" in r for r in curve)
    assert curve[1]["heldout"]["edge_share"] <= curve[0]["heldout"]["edge_share"] >= curve[2]["heldout"]["edge_share"]
    path = save_with_exits(model, heads, tmp_path / "adapter.edgekit", report)
    loaded = load_exit_heads(load(path))
    assert calibrated_thresholds(loaded) == {l: h.threshold for l, h in heads.items()}
    # recalibration rebuilds the same held-out rows: the training settings give the same thresholds back,
    # a confidence bound gives thresholds whose held-out agreement bound reaches the target
    from dataclasses import replace

    from edgekit.cloud_bridge.rules import MaxSoftmax
    from edgekit.cloud_bridge.train import NEVER_EXIT, agreement_bound, recalibrate_exits

    again = recalibrate_exits(model, loaded, MaxSoftmax(), TEXT, config)
    assert calibrated_thresholds(loaded) == calibrated_thresholds(heads)
    assert again["trained"]["calibrated"] == report["trained"]["calibrated"]
    bounded = recalibrate_exits(model, loaded, MaxSoftmax(), TEXT, replace(config, calibration_confidence=0.95), TEXT)
    n = bounded["heldout_tokens"]
    assert bounded["calibrated_to"] == 0.99 and n == again["heldout_tokens"]
    assert agreement_bound({"agreement": 1.0}, n, 0.95) < 0.99      # too few rows: even 0 errors cannot prove 99%,
    assert set(calibrated_thresholds(loaded).values()) == {NEVER_EXIT}   # so every exit stays off
    assert "calibrated" in bounded["test"] and len(bounded["calibration_curve"]) == 3
    x = np.random.default_rng(1).normal(size=(4, model.config.dim)).astype(np.float32)
    for layer in heads:
        assert np.array_equal(loaded[layer].logits(x), heads[layer].logits(x))


def test_batched_greedy_continuations_equal_the_cloud_only_baseline():
    from edgekit.cloud_bridge.edge import cloud_only_tokens
    from edgekit.cloud_bridge.layers import LayerStack
    from edgekit.cloud_bridge.train import greedy_continuations

    model = load(DEFAULT_MODEL)
    stack = LayerStack(model)
    prompts = [model.tokenizer.encode(t, add_bos=True) for t in ("Once upon a time", "The dog", "Tom had a big")]
    batched = greedy_continuations(stack, prompts, 12, batch=2)      # batches of 2 and 1, ragged prompt lengths
    assert batched == [cloud_only_tokens(stack, p, 12) for p in prompts]
    long = list(range(model.config.max_seq_len - 3))                 # stops at the context's end
    assert len(greedy_continuations(stack, [long], 12)[0]) == 3


def test_self_distillation_trains_on_the_models_own_continuations():
    from edgekit.cloud_bridge.layers import LayerStack
    from edgekit.cloud_bridge.train import greedy_continuations, self_distill_chunks, split_text

    from tests.cloud_bridge.conftest import TEXT

    model = load(DEFAULT_MODEL)
    stack = LayerStack(model)
    config = ExitTrainConfig(exits=(1, 2), max_tokens=512, steps=10, seq_len=128, self_distill=16,
                             prompts_per_document=4, calibration_prompts_per_document=4)   # one held-out document
    docs = split_text(TEXT, 0.2)[0]
    chunks, keep = self_distill_chunks(model, stack, docs, config, 400)
    first = model.tokenizer.encode(docs[0], add_bos=True)
    assert chunks[0][:8] == first[:8] and chunks[1][:40] == first[:40]     # cuts at 8, then 8 + 32
    assert keep[:4] == [7, 39, 71, 103] and all(len(c) - k == 17 for c, k in zip(chunks, keep))
    assert chunks[0][8:] == greedy_continuations(stack, [first[:8]], 16)[0]  # the model's own tokens, not the text
    heads, report = train_exits(model, TEXT, config, test_text=TEXT)
    assert report["data"].startswith("self-distillation") and report["train_tokens"] % 17 == 0
    assert report["trained"]["calibrated"]["agreement"] >= 0.99 + config.calibration_margin
    with pytest.raises(ConfigError, match="self_distill"):
        ExitTrainConfig(exits=(1,), self_distill=-1)
