"""Run a `BenchConfig`: build (or reuse) the synthetic weights, measure the bandwidth roofline, then
measure each (shape, back end, weights, threads) cell in its own worker process.

Peers run the same synthetic weights: edgekit's back ends read the `.edgekit` file, llama.cpp reads its
GGUF export (ek_t2 -> TQ2_0, ek_t1 -> TQ1_0, ek_i4 g32 -> Q4_0, ek_i8 g32 -> Q8_0, no requantizing), torch
runs the t2 weights dequantized to fp32/bf16.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgekit.bench import roofline
from edgekit.bench.config import SHAPES, WEIGHT_FORMATS, BenchConfig
from edgekit.bench.machine import machine_info, rapl_domains, versions
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


def measure_cell(cell: Cell, files: dict, config: BenchConfig, bandwidth: dict) -> CellResult:
    result = CellResult(cell.shape, cell.backend, cell.weights, cell.file_type, cell.threads)
    shape = SHAPES[cell.shape]
    model_config = shape.model_config(ternary=cell.source_weights in ("t2", "t1"))
    nbytes = cell_token_bytes(cell, files, model_config, config)
    result.weight_bytes_per_token, result.kv_bytes_per_token = nbytes.weights, nbytes.kv_cache
    result.roofline_tokens_per_s = roofline.roofline_tokens_per_s(bandwidth[str(cell.threads)]["gb_per_s"],
                                                                   nbytes.total)
    reason = missing_requirement(cell.backend)
    need = estimate_memory(cell, files, config)
    if reason is None and need > config.memory_limit_gb * 2**30:
        reason = f"needs about {need / 2**30:.1f} GiB, over the {config.memory_limit_gb:g} GiB limit"
    if reason is not None:
        result.status, result.reason = "skipped", reason
        return result
    measured = run_worker(worker_spec(cell, files, config), cell.threads, config.timeout_s)
    for key in ("status", "reason", "prefill", "decode", "ttft_s", "ttft_prompt", "load_s", "peak_rss_bytes"):
        if key in measured:
            setattr(result, key, measured[key])
    if result.status == "ok" and result.roofline_tokens_per_s:
        result.roofline_fraction = result.decode["tokens_per_s"] / result.roofline_tokens_per_s
    return result


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


def measure_bandwidth(config: BenchConfig) -> dict[str, dict]:
    nbytes = config.bandwidth_mib << 20
    found = {}
    for threads in config.threads:
        result = run_worker({"kind": "bandwidth", "nbytes": nbytes, "threads": threads}, threads, config.timeout_s)
        if "gb_per_s" not in result:
            raise EdgekitError(f"the memory bandwidth probe failed on {threads} thread(s): {result.get('reason')}",
                               fix="run `python -m edgekit.bench.worker` by hand to see the error")
        found[str(threads)] = result
    return found


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
    """The results a resumed run extends (None if there is no results.json yet), with its config merged."""
    if not path.exists():
        return None
    previous = BenchReport.load(path)
    previous.config = merge_configs(previous.config, config, path)
    return previous


def run_benchmarks(config: BenchConfig, progress: Progress | None = None, resume: bool = False) -> BenchReport:
    """Measure every planned cell. `<output_dir>/results.json` is rewritten (atomically) after every cell, so a
    stopped run keeps what it measured. With `resume`, the cells already measured "ok" in that file are kept
    and not measured again (a subset of cells, picked with the shape/back end/format/threads options, can be
    added to an earlier run's file this way); the bandwidth figures are reused for thread counts it has."""
    cells = plan_cells(config)
    path = Path(config.output_dir) / "results.json"
    previous = load_previous(path, config) if resume else None
    kept = {cell_key(c): c for c in previous.cells if c.status == "ok"} if previous else {}
    todo = [c for c in cells if cell_key(c) not in kept]
    files = prepare_files(config, todo)
    report = BenchReport(config=previous.config if previous else config.to_dict(), machine=machine_info(),
                         versions=versions(), energy_note=rapl_domains()[1])
    report.bandwidth = dict(previous.bandwidth) if previous else {}
    missing = [t for t in config.threads if str(t) not in report.bandwidth]
    if missing:
        report.bandwidth.update(measure_bandwidth(dataclasses.replace(config, threads=tuple(missing))))
    planned = {cell_key(c) for c in cells}
    report.cells = [c for c in (previous.cells if previous else []) if cell_key(c) not in planned]
    report.cells += [kept[cell_key(c)] for c in cells if cell_key(c) in kept]
    report.save(path)
    for index, cell in enumerate(todo):
        log.info("measuring %s", cell)
        result = measure_cell(cell, files[(cell.shape, cell.source_weights)], config, report.bandwidth)
        report.cells.append(result)
        report.save(path)                    # after every cell: a stopped run keeps what it measured
        if progress is not None:
            progress(result, index + 1, len(todo))
    return report
