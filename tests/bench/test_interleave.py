"""Interleaved repetitions: the measuring order (A B C A B C within a (shape, threads) group), the per-round
ratio and roofline arithmetic, version-1 files, and resuming a run stopped inside a round. No timing is
asserted: the figures here are hand-written test data or only compared for structure."""

from __future__ import annotations

import json

import pytest

from edgekit.bench import BenchConfig, BenchReport, CellResult, check_targets, run_bench
from edgekit.bench.markdown import render_markdown
from edgekit.bench.runner import aggregate, interleaved_order, plan_cells, round_entry
from edgekit.bench.targets import paired_ratios
from edgekit.errors import ConfigError


def test_interleaved_order_is_round_by_round_within_each_group():
    config = BenchConfig.preset("tiny", backends=("native", "llama.cpp"), formats=("t2", "i4"), threads=(2, 1),
                                repetitions=3)
    order = [(r, c.backend, c.weights, c.threads) for r, c in interleaved_order(plan_cells(config), 3)]
    group = [("native", "t2"), ("native", "i4"), ("llama.cpp", "t2"), ("llama.cpp", "i4")]
    want = [(r, b, w, t) for t in (2, 1) for r in range(3) for b, w in group]
    assert order == want                     # threads 2: A B C D A B C D A B C D, then the same at 1 thread
    done = {("tiny", "native", "t2", 2): {0, 1}, ("tiny", "llama.cpp", "i4", 2): {0}}
    order = [(r, c.backend, c.weights) for r, c in interleaved_order(plan_cells(config), 3, done) if c.threads == 2]
    assert order == [(0, "native", "i4"), (0, "llama.cpp", "t2"),
                     (1, "native", "i4"), (1, "llama.cpp", "t2"), (1, "llama.cpp", "i4"),
                     (2, "native", "t2"), (2, "native", "i4"), (2, "llama.cpp", "t2"), (2, "llama.cpp", "i4")]


def worker_result(prefill_s: float, decode_s: float, tokens: int = 8) -> dict:
    """What a worker returns for one repetition (hand-written test data)."""
    return {"status": "ok", "prefill": {"16": {"tokens": 16, "seconds": [prefill_s], "joules_per_token": None}},
            "decode": {"tokens": tokens, "seconds": [decode_s], "joules_per_token": None},
            "ttft_s": prefill_s + 0.001, "load_s": 0.5, "peak_rss_bytes": 2**20}


def rounds_cell(backend: str, decode_s: list[float], prefill_s: list[float], bandwidths: list[tuple[float, float]],
                config: BenchConfig, bytes_per_token: int = 10**8) -> CellResult:
    cell = CellResult("tiny", backend, "t2", backend, 2, "ok", weight_bytes_per_token=bytes_per_token)
    cell.rounds = [round_entry(r, worker_result(p, d), *bw, bytes_per_token)
                   for r, (d, p, bw) in enumerate(zip(decode_s, prefill_s, bandwidths))]
    aggregate(cell, config)
    return cell


def test_targets_are_medians_of_per_round_ratios_and_roofline_uses_the_bandwidth_beside_each_round(tmp_path):
    config = BenchConfig.preset("tiny", backends=("native", "llama.cpp"), formats=("t2",), threads=(2,),
                                repetitions=3, output_dir=tmp_path)
    bw = [(10.0, 30.0), (40.0, 40.0), (60.0, 20.0)]                # means 20, 40, 40 GB/s
    # 8 tokens: native 10, 4, 2 tok/s; llama.cpp 8, 2, 4 tok/s -> per-round ratios 1.25, 2.0, 0.5
    native = rounds_cell("native", [0.8, 2.0, 4.0], [0.1, 0.2, 0.4], bw, config)
    peer = rounds_cell("llama.cpp", [1.0, 4.0, 2.0], [0.2, 0.2, 0.2], bw, config)
    assert native.decode_rate() == pytest.approx(4.0) and peer.decode_rate() == pytest.approx(4.0)
    assert paired_ratios(native.round_rates("decode"), peer.round_rates("decode")) == pytest.approx([1.25, 2.0, 0.5])
    assert paired_ratios({0: 2.0, 1: 3.0}, {1: 1.5, 2: 1.0}) == [2.0]          # only rounds both measured
    # roofline per round: tok/s / (GB/s * 1e9 / 1e8 bytes) = 10/200, 4/400, 2/400
    assert [r["bandwidth_gb_per_s"] for r in native.rounds] == [20.0, 40.0, 40.0]
    assert [r["roofline_fraction"] for r in native.rounds] == pytest.approx([0.05, 0.01, 0.005])
    assert native.roofline_fraction == pytest.approx(0.01) and native.bandwidth_gb_per_s == 40.0
    report = BenchReport(config.to_dict(), {"date": "d", "cpu": "c", "cores": 2, "flags": [], "memory_bytes": 2**30,
                                            "system": "s"}, {}, cells=[native, peer])
    checks = {c.target.name: c for c in check_targets(report)}
    decode = checks["ternary decode vs llama.cpp TQ2_0"]
    assert decode.ratio == pytest.approx(1.25)          # median of per-round ratios, not 4.0 / 4.0
    assert decode.spread == pytest.approx((0.5, 2.0)) and decode.status == "missed"
    prefill = checks["ternary prefill vs llama.cpp TQ2_0"]           # 160/80, 80/80, 40/80
    assert prefill.round_ratios == pytest.approx([2.0, 1.0, 0.5]) and prefill.ratio == pytest.approx(1.0)
    assert checks["ternary decode vs roofline"].ratio == pytest.approx(0.01)
    text = render_markdown(report, tmp_path / "B.md")
    assert "| ternary decode vs llama.cpp TQ2_0 | tiny | 2 | tg8 | 1.25 | 0.50-2.00 (3) | 2 | missed |" in text
    assert "| native | native | 2 |" in text and "| 40.0 (20.0-40.0) |" in text
    assert "Interleaved: within each (shape, threads) group" in text


def test_version_1_results_render_but_cannot_be_resumed(tmp_path):
    config = BenchConfig.preset("tiny", backends=("reference",), formats=("t2",), output_dir=tmp_path / "out",
                                work_dir=tmp_path / "cache", bandwidth_mib=32)
    old = {"config": config.to_dict(), "machine": {"date": "d", "cpu": "c", "cores": 2, "flags": [],
                                                   "memory_bytes": 2**30, "system": "s"},
           "versions": {}, "bandwidth": {"1": {"gb_per_s": 20.0, "source": "probe"}}, "energy_note": "",
           "version": 1, "cells": [{"shape": "tiny", "backend": "reference", "weights": "t2", "file_type": "f32",
                                    "threads": 1, "decode": {"tokens": 8, "seconds": [1.0], "tokens_per_s": 8.0,
                                                             "best_tokens_per_s": 8.0, "joules_per_token": None},
                                    "ttft_s": 0.1, "peak_rss_bytes": 2**20, "roofline_fraction": 0.5}]}
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text(json.dumps(old))
    report = BenchReport.load(tmp_path / "out" / "results.json")
    assert not report.interleaved and report.cells[0].rounds == []
    text = render_markdown(report, tmp_path / "B.md")
    assert "Not interleaved (results version 1)" in text and "one probe at the start of the run" in text
    with pytest.raises(ConfigError, match="'rounds'"):
        run_bench(config, resume=True)
    old["version"] = 7
    (tmp_path / "v7.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="field 'version' is 7"):
        BenchReport.load(tmp_path / "v7.json")


class Stop(Exception):
    pass


def test_a_run_stopped_inside_a_round_resumes_from_that_round(tmp_path):
    config = BenchConfig.preset("tiny", backends=("reference",), formats=("t2", "i4"), threads=(1,), repetitions=2,
                                bandwidth_mib=32, work_dir=tmp_path / "cache", output_dir=tmp_path / "out")
    seen = []

    def stop_at_third(cell, done, total):
        seen.append((cell.weights, cell.rounds[-1]["round"]))
        if done == 3:
            raise Stop                                  # after t2's round 1, before i4's round 1 (5 probes so far)

    with pytest.raises(Stop):
        run_bench(config, progress=stop_at_third)
    assert seen == [("t2", 0), ("i4", 0), ("t2", 1)]      # the real run measured in interleaved order
    saved = BenchReport.load(tmp_path / "out" / "results.json")
    assert [len(c.rounds) for c in saved.cells] == [2, 1] and len(saved.probes["1"]) == 5
    seen.clear()
    resumed = run_bench(config, resume=True,
                        progress=lambda cell, done, total: seen.append((cell.weights, cell.rounds[-1]["round"])))
    report = resumed.report
    assert seen == [("t2", 1), ("i4", 1)]                 # the partial round 1 again, for both cells
    for before, after in zip(saved.cells, report.cells):
        assert [r["round"] for r in after.rounds] == [0, 1]
        assert after.rounds[0] == before.rounds[0]        # the complete round 0 is kept as measured
        assert len(after.decode["seconds"]) == 2 and after.status == "ok"
    assert report.probes["1"][:5] == saved.probes["1"] and len(report.probes["1"]) == 8
    assert report.bandwidth["1"]["probes"] == 8
    assert BenchReport.load(tmp_path / "out" / "results.json") == report
