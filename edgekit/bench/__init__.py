"""Side-by-side benchmarks (`edgekit bench`, BENCHMARKS.md).

    from edgekit.bench import BenchConfig, run_bench
    outcome = run_bench(BenchConfig.preset("quick"), markdown_path="BENCHMARKS.md")

Each (shape, back end, weights, threads) cell runs in its own worker process (one per repetition, the
repetitions interleaved across the cells of a (shape, threads) group with a bandwidth probe beside each) on
synthetic weights at a real model shape; results are JSON (`<output_dir>/results.json`), plus BENCHMARKS.md and matplotlib plots
when asked. See `runner.py` for the flow and `roofline.py` for the bytes-per-token arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgekit.bench.config import PRESETS, SHAPES, BenchConfig, ShapeSpec
from edgekit.bench.results import BenchReport, CellResult
from edgekit.bench.runner import Progress, run_benchmarks
from edgekit.bench.targets import TargetCheck, check_targets


@dataclass
class BenchOutcome:
    report: BenchReport
    results_path: Path
    written: list[Path] = field(default_factory=list)   # BENCHMARKS.md and plots, when asked for


def write_documents(report: BenchReport, markdown_path: Path) -> list[Path]:
    """BENCHMARKS.md and the plots (in the report's output dir) from a report."""
    from edgekit.bench.markdown import write_markdown
    from edgekit.bench.plots import write_plots

    plots = write_plots(report, Path(report.config["output_dir"]))
    return [write_markdown(report, Path(markdown_path))] + plots


def run_bench(config: BenchConfig, markdown_path: Path | str | None = None,
              progress: Progress | None = None, resume: bool = False) -> BenchOutcome:
    """Measure `config`, save results.json (after every cell; `resume` keeps the cells an earlier run of the
    same output dir measured, see run_benchmarks), and (with `markdown_path`) regenerate the markdown and plots."""
    report = run_benchmarks(config, progress, resume)
    written = write_documents(report, Path(markdown_path)) if markdown_path is not None else []
    return BenchOutcome(report, Path(config.output_dir) / "results.json", written)


__all__ = ["PRESETS", "SHAPES", "BenchConfig", "BenchOutcome", "BenchReport", "CellResult", "ShapeSpec",
           "TargetCheck", "check_targets", "run_bench", "write_documents"]
