"""BENCHMARKS.md from a `BenchReport`: machine, versions, method, targets, one table per shape, plots.

The file is generated: hand-written analysis belongs in `<output_dir>/notes.md`, which is copied in
under "Analysis" each time the file is regenerated.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgekit.bench.config import SHAPES
from edgekit.bench.results import BenchReport, CellResult
from edgekit.bench.targets import TargetCheck, check_targets
from edgekit.fileio import write_text_atomic

REGENERATE = "python -m edgekit.bench --write-md"


def fmt(value: float | None, spec: str = ".1f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def cell_bandwidth(cell: CellResult) -> str:
    """The bandwidth probed beside the cell's rounds: median (min-max), "-" for results without rounds."""
    values = [r["bandwidth_gb_per_s"] for r in cell.rounds]
    if not values:
        return "-"
    return f"{cell.bandwidth_gb_per_s:.1f} ({min(values):.1f}-{max(values):.1f})"


def bandwidth_summary(report: BenchReport) -> str:
    """"2 thread(s) 41.3 GB/s (median of 34 probes, 27.0-70.2)" per thread count."""
    parts = []
    for t, v in sorted(report.bandwidth.items()):
        spread = (f" (median of {v['probes']} probes, {v['min_gb_per_s']:.1f}-{v['max_gb_per_s']:.1f})"
                  if "probes" in v else " (one probe at the start of the run)")
        parts.append(f"{t} thread(s) {v['gb_per_s']:.1f} GB/s{spread}")
    return "; ".join(parts)


def cell_row(cell: CellResult, report: BenchReport) -> list[str]:
    lengths = report.config["prompt_lengths"]
    if cell.status != "ok":
        return [cell.backend, cell.file_type, str(cell.threads)] + ["-"] * (len(lengths) + 8)
    energy = cell.decode.get("joules_per_token") if cell.decode else None
    return ([cell.backend, cell.file_type, str(cell.threads)]
            + [fmt(cell.prefill_rate(n)) for n in lengths]
            + [fmt(cell.decode_rate()), fmt(cell.ttft_s * 1e3 if cell.ttft_s is not None else None, ".0f"),
               fmt(cell.peak_rss_bytes / 2**20 if cell.peak_rss_bytes else None, ".0f"),
               fmt(cell.bytes_per_token / 1e6, ".1f"), cell_bandwidth(cell), fmt(cell.roofline_tokens_per_s),
               fmt(cell.roofline_fraction * 100 if cell.roofline_fraction is not None else None, ".0f"),
               fmt(energy, ".3f", "n/a")])


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def results_header(report: BenchReport) -> list[str]:
    tg = report.config["generate_length"]
    return (["back end", "weights", "threads"] + [f"pp{n} tok/s" for n in report.config["prompt_lengths"]]
            + [f"tg{tg} tok/s", f"TTFT ms (pp{report.config['prompt_lengths'][0]})", "peak RSS MiB",
               "MB read/token", "GB/s beside (min-max)", "roofline tok/s", "% roofline", "J/token (tg)"])


def machine_section(report: BenchReport) -> list[str]:
    m, bw = report.machine, report.bandwidth
    lines = ["## Machine", "",
             f"- CPU: {m['cpu']}, {m['cores']} cores, SIMD: {', '.join(m['flags']) or 'none detected'}",
             f"- memory: {m['memory_bytes'] / 2**30:.1f} GiB; {m['system']}",
             f"- date: {m['date']}; threads measured: {', '.join(map(str, report.config['threads']))}",
             "- memory read bandwidth (the roofline): " + bandwidth_summary(report) +
             (f"; {next(iter(bw.values()))['source']}, {report.config['bandwidth_mib']} MiB buffer" if bw else ""),
             f"- energy: {report.energy_note}", "", "Versions:", ""]
    lines += table(["package", "version"], [[k, v] for k, v in report.versions.items()])
    return lines + [""]


def method_section(report: BenchReport) -> list[str]:
    c = report.config
    return ["## Method", "",
            ("- Synthetic random weights at real model shapes (speed only, never quality), built once and cached "
            "by recipe hash; linear layers packed as ek_t2 / ek_t1 (ternary, one scale per tensor), ek_i4 g32 or "
            "ek_i8 g32; embeddings and output int8 in blocks of 32 (GGUF Q8_0)."),
            ("- llama.cpp (llama-cpp-python) runs the GGUF export of the same packed weights (TQ2_0, TQ1_0, Q4_0, "
            f"Q8_0, no requantizing), with n_threads = n_threads_batch = the thread count, n_batch = n_ubatch >= "
            f"512 and a {c['kv_type'].upper()} KV cache. llama.cpp's `bitnet` architecture has SiLU, not BitNet "
            "2B4T's squared ReLU, so llama.cpp runs the `llama` architecture on the same matrices (no sub-norms, SiLU for squared ReLU, float "
            "activations): the same bytes and matmuls per token, minus O(dim) element-wise work."),
            ("- torch runs the t2 weights dequantized to fp32/bf16 (torch.set_num_threads); onnxruntime runs "
            "the ONNX export of the same packed weights as MatMulNBits 2-bit / 4-bit (codes unchanged, accuracy_level 4, "
            "block 128 for per-tensor ternary scales), all ops of the edgekit graph included."),
            (f"- Every cell runs in its own process (peak RSS is its own) with OMP/OpenBLAS/MKL/EDGEKIT thread "
            f"variables set; after a warm-up, pp{'/pp'.join(map(str, c['prompt_lengths']))} prefill from an empty "
            f"cache and tg{c['generate_length']} greedy decode from an empty cache, median of {c['repetitions']} "
            "repetitions. TTFT = first prompt's prefill plus picking the first token."),
            (("- Interleaved: within each (shape, threads) group, repetition r of every cell runs before repetition "
              "r + 1 of any (A B C A B C), each repetition in a fresh process (the model reloaded); a "
              f"{c['bandwidth_mib']} MiB read-bandwidth probe runs before each round's first cell and after every "
              "cell, so each repetition is bracketed by two probes. A target ratio is the median over rounds of "
              "round r's subject / round r's peer, shown with its min-max over rounds.")
             if report.interleaved else
             ("- Not interleaved (results version 1): each cell's repetitions ran back to back and the bandwidth "
              "was probed once at the start of the run, so cells measured minutes apart may have seen different "
              "memory bandwidth; ratios are of the medians.")),
            ("- Roofline: bandwidth / bytes read per decoded token (every weight matrix incl. the output layer, "
            "one embedding row when untied, the KV cache at the mean decode position). A cell skipped for memory "
            f"would need more than {c['memory_limit_gb']:g} GiB."), ""]


def target_section(checks: list[TargetCheck]) -> list[str]:
    rows = [[c.target.name, c.shape, str(c.threads), c.phase_label, fmt(c.ratio, ".2f"), round_spread(c),
             f"{c.target.goal:g}", c.status, c.why] for c in checks]
    lines = ["## Targets", "", ("Ratios from this run (median over rounds of the per-round ratio where the run was "
             "interleaved); the targets are set at 2 threads, other thread counts are shown for information."), ""]
    if not checks:
        return lines + ["No target applies: the run did not include both sides of any target.", ""]
    header = ["target", "shape", "threads", "phase", "ratio", "rounds min-max (n)", "goal", "status", "why"]
    return lines + table(header, rows) + [""]


def round_spread(check: TargetCheck) -> str:
    spread = check.spread
    return "-" if spread is None else f"{spread[0]:.2f}-{spread[1]:.2f} ({len(check.round_ratios)})"


def shape_section(report: BenchReport, shape: str, plot_dir: str) -> list[str]:
    spec = SHAPES[shape]
    cells = [c for c in report.cells if c.shape == shape]
    lines = [f"## {shape}", "", (f"{spec.description}: dim {spec.dim}, FFN {spec.hidden_dim}, {spec.n_layers} layers, "
             f"{spec.n_heads} heads, {spec.n_kv_heads} KV heads, vocab {spec.vocab_size}."), ""]
    lines += table(results_header(report), [cell_row(c, report) for c in cells if c.status == "ok"])
    llc = report.machine.get("llc_bytes", 0)
    small = [c for c in cells if c.status == "ok" and c.bytes_per_token < llc]
    if small:
        lines += ["", (f"Note: {len(small)} of these cells read less per token than the {llc / 2**20:.0f} MiB "
                  "last-level cache, so their decode is not DRAM-bound and the roofline fraction can pass 100%.")]
    others = [c for c in cells if c.status != "ok"]
    if others:
        lines += ["", "Not measured:", ""] + [f"- {c.label}, {c.threads} thread(s): {c.status}: {c.reason}"
                                               for c in others]
    for name in ("tokens_per_s", "roofline"):
        lines += ["", f"![{name} {shape}]({plot_dir}/{name}_{shape}.png)"]
    return lines + [""]


def render_markdown(report: BenchReport, markdown_path: Path, notes: str | None = None) -> str:
    output_dir = Path(report.config["output_dir"])
    plot_dir = os.path.relpath(output_dir.resolve(), markdown_path.resolve().parent).replace(os.sep, "/")
    lines = ["# Benchmarks", "",
             (f"Generated by `{REGENERATE}` (or `edgekit bench --markdown`) on {report.machine['date']}; do not "
             f"edit by hand (analysis goes in `{output_dir.as_posix()}/notes.md`). Raw figures: "
             f"`{output_dir.as_posix()}/results.json`."), ""]
    lines += machine_section(report) + method_section(report) + target_section(check_targets(report))
    if notes:
        lines += ["## Analysis", "", notes.strip(), ""]
    for shape in report.config["shapes"]:
        lines += shape_section(report, shape, plot_dir)
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(report: BenchReport, markdown_path: Path) -> Path:
    notes_path = Path(report.config["output_dir"]) / "notes.md"
    notes = notes_path.read_text() if notes_path.is_file() else None
    return write_text_atomic(markdown_path, render_markdown(report, Path(markdown_path), notes))
