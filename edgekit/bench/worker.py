"""One measurement in its own process: `python -m edgekit.bench.worker SPEC.json RESULT.json`.

The parent (`runner.py`) writes the spec and sets the thread variables in this process's environment
before Python starts, so every library sizes its thread pool from them. A fresh process per cell (the
runner starts one per repetition, `repetitions` = 1, to interleave the cells; see `runner.run_benchmarks`)
keeps peak RSS (VmHWM) the cell's own and a crash in one back end from ending the run.

Spec fields: kind ("cell" or "bandwidth"); for cells: backend, weights, model_path, gguf_path, threads,
context_length, kv_type, prompt_lengths, generate_length, repetitions, seed; for bandwidth: nbytes,
threads. The result is JSON (see `measure` for the fields) written atomically to RESULT.json.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from edgekit.bench.machine import rapl_domains, rapl_joules, rapl_read
from edgekit.fileio import write_json_atomic


def prompt_tokens(n: int, vocab: int, seed: int) -> list[int]:
    """`n` pseudo-random ids past the control tokens (BOS first, as a real prompt would start)."""
    rng = np.random.default_rng(seed)
    return [1] + [int(t) for t in rng.integers(3, vocab, size=n - 1)]


class EnergyMeter:
    """Joules over a timed window from RAPL, or None when the counters cannot be read."""

    def __init__(self):
        self.domains, self.note = rapl_domains()
        self.before: list[int] = []

    def start(self) -> None:
        self.before = rapl_read(self.domains) if self.domains else []

    def stop(self) -> float | None:
        return rapl_joules(self.domains, self.before, rapl_read(self.domains)) if self.domains else None


def time_prefill(session, tokens: list[int], energy: EnergyMeter) -> tuple[float, float, float | None]:
    """(seconds for the prefill, seconds to the first sampled token, joules or None) from an empty cache."""
    session.reset()
    energy.start()
    start = time.perf_counter()
    logits = session.prefill(tokens)
    prefill_done = time.perf_counter()
    int(np.argmax(logits))                                   # greedy first token: what a user waits for
    first = time.perf_counter()
    return prefill_done - start, first - start, energy.stop()


def time_decode(session, steps: int, energy: EnergyMeter) -> tuple[float, float | None]:
    """Seconds (and joules) for `steps` single-token decodes from an empty cache, feeding back the argmax."""
    session.reset()
    token = 1
    energy.start()
    start = time.perf_counter()
    for _ in range(steps):
        token = int(np.argmax(session.decode(token)))
    return time.perf_counter() - start, energy.stop()


def summarize(tokens: int, seconds: list[float], joules: list[float | None]) -> dict:
    median = statistics.median(seconds)
    energy = None if any(j is None for j in joules) else statistics.median(joules) / tokens
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / median,
            "best_tokens_per_s": tokens / min(seconds), "joules_per_token": energy}


def measure(session, spec: dict, vocab: int) -> dict:
    """Warm up, then time each prompt length and the generation, `repetitions` times each (medians)."""
    reps, seed = int(spec["repetitions"]), int(spec["seed"])
    energy = EnergyMeter()
    warm = prompt_tokens(min(spec["prompt_lengths"]), vocab, seed + 1)
    session.reset()
    session.prefill(warm)
    session.decode(1)                                        # first calls allocate buffers and fault pages in
    result: dict = {"prefill": {}, "energy_note": energy.note}
    for index, length in enumerate(spec["prompt_lengths"]):
        tokens = prompt_tokens(length, vocab, seed)
        runs = [time_prefill(session, tokens, energy) for _ in range(reps)]
        result["prefill"][str(length)] = summarize(length, [r[0] for r in runs], [r[2] for r in runs])
        if index == 0:
            result["ttft_s"] = statistics.median(r[1] for r in runs)
            result["ttft_prompt"] = length
    steps = int(spec["generate_length"])
    runs = [time_decode(session, steps, energy) for _ in range(reps)]
    result["decode"] = summarize(steps, [r[0] for r in runs], [r[1] for r in runs])
    return result


def run_cell(spec: dict) -> dict:
    from edgekit.bench.sessions import open_session

    start = time.perf_counter()
    session = open_session(spec)
    load_s = time.perf_counter() - start
    vocab = int(spec["vocab_size"])
    result = measure(session, spec, vocab)
    session.close()
    result["load_s"] = load_s
    result["peak_rss_bytes"] = peak_rss_bytes()
    return result


def peak_rss_bytes() -> int:
    """This process's peak resident set. Linux's VmHWM belongs to the address space made by exec, while
    getrusage's ru_maxrss keeps the parent's peak from before exec (fork copies it), so it is the fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_bandwidth(spec: dict) -> dict:
    from edgekit.bench.machine import measure_read_bandwidth

    gbps, source = measure_read_bandwidth(int(spec["nbytes"]), int(spec["threads"]))
    return {"gb_per_s": gbps, "source": source}


def main(argv: list[str]) -> int:
    from edgekit.errors import EdgekitError

    spec = json.loads(Path(argv[0]).read_text())
    try:
        result = run_bandwidth(spec) if spec["kind"] == "bandwidth" else run_cell(spec)
    except EdgekitError as exc:   # the back end refuses this model or format: a reason, not a crash
        result = {"status": "skipped", "reason": f"{exc}" + (f" ({exc.fix})" if exc.fix else "")}
    write_json_atomic(Path(argv[1]), result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
