"""Micro-benchmark of edgekit's native kernels: GB/s of weight bytes per kernel at BitNet b1.58 2B4T shapes.

Not a test: it prints indicative numbers (other processes may share the cores). Each measurement cycles
through enough copies of the matrix that the working set exceeds 256 MiB, so weights come from DRAM, as in a
real decode. Compare the GB/s column with the streaming read bandwidth printed first (the roofline).

    python scripts/kernel_bench.py                       # all formats, 1 and 2 threads, decode (T=1)
    python scripts/kernel_bench.py --formats ek_t2 ek_i4 --tokens 1 128 --seconds 0.5
    python scripts/kernel_bench.py --formats ek_t2 --isas avx2 avx512 --layouts native lut3 --repeat 3

    python scripts/kernel_bench.py --ceiling --tokens 1 64   # compute ceilings of every kernel and layout
    python scripts/kernel_bench.py --ceiling --isas avx2 avx512 --formats ek_i3 ek_i2 --tokens 1 64

GB/s counts the bytes a call reads (kernel_nbytes: the repacked size when the layout is not native); %bw is
that against ek_read_bandwidth at the same thread count; "Gw/s" is weights per second (comparable across
layouts of one format). With --repeat N each cell is measured N times and the best is printed (the cores
are shared, so the best run is the least disturbed one).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edgekit import kernels
from edgekit.formats import (
    PER_CHANNEL,
    PER_TENSOR,
    QuantizedTensor,
    get_format,
    pack_values,
)

BITNET_SHAPES = [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)]  # (out, in) per layer, 30 layers
LM_HEAD = (128256, 2560)
GROUP = {"ek_t2": PER_TENSOR, "ek_t1": PER_TENSOR, "ek_i8": PER_CHANNEL, "f16": PER_TENSOR}
WORKING_SET = 300 << 20
DEFAULT_FORMATS = ["ek_t2", "ek_t1", "ek_i4", "ek_i2", "ek_u4", "ek_i8"]


def make_tensor(fmt_name: str, rows: int, cols: int, rng: np.random.Generator) -> QuantizedTensor:
    fmt = get_format(fmt_name)
    group = GROUP.get(fmt_name, 32)
    if fmt.kind == "float":
        return kernels.api.as_quantized(rng.standard_normal((rows, cols), dtype=np.float32).astype(np.float16))
    if fmt.kind == "ternary":
        values = rng.integers(-1, 2, (rows, cols), dtype=np.int8)
    elif fmt.symmetric:
        low, high = fmt.code_range()
        values = rng.integers(low, high + 1, (rows, cols), dtype=np.int16)
    else:
        values = rng.integers(0, 1 << fmt.bits, (rows, cols), dtype=np.int16)
    if group == PER_TENSOR:
        scales = np.array([[0.02]], dtype=np.float32)
    else:
        n = cols // group if group > 0 else 1
        scales = np.full((rows, n), 0.02, dtype=np.float16)
    zeros = None if fmt.symmetric else np.full(scales.shape, 1 << (fmt.bits - 1), dtype=np.uint8)
    return pack_values(fmt_name, values, scales, group, zeros)


def copies(tensor: QuantizedTensor, act_quant: str, layout: str) -> list:
    """Enough prepared copies (separate memory) of one matrix that the bytes the kernels read exceed the
    working set."""
    first = kernels.prepare_linear(tensor, act_quant, layout)
    n = max(1, -(-WORKING_SET // first.kernel_nbytes)) if WORKING_SET > 0 else 1
    out = [first]
    for _ in range(n - 1):
        copy = QuantizedTensor(tensor.format, tensor.shape, tensor.group_size, tensor.data.copy(),
                               tensor.scales.copy(), None if tensor.zeros is None else tensor.zeros.copy())
        out.append(kernels.prepare_linear(copy, act_quant, layout))
    return out


BITPLANE_FORMATS = ("ek_i2", "ek_i3", "ek_i4", "ek_u2", "ek_u3", "ek_u4")


def applies(fmt: str, layout: str) -> bool:
    return (layout in ("auto", "native") or (layout == "lut3" and get_format(fmt).kind == "ternary")
            or (layout == "bitplane" and fmt in BITPLANE_FORMATS))


def measure(layers: list, tokens: int, seconds: float) -> tuple[float, float, float]:
    """(GB/s of bytes read, ms per call, CPU ms per call per thread), cycling through the copies for about
    `seconds`. The CPU time (process time / threads) leaves out the time other processes held our cores."""
    x = np.random.default_rng(0).standard_normal((tokens, layers[0].cols)).astype(np.float32)
    for lin in layers[:2]:
        lin(x)                                                        # warm-up (pool, page faults of outputs)
    calls, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while True:
        for lin in layers:
            lin(x)
        calls += len(layers)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    per_call = elapsed / calls
    cpu = (time.process_time() - cpu_start) / calls / kernels.get_num_threads()
    return layers[0].kernel_nbytes / per_call / 1e9, per_call * 1e3, cpu * 1e3


CEILING_CASES = [("ek_t2", PER_TENSOR, "native"), ("ek_t2", PER_TENSOR, "lut3"), ("ek_t1", PER_TENSOR, "native"),
                 ("ek_t1", PER_TENSOR, "lut3"), ("ek_i4", 32, "native"), ("ek_i4", PER_CHANNEL, "native"),
                 ("ek_i4", 32, "bitplane"), ("ek_i2", 32, "native"), ("ek_i2", 32, "bitplane"),
                 ("ek_i3", 32, "native"), ("ek_i3", 32, "bitplane"), ("ek_u4", 32, "native"),
                 ("ek_u4", 32, "bitplane"), ("ek_i8", PER_CHANNEL, "native")]


def compute_ceilings(tokens_list: list[int], rounds: int = 15, formats: list[str] | None = None) -> None:
    """Kernels on one L2-resident 640 x 2560 layer, 1 thread, CPU time, rounds interleaved across the cases
    (so a busy moment on the shared cores hits every case alike), best round printed: the speed a kernel
    reaches when memory is not the limit. The numbers behind the layout choice in src/lut.c."""
    kernels.set_num_threads(1)
    rng = np.random.default_rng(0)
    cases = []
    for fmt, group, layout in CEILING_CASES:
        if formats and fmt not in formats:
            continue
        old = GROUP.get(fmt)
        GROUP[fmt] = group
        cases.append((fmt, group, kernels.prepare_linear(make_tensor(fmt, 640, 2560, rng), "int8_absmax", layout)))
        if old is None:
            del GROUP[fmt]
        else:
            GROUP[fmt] = old
    for tokens in tokens_list:
        x = rng.standard_normal((tokens, 2560)).astype(np.float32)
        calls = max(2, 100 // tokens)
        best = [float("inf")] * len(cases)
        for _ in range(rounds):
            for i, (_, _, lin) in enumerate(cases):
                out = np.empty((tokens, 640), dtype=np.float32)
                start = time.process_time()
                for _ in range(calls):
                    lin(x, out)
                best[i] = min(best[i], (time.process_time() - start) / calls)
        for (fmt, group, lin), seconds in zip(cases, best):
            print(f"{fmt:7} group {group:>3} {lin.layout:6} {lin.last_variant:20} T={tokens:<4} "
                  f"{seconds * 1e6:9.1f} us/call {640 * 2560 * tokens / seconds / 1e9:7.1f} Gw/s (CPU time)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", nargs="+", default=None,
                        help=f"formats to time (default {' '.join(DEFAULT_FORMATS)}; with --ceiling: filters its "
                             "cases, default all of them)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--tokens", nargs="+", type=int, default=[1])
    parser.add_argument("--isas", nargs="+", default=["auto"], help="kernel ISAs to compare (default: auto)")
    parser.add_argument("--layouts", nargs="+", default=["auto"], help="auto, native, lut3, bitplane")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds of --ceiling")
    parser.add_argument("--shapes", nargs="+", type=int, default=None,
                        help="indices into the BitNet shapes (default: all four)")
    parser.add_argument("--seconds", type=float, default=0.4)
    parser.add_argument("--repeat", type=int, default=1, help="measure each cell N times, print the best")
    parser.add_argument("--working-set-mib", type=int, default=300,
                        help="bytes cycled through per cell (default 300: DRAM; 0: one copy, cache-resident "
                             "for small shapes, which measures the kernel's compute ceiling instead)")
    parser.add_argument("--ceiling", action="store_true",
                        help="only the compute ceilings (L2-resident layer, CPU time, interleaved rounds)")
    parser.add_argument("--lm-head", action="store_true", help="also time the 128256 x 2560 int8 LM head")
    args = parser.parse_args()
    globals()["WORKING_SET"] = args.working_set_mib << 20
    info = kernels.info()
    if args.ceiling:
        print(f"kernels: library={info['library']}")
        for isa in args.isas:
            kernels.set_isa(isa)
            print(f"isa {isa}:")
            compute_ceilings(args.tokens, args.rounds, args.formats)
        kernels.set_isa("auto")
        return
    print(f"kernels: compiled={info['compiled']} isa={info['isa']} available={info['available_isas']} "
          f"library={info['library']}")
    rng = np.random.default_rng(0)
    bandwidth = {}
    for threads in args.threads:
        bandwidth[threads] = max(kernels.read_bandwidth(512 << 20, threads) for _ in range(args.repeat))
        print(f"read bandwidth, {threads} thread(s), 512 MiB: {bandwidth[threads]:.1f} GB/s")
    print(f"{'format':7} {'shape':>13} {'T':>4} {'thr':>3} {'layout':6} {'kernel':22} {'GB/s':>6} {'%bw':>5} "
          f"{'Gw/s':>6} {'ms/call':>8} {'cpuGw/s':>7}")
    chosen = BITNET_SHAPES if args.shapes is None else [BITNET_SHAPES[i] for i in args.shapes]
    shapes = [(f, s) for f in args.formats or DEFAULT_FORMATS for s in chosen]
    if args.lm_head:
        shapes.append(("ek_i8", LM_HEAD))
    for fmt, (rows, cols) in shapes:
        tensor = make_tensor(fmt, rows, cols, rng)
        for isa in args.isas:
            kernels.set_isa(isa)
            for layout in [lay for lay in args.layouts if applies(fmt, lay)]:
                layers = copies(tensor, "int8_absmax", layout)
                for tokens in args.tokens:
                    for threads in args.threads:
                        kernels.set_num_threads(threads)
                        runs = [measure(layers, tokens, args.seconds) for _ in range(args.repeat)]
                        gbs, ms, _ = max(runs)
                        cpu_ms = min(run[2] for run in runs)
                        gws, cpu_gws = (rows * cols * tokens / (t * 1e6) for t in (ms, cpu_ms))
                        print(f"{fmt:7} {rows:>6}x{cols:<6} {tokens:>4} {threads:>3} {layers[0].layout:6} "
                              f"{layers[0].last_variant:22} {gbs:6.1f} {100 * gbs / bandwidth[threads]:5.0f} "
                              f"{gws:6.1f} {ms:8.3f} {cpu_gws:7.1f}", flush=True)
                del layers
        kernels.set_isa("auto")


if __name__ == "__main__":
    main()
