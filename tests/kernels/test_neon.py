"""The ARM NEON kernels (edgekit/kernels/src/neon*.c), built with Debian's aarch64 cross compiler and run under
qemu-user: every variant bit-exact against golden vectors from the numpy reference (edgekit/kernels/reference.py).

The test writes one case file per (format, scales, shape) into tmp_path (packed weights, int8 activations or
float activations, scales, zero points, expected float32 outputs), compiles the kernel library's sources (all
of src/*.c, as setup.py does) with tests/kernels/neon/driver.c into a static aarch64 binary, and runs it under
qemu-aarch64; the driver compares bit for bit (see its header for the checks). Without the toolchain the test
skips, except under CI (CI=true), where .ci/run installs it and a missing tool is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgekit.formats import PER_CHANNEL, PER_TENSOR, get_format
from edgekit.kernels import reference
from tests.conftest import REPO_ROOT
from tests.kernels.conftest import INT_FORMATS, random_tensor

SRC = REPO_ROOT / "edgekit" / "kernels" / "src"
DRIVER = REPO_ROOT / "tests" / "kernels" / "neon" / "driver.c"
CC, QEMU = "aarch64-linux-gnu-gcc", "qemu-aarch64"
# The two builds: the brief's explicit dotprod target, and setup.py's own flags with the compiler's default
# armv8-a baseline (what `pip install` does on an ARM board: neon_int.c then enables dotprod by pragma).
COMMON = ["-std=gnu11", "-ffp-contract=off", "-Wall", "-Wextra", "-Wno-unused-parameter"]
BUILDS = {"dotprod": ["-O2", "-march=armv8.2-a+dotprod"], "baseline": ["-O3"]}
# (rows, cols, tokens): rows not multiples of the 16-row LUT tile or the 4-row float tile, cols not multiples of
# any chunk (64/32/16/80 columns), T = 1 (decode GEMV) and T > 1 with and without a partial block of 4 tokens;
# 2100 columns pass the LUT kernel's 256-byte int16 flush.
SHAPES = [(1, 5, 1), (17, 37, 1), (33, 200, 3), (16, 160, 1), (40, 517, 5), (19, 333, 4), (50, 1000, 2),
          (35, 2100, 1), (21, 260, 9), (20, 256, 4)]
# plus random shapes (fixed seed, so a failure names a reproducible case file)
SHAPES += [tuple(int(v) for v in shape) for shape in zip(np.random.default_rng(4).integers(1, 70, 4),
                                                           np.random.default_rng(5).integers(1, 1500, 4),
                                                           np.random.default_rng(6).integers(1, 8, 4))]


def tool_or_skip(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found (apt-get install gcc-aarch64-linux-gnu qemu-user)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def write_case(path: Path, tensor, act_kind: int, acts: tuple[np.ndarray, ...], want: np.ndarray) -> None:
    """One golden case in the driver's format (see driver.c)."""
    fmt = get_format(tensor.format)
    is_float = fmt.kind == "float"
    cols = tensor.cols if is_float else tensor.padded_cols
    per_tensor = tensor.group_size == PER_TENSOR
    group = cols if per_tensor or is_float else tensor.group_width
    scales = np.zeros(0, np.float32) if is_float else np.ascontiguousarray(tensor.scales, np.float32).reshape(-1)
    x_cols = acts[0].shape[1] if act_kind == 1 else 0
    header = [fmt.format_id, act_kind, tensor.rows, cols, tensor.data.shape[1], group, int(per_tensor),
              want.shape[0], scales.size, int(tensor.zeros is not None), x_cols]
    parts = [b"EKNEON01", np.array(header, "<i8").tobytes(), np.ascontiguousarray(tensor.data).tobytes(),
             scales.astype("<f4").tobytes()]
    if tensor.zeros is not None:
        parts.append(np.ascontiguousarray(tensor.zeros).tobytes())
    parts += [np.ascontiguousarray(a).tobytes() for a in acts]
    parts.append(np.ascontiguousarray(want, "<f4").tobytes())
    path.write_bytes(b"".join(parts))


def padded_q(x: np.ndarray, padded: int) -> tuple[np.ndarray, np.ndarray]:
    q, scale = reference.quantize_absmax_int8(x)
    out = np.zeros((x.shape[0], padded), dtype=np.int8)
    out[:, : x.shape[1]] = q
    return out, scale.astype(np.float32)


def float_in_column_order(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """scalar.c's float kernel in numpy: y = ((0 + w0 x0) + w1 x1) + ..., float32 at every step."""
    total = np.zeros((x.shape[0], w.shape[0]), dtype=np.float32)
    for k in range(w.shape[1]):
        total += x[:, k : k + 1] * w[None, :, k]
    return total


def integer_cases(rng: np.random.Generator, out: Path) -> list[Path]:
    paths = []
    for fmt in INT_FORMATS:
        for group in get_format(fmt).group_sizes:
            for rows, cols, tokens in SHAPES:
                tensor = random_tensor(rng, fmt, rows, cols, group)
                x = (rng.standard_normal((tokens, cols)) * rng.uniform(0.1, 10)).astype(np.float32)
                q, a_scale = padded_q(x, tensor.padded_cols)
                want = reference.linear_int8(tensor, q, a_scale)
                path = out / f"{fmt}_g{group}_{rows}x{cols}_t{tokens}.case"
                write_case(path, tensor, 0, (q, a_scale), want)
                paths.append(path)
    return paths


def float_activation_cases(rng: np.random.Generator, out: Path) -> list[Path]:
    """Float activations on integer weights: ek_linear quantizes them (ek_quantize_absmax_i8) before the kernel."""
    paths = []
    for fmt, group in [("ek_t2", PER_TENSOR), ("ek_i4", 32), ("ek_u3", 64), ("ek_t1", PER_CHANNEL)]:
        for rows, cols, tokens in [(23, 301, 1), (18, 130, 6)]:
            tensor = random_tensor(rng, fmt, rows, cols, group)
            x = (rng.standard_normal((tokens, cols)) * 3).astype(np.float32)
            q, a_scale = padded_q(x, tensor.padded_cols)
            path = out / f"{fmt}_g{group}_{rows}x{cols}_t{tokens}_xf32.case"
            write_case(path, tensor, 1, (x,), reference.linear_int8(tensor, q, a_scale))
            paths.append(path)
    return paths


def float_weight_cases(rng: np.random.Generator, out: Path) -> list[Path]:
    from edgekit.kernels.api import as_quantized
    paths = []
    for dtype in (np.float16, np.float32):
        for rows, cols, tokens in SHAPES:
            w = rng.standard_normal((rows, cols)).astype(dtype)
            x = rng.standard_normal((tokens, cols)).astype(np.float32)
            want = float_in_column_order(w.astype(np.float32), x)
            path = out / f"{np.dtype(dtype).name}_{rows}x{cols}_t{tokens}.case"
            write_case(path, as_quantized(w), 1, (x,), want)
            paths.append(path)
    return paths


@pytest.fixture(scope="module")
def toolchain() -> tuple[str, str]:
    return tool_or_skip(CC), tool_or_skip(QEMU)


@pytest.fixture(scope="module")
def drivers(toolchain, tmp_path_factory) -> dict[str, Path]:
    """The driver built twice (see BUILDS) from every source setup.py compiles."""
    out = tmp_path_factory.mktemp("neon_build")
    sources = sorted(str(p) for p in SRC.glob("*.c")) + [str(DRIVER)]
    built = {}
    for name, flags in BUILDS.items():
        binary = out / f"driver_{name}"
        cmd = [toolchain[0], *flags, *COMMON, "-static", "-pthread", f"-I{SRC}", *sources, "-lm", "-o", str(binary)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr}"
        neon_warnings = [line for line in done.stderr.splitlines() if "neon" in line and "warning" in line]
        assert not neon_warnings, "\n".join(neon_warnings)
        built[name] = binary
    return built


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, list[Path]]:
    out = tmp_path_factory.mktemp("neon_cases")
    rng = np.random.default_rng(20261201)
    return {"integer": integer_cases(rng, out), "float_activations": float_activation_cases(rng, out),
            "float_weights": float_weight_cases(rng, out)}


def run_driver(toolchain, binary: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([toolchain[1], str(binary), *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **env})


def expected_checks(path: Path) -> set[str]:
    """The checks the driver must report as ok for one case (the LUT variant only covers ternary)."""
    name = path.name
    if name.startswith(("float16", "float32")):
        return {"variant", "linear"}
    checks = {"decode", "linear"}
    if not name.endswith("_xf32.case"):
        checks.add("variant")
    return checks


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_every_neon_variant_is_bit_exact_under_qemu(build, drivers, cases, toolchain):
    paths = [p for group in cases.values() for p in group]
    done = run_driver(toolchain, drivers[build], "--threads", "2", *map(str, paths))
    lines = done.stdout.splitlines()
    failures = [line for line in lines if line.startswith(("FAIL", "fallback"))]  # no shape leaves NEON
    assert done.returncode == 0 and not failures, "\n".join(failures[:20]) + done.stderr
    assert lines[-1] == f"threads 2 cases {len(paths)} passed"
    seen: dict[str, set[str]] = {}
    kernels_run: set[str] = set()
    for line in lines:
        if line.startswith("ok "):
            _, path, check, kernel = line.split()
            seen.setdefault(Path(path).name, set()).add(check)
            kernels_run.add(kernel)
    for path in paths:
        assert expected_checks(path) <= seen.get(path.name, set()), (path.name, seen.get(path.name))
    # Both integer variants ran (the LUT one on every ternary case it accepts) and so did both float kernels.
    lut_ok = [line for line in lines if line.startswith("ok ") and "_lut_neon" in line]
    ternary_single = [p for p in cases["integer"] if p.name.startswith(("ek_t2", "ek_t1_g-1", "ek_t1_g0"))]
    assert len(lut_ok) == len(ternary_single)
    # Both modes of the sdot kernel (plane order where groups cover whole int32 lanes, else column order).
    assert {"t2_sdot_neon/plane", "t2_sdot_neon/column", "t1_sdot_neon/plane", "t1_sdot_neon/column",
            "i2_sdot_neon/plane", "u2_sdot_neon/plane", "i4_sdot_neon/plane", "u4_sdot_neon/plane",
            "i8_sdot_neon/plane", "i3_sdot_neon/column", "u3_sdot_neon/column", "t2_lut_neon", "t1_lut_neon",
            "f16_colorder_neon", "f32_colorder_neon"} <= kernels_run
    plane_g32 = {line.split()[1] for line in lines if "_g32_" in line and "2_sdot_neon/plane" in line}
    assert any("_256_" in p or "x256_" in p for p in plane_g32) and any("x1000_" in p for p in plane_g32)


def driver_info(toolchain, binary: Path, **env: str) -> dict[str, str]:
    done = run_driver(toolchain, binary, "--info", **env)
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(line.split(" ", 1) for line in done.stdout.splitlines())


def test_dispatcher_chooses_neon_on_aarch64(drivers, toolchain):
    info = driver_info(toolchain, drivers["baseline"])
    assert info["neon_available"] == "1" and info["isa"] == "neon"
    assert info["decode_kernel_t2"] == "t2_sdot_neon" and info["prefill_kernel_t2"] == "t2_sdot_neon"


def test_lut_kernel_through_the_dispatcher_when_requested(drivers, cases, toolchain):
    """EDGEKIT_NEON_LUT=1 routes ternary decode (T = 1) through the LUT kernel; ek_linear stays bit-exact."""
    info = driver_info(toolchain, drivers["baseline"], EDGEKIT_NEON_LUT="1")
    assert info["decode_kernel_t2"] == "t2_lut_neon" and info["prefill_kernel_t2"] == "t2_sdot_neon"
    paths = [p for p in cases["integer"] if p.name.startswith(("ek_t2", "ek_t1"))]
    done = run_driver(toolchain, drivers["baseline"], "--threads", "3", *map(str, paths), EDGEKIT_NEON_LUT="1")
    assert done.returncode == 0, "\n".join(line for line in done.stdout.splitlines() if "FAIL" in line)[:4000]
    ran = {Path(line.split()[1]).name: line.split()[3] for line in done.stdout.splitlines()
           if line.startswith("ok ") and " linear " in line}
    for path in paths:
        grouped_t1 = path.name.startswith("ek_t1_g") and not path.name.startswith(("ek_t1_g-1_", "ek_t1_g0_"))
        decode = path.name.endswith("_t1.case")
        fmt = path.name[3:5]
        want = ("int_dot_scalar" if grouped_t1 else f"{fmt}_lut_neon") if decode else f"{fmt}_sdot_neon"
        assert ran[path.name] == want, (path.name, ran[path.name])
    # the scalar fallback is the dispatcher's documented answer to a declined shape, with the reason logged
    fallbacks = [line for line in done.stdout.splitlines() if line.startswith("fallback")]
    assert fallbacks and all("5-column bytes straddle groups" in line for line in fallbacks)


def test_neon_sources_compile_to_nothing_off_aarch64(tmp_path):
    """Each neon*.c guards itself (#if defined(__aarch64__)): on this host its object defines no symbol at all."""
    cc, nm = shutil.which("cc") or shutil.which("gcc"), shutil.which("nm")
    if cc is None or nm is None:
        pytest.skip("no host C compiler or nm")
    for source in sorted(SRC.glob("neon*.c")):
        obj = tmp_path / f"{source.stem}.o"
        done = subprocess.run([cc, "-std=gnu11", "-Wall", "-c", str(source), f"-I{SRC}", "-o", str(obj)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        defined = subprocess.run([nm, "--defined-only", str(obj)], capture_output=True, text=True, check=True)
        assert defined.stdout.strip() == "", (source.name, defined.stdout)
