"""Run a `BenchConfig`: build (or reuse) the synthetic weights, then measure each (shape, back end, weights,
threads) cell in worker processes, repetitions interleaved across the cells of a (shape, threads) group
(A B C A B C), with a memory-bandwidth probe beside every repetition (see `run_benchmarks` for why).

Peers run the same synthetic weights: edgekit's back ends read the `.edgekit` file, llama.cpp reads its
GGUF export (ek_t2 -> TQ2_0, ek_t1 -> TQ1_0, ek_i4 g32 -> Q4_0, ek_i8 g32 -> Q8_0, no requantizing), torch
runs the t2 weights dequantized to fp32/bf16.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgekit.bench import roofline
from edgekit.bench.config import SHAPES, WEIGHT_FORMATS, BenchConfig
from edgekit.bench.machine import machine_info, measure_read_bandwidth, rapl_domains, versions
from edgekit.bench.results import BenchReport, CellResult
from edgekit.bench.synthetic import GGUF_TYPES, ensure_onnx, ensure_synthetic
from edgekit.errors import ConfigError, EdgekitError
from edgekit.model.config import ModelConfig

log = logging.getLogger(__name__)

ONNX_BITS = {"t2": "MatMulNBits 2-bit", "i4": "MatMulNBits 4-bit"}
TORCH_BYTES = {"fp32": 4, "bf16": 2}
OVERHEAD_BYTES = 512 << 20          # interpreter, libraries, logits and scratch buffers of one worker
# module each back end needs, checked before any worker starts (a missing one skips its cells)
REQUIRES = {"native": ("edgekit.runtime.native",), "llama.cpp": ("llama_cpp",),
            "onnxruntime": ("edgekit.runtime.onnxrt", "onnxruntime"), "torch": ("torch",), "reference": ()}

Progress = Callable[[CellResult, int, int], None]


@dataclass(frozen=True)
class Cell:
    shape: str
    backend: str
    weights: str         # t2/t1/i4/i8, or fp32/bf16 for torch (which runs the t2 weights)
    threads: int

    @property
    def source_weights(self) -> str:
        return "t2" if self.backend == "torch" else self.weights

    @property
    def file_type(self) -> str:
        if self.backend == "llama.cpp":
            return GGUF_TYPES[self.weights]
        if self.backend == "onnxruntime":
            return ONNX_BITS[self.weights]
        if self.backend == "torch":
            return self.weights
        name, group = WEIGHT_FORMATS[self.weights]
        base = f"{name} g{group}" if group > 0 else name
        return f"f32 from {base}" if self.backend == "reference" else base


def backend_weights(backend: str, config: BenchConfig) -> list[str]:
    if backend == "torch":
        return list(config.torch_dtypes)
    if backend == "onnxruntime":
        return [w for w in config.formats if w in ONNX_BITS]
    return list(config.formats)


def plan_cells(config: BenchConfig) -> list[Cell]:
    return [Cell(shape, backend, weights, threads) for shape in config.shapes for backend in config.backends
            for weights in backend_weights(backend, config) for threads in config.threads]


def missing_requirement(backend: str) -> str | None:
    for module in REQUIRES[backend]:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"back end not available here: module {module} is not importable"
    return None


def thread_env(threads: int) -> dict[str, str]:
    """Environment for a worker: every thread-pool size variable the peers read, set to `threads`."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "EDGEKIT_NUM_THREADS"):
        env[name] = str(threads)
    return env


def run_worker(spec: dict, threads: int, timeout_s: float) -> dict:
    """Run `edgekit.bench.worker` on `spec`; a crash or timeout becomes {"status": "failed", ...}."""
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        try:
            proc = subprocess.run([sys.executable, "-m", "edgekit.bench.worker", str(spec_path), str(out_path)],
                                  env=thread_env(threads), capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": f"timed out after {timeout_s:.0f} s"}
        if proc.returncode != 0 or not out_path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"status": "failed", "reason": f"worker exit {proc.returncode}: {' | '.join(tail)}"}
        return json.loads(out_path.read_text())


def estimate_memory(cell: Cell, files: dict, config: BenchConfig) -> int:
    """Resident bytes a worker will need: the weights in the back end's own form, plus the loaded
    `.edgekit` model where the back end reads one, plus fixed overhead."""
    edgekit_size = files["edgekit"].stat().st_size
    if cell.backend == "llama.cpp":
        return files["gguf"].stat().st_size + OVERHEAD_BYTES
    if cell.backend == "onnxruntime" and files.get("onnx"):   # the initializers plus MLAS' prepacked copy
        return 2 * sum(p.stat().st_size for p in files["onnx"].iterdir()) + OVERHEAD_BYTES
    counts = sum(roofline.edgekit_element_counts(files["edgekit"]).values())
    if cell.backend == "torch":
        return edgekit_size + counts * TORCH_BYTES[cell.weights] + OVERHEAD_BYTES
    if cell.backend == "reference":
        return edgekit_size + counts * 4 + OVERHEAD_BYTES
    return 2 * edgekit_size + OVERHEAD_BYTES      # native, onnxruntime: the packed model plus their own copy


def cell_token_bytes(cell: Cell, files: dict, model_config: ModelConfig, config: BenchConfig) -> roofline.TokenBytes:
    if cell.backend == "llama.cpp":
        sizes, embedding = roofline.gguf_tensor_bytes(files["gguf"]), roofline.GGUF_EMBEDDING
        kv = 2 if config.kv_type == "f16" else 4
    elif cell.backend in ("torch", "reference"):
        item = TORCH_BYTES.get(cell.weights, 4)
        sizes = {k: v * item for k, v in roofline.edgekit_element_counts(files["edgekit"]).items()}
        embedding, kv = "tok_embeddings", item
    else:
        sizes, embedding, kv = roofline.edgekit_tensor_bytes(files["edgekit"]), "tok_embeddings", 4
    return roofline.token_bytes(sizes, embedding, model_config, kv, config.generate_length)


def worker_spec(cell: Cell, files: dict, config: BenchConfig) -> dict:
    return {"kind": "cell", "backend": cell.backend, "weights": cell.weights, "threads": cell.threads,
            "model_path": str(files["edgekit"]), "gguf_path": str(files["gguf"]) if files.get("gguf") else None,
            "onnx_path": str(files["onnx"]) if files.get("onnx") else None,
            "vocab_size": SHAPES[cell.shape].vocab_size, "context_length": config.context_length,
            "kv_type": config.kv_type, "prompt_lengths": list(config.prompt_lengths),
            "generate_length": config.generate_length, "repetitions": config.repetitions, "seed": config.seed}


def prepare_cell(cell: Cell, files: dict, config: BenchConfig) -> CellResult:
    """The cell's result before any round: bytes per token, or "skipped" with the reason (a back end that is
    not importable, or more memory than the limit)."""
    result = CellResult(cell.shape, cell.backend, cell.weights, cell.file_type, cell.threads)
    model_config = SHAPES[cell.shape].model_config(ternary=cell.source_weights in ("t2", "t1"))
    nbytes = cell_token_bytes(cell, files, model_config, config)
    result.weight_bytes_per_token, result.kv_bytes_per_token = nbytes.weights, nbytes.kv_cache
    reason = missing_requirement(cell.backend)
    need = estimate_memory(cell, files, config)
    if reason is None and need > config.memory_limit_gb * 2**30:
        reason = f"needs about {need / 2**30:.1f} GiB, over the {config.memory_limit_gb:g} GiB limit"
    if reason is not None:
        result.status, result.reason = "skipped", reason
    else:
        result.status, result.reason = "pending", "no repetition measured yet (the run stopped before it)"
    return result


def round_entry(round_index: int, measured: dict, before: float, after: float, bytes_per_token: int) -> dict:
    """One repetition of a cell (the worker ran it with repetitions=1) beside the bandwidth probes that
    bracket it; its roofline fraction uses the mean of those two probes."""
    bandwidth = (before + after) / 2
    decode_s = measured["decode"]["seconds"][0]
    roof = roofline.roofline_tokens_per_s(bandwidth, bytes_per_token) if bytes_per_token else None
    return {"round": round_index,
            "prefill_s": {n: v["seconds"][0] for n, v in measured["prefill"].items()},
            "prefill_joules_per_token": {n: v["joules_per_token"] for n, v in measured["prefill"].items()},
            "decode_s": decode_s, "decode_joules_per_token": measured["decode"]["joules_per_token"],
            "ttft_s": measured.get("ttft_s"), "load_s": measured.get("load_s"),
            "peak_rss_bytes": measured.get("peak_rss_bytes"), "bandwidth_before_gb_per_s": before,
            "bandwidth_after_gb_per_s": after, "bandwidth_gb_per_s": bandwidth,
            "roofline_fraction": measured["decode"]["tokens"] / decode_s / roof if roof else None}


def _summary(tokens: int, seconds: list[float], joules: list[float | None]) -> dict:
    median = statistics.median(seconds)
    energy = None if any(j is None for j in joules) else statistics.median(joules)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / median,
            "best_tokens_per_s": tokens / min(seconds), "joules_per_token": energy}


def aggregate(result: CellResult, config: BenchConfig) -> None:
    """Recompute the cell's medians (prefill, decode, TTFT, load, bandwidth, roofline) from its rounds."""
    rounds = result.rounds
    if not rounds:
        return
    result.prefill = {str(n): _summary(n, [r["prefill_s"][str(n)] for r in rounds],
                                       [r["prefill_joules_per_token"][str(n)] for r in rounds])
                      for n in config.prompt_lengths}
    result.decode = _summary(config.generate_length, [r["decode_s"] for r in rounds],
                             [r["decode_joules_per_token"] for r in rounds])
    result.ttft_s = statistics.median(r["ttft_s"] for r in rounds)
    result.ttft_prompt = config.prompt_lengths[0]
    result.load_s = statistics.median(r["load_s"] for r in rounds)
    result.peak_rss_bytes = max(r["peak_rss_bytes"] for r in rounds)
    result.bandwidth_gb_per_s = statistics.median(r["bandwidth_gb_per_s"] for r in rounds)
    result.roofline_tokens_per_s = roofline.roofline_tokens_per_s(result.bandwidth_gb_per_s,
                                                                         result.bytes_per_token)
    fractions = [r["roofline_fraction"] for r in rounds if r["roofline_fraction"] is not None]
    result.roofline_fraction = statistics.median(fractions) if fractions else None


def prepare_files(config: BenchConfig, cells: list[Cell]) -> dict[tuple[str, str], dict]:
    """(shape, weights) -> {"edgekit": path, "gguf": path or None}, built or reused from the work dir."""
    needed: dict[tuple[str, str], bool] = {}
    for cell in cells:
        key = (cell.shape, cell.source_weights)
        needed[key] = needed.get(key, False) or cell.backend == "llama.cpp"
    files = {key: ensure_synthetic(config.work_dir, SHAPES[key[0]], key[1], config.seed, gguf=gguf)
             for key, gguf in needed.items()}
    for key in {(c.shape, c.source_weights) for c in cells if c.backend == "onnxruntime"}:
        if missing_requirement("onnxruntime") is None:
            files[key]["onnx"] = ensure_onnx(files[key]["edgekit"])
    return files


def probe_bandwidth(config: BenchConfig, threads: int) -> tuple[float, str]:
    """One streaming-read probe (GB/s, which probe) of `config.bandwidth_mib` MiB on `threads` threads, run in
    this (the parent) process between two workers: no interpreter start, 0.9-1.3 s for 512 MiB on 2 threads
    (measured niced on the busy 2-core VM, 2026-12-02), and the workers' peak RSS stays their own."""
    try:
        return measure_read_bandwidth(config.bandwidth_mib << 20, threads)
    except EdgekitError:
        raise
    except Exception as exc:                     # noqa: BLE001 - an unusable probe ends the run with a reason
        raise EdgekitError(f"the memory bandwidth probe failed on {threads} thread(s): {exc}",
                           fix="check that edgekit.kernels loads (python -c 'import edgekit.kernels')") from None


# Fields a resumed run must share with the results it extends (the cells would not be comparable otherwise).
RESUME_MUST_MATCH = ("prompt_lengths", "generate_length", "repetitions", "kv_type", "seed", "bandwidth_mib")
RESUME_UNION = ("shapes", "backends", "formats", "torch_dtypes", "threads")


def cell_key(cell) -> tuple:
    return (cell.shape, cell.backend, cell.weights, cell.threads)


def merge_configs(previous: dict, config: BenchConfig, path: Path) -> dict:
    """The config of a resumed report: this run's, with the measured sets (shapes, back ends, formats, torch
    dtypes, threads) the union of both; ConfigError if a field that changes the measurement differs."""
    merged = config.to_dict()
    for name in RESUME_MUST_MATCH:
        if previous.get(name) != merged[name]:
            raise ConfigError(f"{path}: cannot resume, {name} was {previous.get(name)!r} and is now {merged[name]!r}",
                              fix="pass the same option values as the run being resumed, or another --output-dir")
    for name in RESUME_UNION:
        merged[name] = list(previous.get(name, [])) + [v for v in merged[name] if v not in previous.get(name, [])]
    return merged


def load_previous(path: Path, config: BenchConfig) -> BenchReport | None:
    """The results a resumed run extends (None if there is no results.json yet), with its config merged.
    A version-1 file (measured cell after cell, without the per-round "rounds" field) cannot be extended:
    its cells were not measured beside this run's."""
    if not path.exists():
        return None
    previous = BenchReport.load(path)
    if not previous.interleaved:
        raise ConfigError(f"{path}: cannot resume, results version {previous.version} has no per-round field "
                          "'rounds' (measured before interleaving)",
                          fix="run without --resume (the file is replaced), or pass another --output-dir")
    previous.config = merge_configs(previous.config, config, path)
    return previous


def group_cells(cells: list[Cell]) -> dict[tuple[str, int], list[Cell]]:
    """(shape, threads) -> its cells, in plan order: the cells whose figures are compared with each other."""
    groups: dict[tuple[str, int], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.shape, cell.threads), []).append(cell)
    return groups


def interleaved_order(cells: list[Cell], repetitions: int,
                      done: dict[tuple, set[int]] | None = None) -> list[tuple[int, Cell]]:
    """(round, cell) in the order they are measured: group by group ((shape, threads) in plan order), and
    within a group round 0 of every cell, then round 1 of every cell, ... (A B C A B C), skipping the
    (cell, round) pairs in `done` (cell_key -> rounds already measured)."""
    done = done or {}
    order = []
    for group in group_cells(cells).values():
        for round_index in range(repetitions):
            order += [(round_index, c) for c in group if round_index not in done.get(cell_key(c), set())]
    return order


def resumable_rounds(previous: BenchReport, cells: list[Cell], config: BenchConfig) -> dict[tuple, CellResult]:
    """cell_key -> previous result whose rounds a resumed run keeps. A group's round that not every one of its
    previous cells completed (the run stopped inside it) is dropped from all of them and measured again, so
    round r of two cells is always measured in the same pass; failed or skipped cells start again."""
    by_key = {cell_key(c): c for c in previous.cells}
    kept: dict[tuple, CellResult] = {}
    for group in group_cells(cells).values():
        found = [by_key[cell_key(c)] for c in group
                 if cell_key(c) in by_key and by_key[cell_key(c)].status in ("ok", "pending")]
        if not found:
            continue
        complete = min(len(c.rounds) for c in found)
        for result in found:
            result.rounds = [r for r in result.rounds if r["round"] < min(complete, config.repetitions)]
            if result.rounds:
                result.status, result.reason = "ok", ""
                aggregate(result, config)
                kept[cell_key(result)] = result
    return kept


def summarize_bandwidth(probes: dict[str, list[float]], source: str) -> dict[str, dict]:
    return {t: {"gb_per_s": statistics.median(v), "min_gb_per_s": min(v), "max_gb_per_s": max(v),
                "probes": len(v), "source": source} for t, v in probes.items() if v}


def run_benchmarks(config: BenchConfig, progress: Progress | None = None, resume: bool = False) -> BenchReport:
    """Measure every planned cell, interleaved: within each (shape, threads) group, repetition r of every cell
    runs before repetition r + 1 of any (`interleaved_order`), each repetition in a fresh worker process, with a
    bandwidth probe before the group's first cell of a round and after every cell (so each repetition is
    bracketed by two probes, and its roofline fraction uses their mean).

    One process per (cell, repetition), reloading the model each time, rather than one long-lived process per
    cell taking "run round r" commands: on the BitNet 2B4T shapes the 11 cells' peak RSS sum to ~30 GB
    (native i8 5.2, torch bf16 5.8, native i4 3.4, ... GB; docs/bench/results.json of 2026-12-02) on a
    23 GiB machine, so they cannot all stay resident, and parked processes would also hold page cache the
    running one needs. Reloading costs the sum of the load times, 100 s per round at 2 threads (torch 51 s,
    native i8 15 s, the rest 0.7-8.5 s), i.e. ~+40% on a ~290 s round: accepted, since the rounds are what make
    the ratios comparable. A fresh process also keeps peak RSS and crashes per repetition.

    `<output_dir>/results.json` is rewritten (atomically) after every cell's repetition, so a stopped run keeps
    what it measured. With `resume`, the complete rounds already in that file are kept (see `resumable_rounds`)
    and the run continues from the first incomplete round; cells added by the options are measured in the
    same rounds as the missing ones."""
    cells = plan_cells(config)
    path = Path(config.output_dir) / "results.json"
    previous = load_previous(path, config) if resume else None
    kept = resumable_rounds(previous, cells, config) if previous else {}
    done = {key: {r["round"] for r in result.rounds} for key, result in kept.items()}
    order = interleaved_order(cells, config.repetitions, done)
    todo_cells = list({cell_key(c): c for _, c in order}.values())
    files = prepare_files(config, todo_cells)
    report = BenchReport(config=previous.config if previous else config.to_dict(), machine=machine_info(),
                         versions=versions(), energy_note=rapl_domains()[1])
    planned = {cell_key(c) for c in cells}
    report.cells = [c for c in (previous.cells if previous else []) if cell_key(c) not in planned]
    results: dict[tuple, CellResult] = {}
    for cell in cells:
        key = cell_key(cell)
        if key in kept:
            results[key] = kept[key]
        elif any(cell_key(c) == key for c in todo_cells):
            results[key] = prepare_cell(cell, files[(cell.shape, cell.source_weights)], config)
    report.cells += [results[cell_key(c)] for c in cells if cell_key(c) in results]
    report.probes = probes = {t: list(v) for t, v in (previous.probes if previous else {}).items()}
    source = next((v["source"] for v in previous.bandwidth.values()), "") if previous else ""
    report.bandwidth = summarize_bandwidth(probes, source)
    report.save(path)
    runnable = [(r, c) for r, c in order if results[cell_key(c)].status in ("ok", "pending")]
    last_probe: tuple[int, tuple, float] | None = None     # (round, group) of the latest probe and its GB/s
    for index, (round_index, cell) in enumerate(runnable):
        result = results[cell_key(cell)]
        if result.status not in ("ok", "pending"):         # failed in an earlier round: no more rounds
            continue
        group = (cell.shape, cell.threads)
        if last_probe is None or last_probe[:2] != (round_index, group):
            gbps, source = probe_bandwidth(config, cell.threads)
            probes.setdefault(str(cell.threads), []).append(gbps)
            last_probe = (round_index, group, gbps)
        before = last_probe[2]
        log.info("measuring %s, round %d", cell, round_index)
        spec = {**worker_spec(cell, files[(cell.shape, cell.source_weights)], config), "repetitions": 1}
        measured = run_worker(spec, cell.threads, config.timeout_s)
        after, source = probe_bandwidth(config, cell.threads)
        probes[str(cell.threads)].append(after)
        last_probe = (round_index, group, after)
        if measured.get("status", "ok") != "ok":
            result.status, result.reason = measured["status"], f"round {round_index}: {measured.get('reason', '')}"
        else:
            result.status, result.reason = "ok", ""
            result.rounds.append(round_entry(round_index, measured, before, after, result.bytes_per_token))
            result.rounds.sort(key=lambda r: r["round"])
            aggregate(result, config)
        report.bandwidth = summarize_bandwidth(probes, source)
        report.save(path)                    # after every repetition: a stopped run keeps what it measured
        if progress is not None:
            progress(result, index + 1, len(runnable))
    return report
