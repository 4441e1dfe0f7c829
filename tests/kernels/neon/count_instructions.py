"""Guest instructions executed by each NEON kernel (and scalar.c) under qemu-aarch64: the indicative measurement
behind the variant choice in edgekit/kernels/src/neon.c (qemu is not a phone: it counts instructions, it models
no caches, pipelines or memory bandwidth).

    python tests/kernels/neon/count_instructions.py [--shape ROWS COLS] [--tokens T ...]

Builds tests/kernels/neon/driver.c with setup.py's flags for aarch64, runs `driver --bench FMT ROWS COLS T 1 k`
under `qemu-aarch64 -d in_asm,exec,nochain` (every translated block logged once with its instructions, every
execution of a block logged), sums instructions over executed blocks, and subtracts the run that only sets up
the weights and activations (k = -1). Prints instructions per weight for every (format, T, kernel).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SRC = REPO / "edgekit" / "kernels" / "src"
KERNELS = {0: "sdot", 1: "lut", 2: "scalar"}


def build(out: Path) -> Path:
    binary = out / "driver"
    sources = sorted(str(p) for p in SRC.glob("*.c")) + [str(REPO / "tests" / "kernels" / "neon" / "driver.c")]
    subprocess.run(["aarch64-linux-gnu-gcc", "-O3", "-std=gnu11", "-ffp-contract=off", "-static", "-pthread",
                    f"-I{SRC}", *sources, "-lm", "-o", str(binary)], check=True)
    return binary


def executed_instructions(binary: Path, log: Path, args: list[str]) -> int:
    subprocess.run(["qemu-aarch64", "-d", "in_asm,exec,nochain", "-D", str(log), str(binary), *args], check=True,
                   capture_output=True)
    sizes: dict[str, int] = {}
    total, block, count = 0, None, 0
    trace = re.compile(r"^Trace \d+: \S+ \[[0-9a-f]+/([0-9a-f]+)/")
    with log.open() as f:
        for line in f:
            if line.startswith("IN:"):
                block, count = None, 0
            elif line.startswith("0x") and ":" in line:
                if block is None:
                    block = f"{int(line.split(':')[0], 16):x}"
                count += 1
            elif block is not None and not line.strip():
                sizes[block], block = count, None
            elif (m := trace.match(line)):
                total += sizes.get(f"{int(m.group(1), 16):x}", 0)
    log.unlink()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", nargs=2, type=int, default=[256, 2560], metavar=("ROWS", "COLS"))
    parser.add_argument("--tokens", nargs="+", type=int, default=[1, 8])
    args = parser.parse_args()
    rows, cols = args.shape
    with tempfile.TemporaryDirectory() as tmp:
        binary, log = build(Path(tmp)), Path(tmp) / "qemu.log"
        for fmt in ("t2", "t1"):
            for tokens in args.tokens:
                bench = [fmt, str(rows), str(cols), str(tokens), "1"]
                base = executed_instructions(binary, log, ["--bench", *bench, "-1"])
                for k, name in KERNELS.items():
                    n = executed_instructions(binary, log, ["--bench", *bench, str(k)]) - base
                    print(f"{fmt} {rows}x{cols} T={tokens} {name:6s} {n:>12,d} instructions "
                          f"{n / (rows * cols):7.3f} per weight {n / (rows * cols * tokens):7.3f} per weight-token")


if __name__ == "__main__":
    main()
