"""`edgekit bench`: options -> `BenchConfig` -> `edgekit.bench.run_bench` -> rich tables (or JSON).

Registered in `edgekit.cli.main` with `app.command()(bench)`; errors reach main's error boundary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from edgekit.errors import ConfigError

console = Console()
err_console = Console(stderr=True)


def _split(values: Optional[list[str]], option: str, to_int: bool = False):
    """Repeated or comma-separated option values ("--threads 2,1" == "--threads 2 --threads 1"); None if unset."""
    if not values:
        return None
    items = [item.strip() for value in values for item in value.split(",") if item.strip()]
    if not to_int:
        return tuple(items)
    try:
        return tuple(int(item) for item in items)
    except ValueError:
        raise ConfigError(f"{option} takes whole numbers, got {values!r}", fix=f"e.g. {option} 2,1") from None


def _render_cells(report) -> None:
    from edgekit.bench.markdown import cell_bandwidth

    lengths = report.config["prompt_lengths"]
    for shape in report.config["shapes"]:
        table = Table(title=f"{shape} (tokens/s, medians of {report.config['repetitions']})")
        for column in (["back end", "weights", "threads"] + [f"pp{n}" for n in lengths]
                       + [f"tg{report.config['generate_length']}", "TTFT ms", "peak RSS MiB", "GB/s beside",
                          "% roofline"]):
            table.add_column(column, justify="left" if column in ("back end", "weights") else "right")
        for cell in (c for c in report.cells if c.shape == shape):
            if cell.status != "ok":
                table.add_row(cell.backend, cell.file_type, str(cell.threads),
                              f"[yellow]{cell.status}[/yellow]: {cell.reason}", *[""] * (len(lengths) + 4))
                continue
            roof = cell.roofline_fraction
            table.add_row(cell.backend, cell.file_type, str(cell.threads),
                          *[f"{cell.prefill_rate(n):.1f}" for n in lengths], f"{cell.decode_rate():.1f}",
                          f"{cell.ttft_s * 1e3:.0f}", f"{cell.peak_rss_bytes / 2**20:.0f}", cell_bandwidth(cell),
                          f"{roof:.0%}" if roof is not None else "-")
        console.print(table)


def _render_summary(report) -> None:
    from edgekit.bench import check_targets
    from edgekit.bench.markdown import bandwidth_summary, round_spread

    console.print(f"memory read bandwidth: {bandwidth_summary(report)}", highlight=False)
    console.print(f"energy per token: {report.energy_note}", highlight=False)
    table = Table(title="targets")
    for column in ("target", "shape", "threads", "phase", "ratio", "rounds min-max (n)", "goal", "status"):
        table.add_column(column, justify="right" if column in ("threads", "ratio", "goal") else "left")
    colours = {"met": "green", "missed": "red"}
    for check in check_targets(report):
        colour = colours.get(check.status, "yellow")
        table.add_row(check.target.name, check.shape, str(check.threads), check.phase_label,
                      "-" if check.ratio is None else f"{check.ratio:.2f}", round_spread(check), f"{check.target.goal:g}",
                      f"[{colour}]{check.status}[/{colour}]")
    console.print(table)


def _progress(cell, done: int, total: int) -> None:
    last = cell.rounds[-1] if cell.rounds and cell.status == "ok" else None
    rate = (f"round {last['round']}: tg {cell.decode['tokens'] / last['decode_s']:.1f} tok/s beside "
            f"{last['bandwidth_gb_per_s']:.1f} GB/s" if last else f"{cell.status}: {cell.reason}")
    err_console.print(f"[{done}/{total}] {cell.shape} {cell.label}, {cell.threads} thread(s): {rate}",
                      highlight=False, markup=False)


def bench(preset: str = typer.Option("quick", "--preset", help="Starting point: full (real model shapes), "
                                     "quick (one small shape) or tiny (seconds; tests)."),
          shapes: Optional[list[str]] = typer.Option(None, "--shape", help="Model shapes (repeat or comma-"
                                                     "separate): bitnet-2b4t, llama-3.2-1b, bitnet-700m, small, tiny."),
          backends: Optional[list[str]] = typer.Option(None, "--backend", help="Back ends: native, llama.cpp, "
                                                       "onnxruntime, torch, reference."),
          formats: Optional[list[str]] = typer.Option(None, "--format", help="Weights: t2 (TQ2_0), t1 (TQ1_0), "
                                                      "i4 (Q4_0), i8 (Q8_0)."),
          torch_dtypes: Optional[list[str]] = typer.Option(None, "--torch-dtype", help="fp32 and/or bf16."),
          threads: Optional[list[str]] = typer.Option(None, "--threads", help="Thread counts, e.g. 2,1."),
          prompt_lengths: Optional[list[str]] = typer.Option(None, "--prompt-length", help="Prefill lengths, "
                                                             "e.g. 128,512 (the first also gives TTFT)."),
          generate_length: Optional[int] = typer.Option(None, "--generate-length", help="Decode steps (tg)."),
          repetitions: Optional[int] = typer.Option(None, "--repetitions", help="Runs per figure (median)."),
          kv_type: Optional[str] = typer.Option(None, "--kv-type", help="llama.cpp KV cache: f16 or f32."),
          output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="results.json and plots "
                                                    "(default docs/bench)."),
          work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Synthetic model cache "
                                                  "(default ~/.cache/edgekit/bench)."),
          memory_limit_gb: Optional[float] = typer.Option(None, "--memory-limit-gb", help="Skip cells needing more."),
          markdown: bool = typer.Option(False, "--markdown", help="Also regenerate BENCHMARKS.md and the plots."),
          markdown_path: Path = typer.Option(Path("BENCHMARKS.md"), "--markdown-path", help="Where --markdown writes."),
          from_json: Optional[Path] = typer.Option(None, "--from-json", help="Render saved results instead of "
                                                   "measuring (with --markdown: regenerate the documents)."),
          resume: bool = typer.Option(False, "--resume", help="Keep the cells already measured ok in the output "
                                      "dir's results.json (written after every cell) and measure only the rest; "
                                      "with --backend/--format/--threads/--shape, adds those cells to it."),
          json_out: bool = typer.Option(False, "--json", help="Print the results as JSON.")) -> None:
    """Measure prefill/decode tokens/s, TTFT, peak RSS and the memory roofline against llama.cpp,
    onnxruntime and torch on the same synthetic weights. Repetitions are interleaved across the cells of a
    (shape, threads) group (A B C A B C) with a bandwidth probe beside each; target ratios are medians of the
    per-round ratios."""
    from edgekit.bench import BenchConfig, BenchReport, run_bench, write_documents

    if from_json is not None:
        report = BenchReport.load(from_json)
        written = write_documents(report, markdown_path) if markdown else []
    else:
        config = BenchConfig.preset(
            preset, shapes=_split(shapes, "--shape"), backends=_split(backends, "--backend"),
            formats=_split(formats, "--format"), torch_dtypes=_split(torch_dtypes, "--torch-dtype"),
            threads=_split(threads, "--threads", True), prompt_lengths=_split(prompt_lengths, "--prompt-length", True),
            generate_length=generate_length, repetitions=repetitions, kv_type=kv_type, output_dir=output_dir,
            work_dir=work_dir, memory_limit_gb=memory_limit_gb)
        outcome = run_bench(config, markdown_path if markdown else None, None if json_out else _progress, resume)
        report, written = outcome.report, [outcome.results_path, *outcome.written]
    if json_out:
        console.print_json(json.dumps(report.to_dict()))
        return
    _render_cells(report)
    _render_summary(report)
    for path in written:
        console.print(f"wrote {path}", highlight=False)
