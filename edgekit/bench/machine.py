"""Facts about the machine a benchmark ran on: CPU, memory, library versions, RAPL energy counters,
and the streaming memory-read bandwidth that bounds decode speed (the roofline)."""

from __future__ import annotations

import datetime
import importlib.metadata
import logging
import os
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

POWERCAP = Path("/sys/class/powercap")
PACKAGES = ("edgekit", "numpy", "llama_cpp_python", "onnxruntime", "torch", "gguf", "matplotlib")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD extensions that matter to the kernels (AVX2, FMA, F16C, AVX-512, VNNI, AMX, NEON dotprod)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith(("flags", "Features"))), [])
    wanted = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "asimddp")
    return [f for f in wanted if f in flags]


def memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache sysfs reports (0 if unknown): weights smaller than this are not DRAM-bound."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = entry.read_text().strip()
            sizes.append(int(text[:-1]) * {"K": 1 << 10, "M": 1 << 20}[text[-1]] if text[-1] in "KM" else int(text))
        except (OSError, ValueError, IndexError):
            continue
    return max(sizes, default=0)


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["python"] = platform.python_version()
    return found


def machine_info() -> dict:
    return {"cpu": cpu_model(), "flags": cpu_flags(), "cores": os.cpu_count() or 0,
            "memory_bytes": memory_bytes(), "llc_bytes": last_level_cache_bytes(), "system": f"{platform.system()} {platform.release()}",
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}


# -- RAPL energy ---------------------------------------------------------------------------------------

@dataclass
class RaplDomain:
    path: Path
    max_uj: int


def rapl_domains() -> tuple[list[RaplDomain], str]:
    """Readable package-level RAPL counters, and a sentence saying why there are none when empty."""
    if not POWERCAP.is_dir():
        return [], f"RAPL energy not available: {POWERCAP} does not exist on this machine"
    domains, unreadable = [], []
    for zone in sorted(POWERCAP.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:   # package zones only; sub-zones (core, dram) are inside them
            continue
        try:
            int((zone / "energy_uj").read_text())
            domains.append(RaplDomain(zone / "energy_uj", int((zone / "max_energy_range_uj").read_text())))
        except (OSError, ValueError):
            unreadable.append(zone.name)
    if domains:
        return domains, f"RAPL package energy from {len(domains)} domain(s)"
    if unreadable:
        return [], f"RAPL energy not readable: {', '.join(unreadable)} energy_uj needs root (permission denied)"
    return [], f"RAPL energy not available: {POWERCAP} has no intel-rapl package zones"


def rapl_read(domains: list[RaplDomain]) -> list[int]:
    return [int(d.path.read_text()) for d in domains]


def rapl_joules(domains: list[RaplDomain], before: list[int], after: list[int]) -> float:
    """Joules between two readings, allowing each counter to wrap once."""
    total = 0
    for domain, a, b in zip(domains, before, after):
        total += b - a if b >= a else b + domain.max_uj - a
    return total / 1e6


# -- memory bandwidth (the roofline) --------------------------------------------------------------------

def measure_read_bandwidth(nbytes: int, threads: int) -> tuple[float, str]:
    """Streaming read bandwidth in GB/s and which probe measured it.

    The kernels' probe (`edgekit.kernels.read_bandwidth`) is preferred: it reads with SIMD loads the way
    the decode kernels do. Until it is built, numpy sums split across `threads` Python threads (numpy
    releases the GIL) give a lower bound."""
    try:
        from edgekit.kernels import read_bandwidth
    except ImportError:
        return numpy_read_bandwidth(nbytes, threads), "numpy threaded sum (edgekit.kernels.read_bandwidth not built)"
    return float(read_bandwidth(nbytes, threads)), "edgekit.kernels.read_bandwidth"


def numpy_read_bandwidth(nbytes: int, threads: int, repeats: int = 10) -> float:
    """Best of `repeats` passes: each thread sums its own int64 slice of one `nbytes` buffer."""
    data = np.ones(nbytes // 8, dtype=np.int64)
    parts = np.array_split(data, threads)
    best = float("inf")
    for _ in range(repeats):
        workers = [threading.Thread(target=np.bitwise_xor.reduce, args=(part,)) for part in parts]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        best = min(best, time.perf_counter() - start)
    return data.nbytes / best / 1e9
