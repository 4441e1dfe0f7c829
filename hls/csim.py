"""C simulation with g++: compile the generated project's design and testbench, run it, report per check.

ap_int headers come from `$XILINX_HLS/include` when Vitis is installed, else from the hls4ml wheel's
Apache-2.0 copy. Binaries are cached by a hash of every source, the flags and the compiler, so a test
session compiles each distinct design once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import ConfigError, EdgekitError
from edgekit.fileio import atomic_path

log = logging.getLogger(__name__)

# ISO C++17 (no GNU extensions) keeps -ffp-contract=off; no -ffast-math: IEEE float32 as numpy does.
CXX_FLAGS = ("-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math", "-w")


# Each design's library keeps its own template statics (all designs call their config `EkConfig`): without
# these, GCC's STB_GNU_UNIQUE statics bind process-wide and a second design would use the first's buffers.
LIBRARY_FLAGS = ("-fvisibility=hidden", "-fvisibility-inlines-hidden", "-fno-gnu-unique")


class CsimError(EdgekitError):
    """The C simulation did not compile, did not run, or a check failed."""


@dataclass
class CsimResult:
    checks: dict[str, bool] = field(default_factory=dict)
    output: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(self.checks.values())


def find_ap_include() -> Path:
    """The folder holding ap_int.h: $XILINX_HLS/include first, then the hls4ml package's copy."""
    xilinx = os.environ.get("XILINX_HLS")
    if xilinx and (Path(xilinx) / "include" / "ap_int.h").is_file():
        return Path(xilinx) / "include"
    spec = importlib.util.find_spec("hls4ml")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "templates" / "vivado" / "ap_types"
        if (candidate / "ap_int.h").is_file():
            return candidate
    raise ConfigError("no ap_int.h found: neither $XILINX_HLS/include nor the hls4ml package has it",
                      fix='pip install "edgekit[hls]" (hls4ml ships the Apache-2.0 ap_int headers) or set XILINX_HLS')


def find_compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++")
    if not cxx:
        raise ConfigError("no C++ compiler: g++ is not on PATH", fix="apt-get install g++ (or set CXX)")
    return cxx


def cache_root() -> Path:
    return Path(os.environ.get("EDGEKIT_CSIM_CACHE", Path(tempfile.gettempdir()) / "edgekit-csim"))


def source_hash(files: list[Path], extra: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update("\0".join(extra).encode())
    return digest.hexdigest()[:24]


def compile_cached(project: Path, sources: list[Path], output_name: str, extra_flags: tuple[str, ...]) -> Path:
    """Compile `sources` with the project's headers once per content hash; returns the cached binary."""
    cxx, ap = find_compiler(), find_ap_include()
    headers = sorted((project / "include").glob("*.h"))
    flags = CXX_FLAGS + extra_flags
    key = source_hash(headers + sources, (cxx, str(ap)) + flags + (output_name,))
    target = cache_root() / key / output_name
    if target.is_file():
        return target
    command = [cxx, *flags, f"-I{project / 'include'}", f"-I{ap}", *map(str, sources)]
    with atomic_path(target, suffix=".bin") as tmp:
        log.info("compiling %s", " ".join(command))
        done = subprocess.run(command + ["-o", str(tmp)], capture_output=True, text=True)
        if done.returncode != 0:
            raise CsimError(f"g++ failed ({done.returncode}):\n{done.stderr[-4000:]}", path=project,
                            fix="check the generated ek_config.h and the compiler output above")
    target.chmod(0o755)
    return target


def build_testbench(project: Path) -> Path:
    return compile_cached(project, [project / "src" / "ek_top.cpp", project / "tb" / "tb_csim.cpp"], "csim", ())


def build_shared_library(project: Path) -> Path:
    """The C-simulated top function as a shared library (the csim device back end loads it by ctypes)."""
    return compile_cached(project, [project / "src" / "ek_top.cpp"], "libek_top.so", ("-shared", "-fPIC", *LIBRARY_FLAGS))


def parse_checks(output: str) -> dict[str, bool]:
    checks = {}
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASS", "FAIL"):
            checks[rest.split(" ")[0].rstrip(":")] = word == "PASS"
    return checks


def run_csim(project: str | Path) -> CsimResult:
    """Compile and run the project's testbench in its folder; every kernel and the top function report."""
    project = Path(project)
    if not (project / "include" / "ek_config.h").is_file():
        raise ConfigError("not a generated HLS project (no include/ek_config.h)", path=project,
                          fix="create it with: edgekit hls generate MODEL --board BOARD -o DIR")
    binary = build_testbench(project)
    done = subprocess.run([str(binary)], cwd=project, capture_output=True, text=True, timeout=3600)
    result = CsimResult(checks=parse_checks(done.stdout), output=done.stdout + done.stderr)
    if done.returncode != 0 and result.passed:
        result.checks["exit_code"] = False
    return result
