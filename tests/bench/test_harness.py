"""The harness end to end on the tiny shape: reference and llama.cpp workers, results JSON, targets,
BENCHMARKS.md and plots, the CLI command. No timing is asserted, only structure and arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from edgekit.bench import (
    BenchConfig,
    BenchReport,
    CellResult,
    check_targets,
    run_bench,
    write_documents,
)
from edgekit.bench.config import SHAPES
from edgekit.bench.markdown import render_markdown
from edgekit.bench.runner import run_worker
from edgekit.bench.synthetic import build_model
from edgekit.cli.bench import bench
from edgekit.errors import ConfigError, CorruptCheckpointError

pytest.importorskip("llama_cpp")


def tiny_config(tmp_path, **overrides) -> BenchConfig:
    values = {"backends": ("reference", "llama.cpp"), "formats": ("t2", "i4"), "threads": (1,), "bandwidth_mib": 32,
                  "work_dir": tmp_path / "cache", "output_dir": tmp_path / "out"}
    return BenchConfig.preset("tiny", **{**values, **overrides})


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    return run_bench(tiny_config(tmp), markdown_path=tmp / "BENCHMARKS.md")


def test_every_cell_is_measured_with_the_planned_fields(outcome):
    report = outcome.report
    labels = [(c.backend, c.file_type) for c in report.cells]
    assert labels == [("reference", "f32 from ek_t2"), ("reference", "f32 from ek_i4 g32"),
                      ("llama.cpp", "TQ2_0"), ("llama.cpp", "Q4_0")]
    for cell in report.cells:
        assert cell.status == "ok", cell.reason
        assert set(cell.prefill) == {"16"} and cell.prefill["16"]["tokens"] == 16
        assert len(cell.prefill["16"]["seconds"]) == 1 and cell.decode["tokens"] == 8
        assert cell.decode["tokens_per_s"] == pytest.approx(8 / cell.decode["seconds"][0])
        assert cell.ttft_s >= cell.prefill["16"]["seconds"][0] and cell.ttft_prompt == 16
        assert cell.peak_rss_bytes > 10 * 2**20 and cell.load_s > 0
        assert cell.decode["joules_per_token"] is None            # no readable RAPL counters here
        assert cell.roofline_fraction == pytest.approx(cell.decode_rate() / cell.roofline_tokens_per_s)
        (entry,) = cell.rounds                                    # one repetition, bracketed by two probes
        assert entry["round"] == 0 and entry["decode_s"] == cell.decode["seconds"][0]
        assert entry["bandwidth_gb_per_s"] == pytest.approx(
            (entry["bandwidth_before_gb_per_s"] + entry["bandwidth_after_gb_per_s"]) / 2)
        assert cell.bandwidth_gb_per_s == entry["bandwidth_gb_per_s"]
    # one probe before the round's first cell, one after each of the 4 cells
    assert set(report.bandwidth) == {"1"} and report.bandwidth["1"]["probes"] == 5
    bw = report.bandwidth["1"]
    assert 0 < bw["min_gb_per_s"] <= bw["gb_per_s"] <= bw["max_gb_per_s"]
    for earlier, later in zip(report.cells, report.cells[1:]):     # one cell's after-probe is the next one's before
        assert later.rounds[0]["bandwidth_before_gb_per_s"] == earlier.rounds[0]["bandwidth_after_gb_per_s"]


def test_roofline_uses_each_back_ends_own_bytes(outcome):
    report = outcome.report
    reference = report.find("tiny", "reference", "t2", 1)
    tq2 = report.find("tiny", "llama.cpp", "t2", 1)
    q4 = report.find("tiny", "llama.cpp", "i4", 1)
    config = SHAPES["tiny"].model_config(ternary=True)
    linear = SHAPES["tiny"].linear_weights
    embedding = config.vocab_size * config.dim
    norms = 2 * (3 * config.dim + config.hidden_dim) + config.dim     # per layer: 2 pre-norms, 2 sub-norms
    assert reference.weight_bytes_per_token == 4 * (linear + embedding + norms)
    norms_f32 = tq2.weight_bytes_per_token - linear // 256 * 66 - embedding // 32 * 34
    assert norms_f32 == 4 * (2 * 2 * config.dim + config.dim)  # llama view: no sub-norms
    assert q4.weight_bytes_per_token - norms_f32 == linear // 32 * 18 + embedding // 32 * 34
    assert tq2.kv_bytes_per_token == config.n_layers * 2 * config.kv_dim * 2 * 4.5   # F16 KV, mean of 8 steps


def test_results_json_round_trips_and_bad_files_are_named(outcome, tmp_path):
    loaded = BenchReport.load(outcome.results_path)
    assert loaded == outcome.report
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CorruptCheckpointError, match="bad.json"):
        BenchReport.load(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text(json.dumps({"version": 0}))
    with pytest.raises(ConfigError, match="not a bench results file"):
        BenchReport.load(tmp_path / "old.json")
    with pytest.raises(ConfigError, match="not found"):
        BenchReport.load(tmp_path / "missing.json")


def test_markdown_and_plots_are_written(outcome, tmp_path):
    text = outcome.written[0].read_text()
    assert outcome.written[0].name == "BENCHMARKS.md"
    assert "AMD" in text or "## Machine" in text
    for needle in ("## Machine", "## Method", "## Targets", "## tiny", "| llama.cpp | TQ2_0 | 1 |", "llama_cpp_python",
                   "RAPL", "pp16 tok/s", "tg8 tok/s", "out/roofline_tiny.png", "No target applies"):
        assert needle in text, needle
    for png in outcome.written[1:]:
        assert png.suffix == ".png" and png.read_bytes()[:4] == b"\x89PNG"


def fake_cell(backend, weights, threads, tg, pp=None, roof=None, status="ok", reason=""):
    """A hand-written cell: test data for the target and markdown logic, not a measurement."""
    decode = {"tokens": 8, "seconds": [8 / tg], "tokens_per_s": tg, "best_tokens_per_s": tg,
              "joules_per_token": None} if status == "ok" else None
    prefill = {"16": {**decode, "tokens_per_s": pp}} if status == "ok" else {}
    return CellResult("tiny", backend, weights, weights, threads, status, reason, prefill, decode, 0.01, 16, 1.0,
                      2**20, 1000, 0, 100.0, roof)


def test_targets_report_met_missed_and_not_measured(outcome):
    config = {**outcome.report.config, "backends": ["native", "llama.cpp"], "threads": [2, 1]}
    report = BenchReport(config, outcome.report.machine, outcome.report.versions, outcome.report.bandwidth, "n/a", [
        fake_cell("native", "t2", 2, tg=30.0, pp=200.0, roof=0.8), fake_cell("llama.cpp", "t2", 2, tg=10.0, pp=160.0),
        fake_cell("native", "i4", 2, 0, status="failed", reason="worker exit 1: boom"),
        fake_cell("llama.cpp", "i4", 2, tg=8.0, pp=50.0),
        fake_cell("native", "t2", 1, tg=15.0, pp=90.0, roof=0.5), fake_cell("llama.cpp", "t2", 1, tg=10.0, pp=80.0)])
    checks = {(c.target.name, c.threads): c for c in check_targets(report)}
    assert len(checks) == 8                     # onnxruntime is not in the run: its target is left out
    decode = checks[("ternary decode vs llama.cpp TQ2_0", 2)]
    assert decode.ratio == pytest.approx(3.0) and decode.status == "met" and decode.phase_label == "tg8"
    assert checks[("ternary prefill vs llama.cpp TQ2_0", 2)].status == "missed"      # 200 / 160 = 1.25 < 1.5
    prefill_why = checks[("ternary prefill vs llama.cpp TQ2_0", 2)].why
    assert "below goal" in prefill_why and "pp16 200.0 tok/s" in prefill_why and "160.0" in prefill_why
    assert "tg8 30.0 tok/s" in decode.why       # decode targets cite decode rates (and the roofline)
    assert checks[("ternary decode vs roofline", 2)].ratio == pytest.approx(0.8)
    int4 = checks[("int4 decode vs llama.cpp Q4_0", 2)]
    assert int4.status == "not measured" and "boom" in int4.why
    assert checks[("ternary decode vs llama.cpp TQ2_0", 1)].status == "info (below goal)"
    text = render_markdown(report, outcome.written[0])
    assert "| ternary prefill vs llama.cpp TQ2_0 | tiny | 2 | pp16 | 1.25 | - | 1.5 | missed |" in text
    assert "- native i4, 2 thread(s): failed: worker exit 1: boom" in text


def test_notes_are_included_and_documents_regenerate_from_json(outcome, tmp_path):
    report = BenchReport.load(outcome.results_path)
    report.config["output_dir"] = str(tmp_path / "docs")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("The tiny shape fits in L1; nothing here is DRAM-bound.")
    written = write_documents(report, tmp_path / "B.md")
    text = written[0].read_text()
    assert "## Analysis" in text and "fits in L1" in text and "(docs/tokens_per_s_tiny.png)" in text


def test_memory_limit_and_refusing_back_ends_skip_with_a_reason(tmp_path):
    config = tiny_config(tmp_path, backends=("reference",), formats=("t2",), memory_limit_gb=0.001)
    report = run_bench(config).report
    (cell,) = report.cells
    assert cell.status == "skipped" and "over the 0.001 GiB limit" in cell.reason and cell.decode is None
    spec = {"kind": "cell", "backend": "reference", "weights": "t2", "threads": 1,
            "model_path": str(tmp_path / "nothing.edgekit"), "gguf_path": None, "vocab_size": 512,
            "context_length": 32, "kv_type": "f16", "prompt_lengths": [4], "generate_length": 2, "repetitions": 1,
            "seed": 0}
    result = run_worker(spec, 1, 120)
    assert result["status"] == "skipped" and "nothing.edgekit" in result["reason"]


def test_torch_peer_matches_the_reference_forward():
    torch_peer = pytest.importorskip("edgekit.bench.torch_peer")
    from edgekit.runtime.backend import ReferenceBackend

    model = build_model(SHAPES["tiny"], "i4", seed=1)        # float activations: the reference's exact path
    tokens = [1, 40, 300, 7, 99]
    reference = ReferenceBackend(model, 16)
    want_prefill, want_decode = reference.prefill(tokens)[-1], reference.decode(5)
    session = torch_peer.TorchSession(model, "fp32", threads=1, context_length=16)
    got_prefill, got_decode = session.prefill(tokens), session.decode(5)
    np.testing.assert_allclose(got_prefill, want_prefill, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(got_decode, want_decode, rtol=1e-3, atol=1e-3)
    session.reset()
    np.testing.assert_allclose(session.prefill(tokens), want_prefill, rtol=1e-3, atol=1e-3)


def test_cli_renders_saved_results_and_names_bad_options(outcome, tmp_path):
    app = typer.Typer()
    app.command()(bench)
    app.command("noop")(lambda: None)           # two commands, so typer keeps "bench" as a sub-command
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--from-json", str(outcome.results_path)])
    assert result.exit_code == 0, result.output
    assert "TQ2_0" in result.output and "memory read bandwidth" in result.output
    result = runner.invoke(app, ["bench", "--from-json", str(outcome.results_path), "--json"])
    assert json.loads(result.output)["cells"][0]["backend"] == "reference"
    result = runner.invoke(app, ["bench", "--preset", "tiny", "--threads", "two"])
    assert isinstance(result.exception, ConfigError) and "--threads" in str(result.exception)
    result = runner.invoke(app, ["bench", "--preset", "tiny", "--backend", "tensorrt"])
    assert isinstance(result.exception, ConfigError) and "tensorrt" in str(result.exception)


def test_ensure_synthetic_leaves_no_partial_file_when_a_build_fails(tmp_path, monkeypatch):
    from edgekit.bench import synthetic

    def broken_export(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("edgekit.export.gguf_writer.export_gguf", broken_export)
    with pytest.raises(OSError, match="disk full"):
        synthetic.ensure_synthetic(tmp_path, SHAPES["tiny"], "i8", gguf=True)
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob("*.partial"))


class StopAfter(Exception):
    pass


def test_a_stopped_run_keeps_its_cells_and_resume_measures_only_the_rest(tmp_path):
    config = tiny_config(tmp_path, backends=("reference",))
    seen = []

    def stop_after_first(cell, done, total):
        seen.append((cell.weights, done, total))
        raise StopAfter                               # the run is stopped right after its first cell

    with pytest.raises(StopAfter):
        run_bench(config, progress=stop_after_first)
    saved = BenchReport.load(tmp_path / "out" / "results.json")
    assert [(c.weights, c.status) for c in saved.cells] == [("t2", "ok"), ("i4", "pending")] and seen == [("t2", 1, 2)]
    seen.clear()
    resumed = run_bench(config, progress=lambda cell, done, total: seen.append((cell.weights, done, total)),
                        resume=True).report
    # round 0 was partial (i4 had not run it), so it is measured again for both cells, side by side
    assert seen == [("t2", 1, 2), ("i4", 2, 2)]
    assert [(c.weights, c.status) for c in resumed.cells] == [("t2", "ok"), ("i4", "ok")]
    assert resumed.probes["1"][:2] == saved.probes["1"] and len(resumed.probes["1"]) == 5
    more = run_bench(tiny_config(tmp_path, backends=("llama.cpp",), formats=("t2",)), resume=True).report
    assert [(c.backend, c.weights) for c in more.cells] == [("reference", "t2"), ("reference", "i4"), ("llama.cpp", "t2")]
    assert more.cells[:2] == resumed.cells[:2]         # complete cells are kept as they were
    assert more.config["backends"] == ["reference", "llama.cpp"] and more.config["formats"] == ["t2", "i4"]
    assert BenchReport.load(tmp_path / "out" / "results.json") == more
    with pytest.raises(ConfigError, match="generate_length"):
        run_bench(tiny_config(tmp_path, generate_length=4), resume=True)
