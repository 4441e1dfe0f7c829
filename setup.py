"""Builds edgekit's native kernels (edgekit/kernels/src/*.c) into one shared library.

The library has no Python entry point: edgekit/kernels/_native.py loads it with ctypes, which releases the
GIL around every call. It is built as a setuptools Extension so that `pip install` (editable or wheel) compiles
it with the interpreter's compiler and flags: no TVM, no network, no prebuilt binaries. ISA-specific code picks
its instruction set per function (`__attribute__((target("avx2,...")))`) and is chosen at run time, so one
build runs on any x86-64; NEON sources (neon*.c) compile only for aarch64 (each file guards itself).

If the compiler is missing or fails, the install still succeeds with a warning and edgekit falls back to its
numpy kernels (edgekit.kernels.info() says so), because the pure-Python runtime stays usable on any board.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SRC = Path("edgekit") / "kernels" / "src"

# -ffp-contract=off: no fused multiply-add where the C source writes a multiply and an add, so the float
# steps that must match numpy's rounding (activation quantization, the per-tensor scale) stay bit-exact.
COMPILE_ARGS = ["-O3", "-std=gnu11", "-ffp-contract=off", "-fvisibility=default", "-Wall", "-Wextra",
                "-Wno-unused-parameter"]


class OptionalBuildExt(build_ext):
    """Build the kernels, but let the install go on (numpy fallback) if no C compiler works."""

    def run(self):
        try:
            super().run()
        except Exception as error:  # noqa: BLE001 - any compiler failure means "use the numpy fallback"
            self.warn(f"edgekit native kernels were not built ({error}); the numpy fallback will be used")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as error:  # noqa: BLE001
            self.warn(f"edgekit native kernels were not built ({error}); the numpy fallback will be used")


kernels = Extension(
    "edgekit.kernels._ek_kernels",
    sources=sorted(str(p) for p in SRC.glob("*.c")),
    depends=sorted(str(p) for p in SRC.glob("*.h")),
    include_dirs=[str(SRC)],
    extra_compile_args=COMPILE_ARGS if sys.platform != "win32" else [],
    extra_link_args=["-pthread", "-lm"] if sys.platform != "win32" else [],
)

setup(ext_modules=[kernels], cmdclass={"build_ext": OptionalBuildExt})
