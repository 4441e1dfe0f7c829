"""Helpers for the kernel tests: random packed weights of every format, and the ISAs this machine runs."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit import kernels
from edgekit.formats import PER_CHANNEL, PER_TENSOR, get_format, pack_values
from edgekit.kernels import _native

INT_FORMATS = ["ek_t2", "ek_t1", "ek_i2", "ek_i3", "ek_i4", "ek_u2", "ek_u3", "ek_u4", "ek_i8"]


def available_isas() -> list[str]:
    lib = _native.load()
    if lib is None:
        return []
    return [name for name, i in _native.ISA_IDS.items() if lib.ek_isa_available(i)]


def random_tensor(rng: np.random.Generator, fmt_name: str, rows: int, cols: int, group: int):
    """A packed tensor with random codes (full range, so extreme values are exercised) and scales."""
    fmt = get_format(fmt_name)
    if fmt.kind == "ternary":
        values = rng.integers(-1, 2, (rows, cols))
    elif fmt.symmetric:
        low, high = fmt.code_range()
        values = rng.integers(low, high + 1, (rows, cols))
    else:
        values = rng.integers(0, 1 << fmt.bits, (rows, cols))
    if group == PER_TENSOR:
        scales = np.array([[rng.uniform(0.01, 2.0)]], dtype=np.float32)
    else:
        width = cols if group == PER_CHANNEL else group
        n_groups = 1 if group == PER_CHANNEL else -(-cols // width)
        if group > 0:
            from edgekit.formats import padded_cols
            n_groups = padded_cols(fmt, cols, group) // group
        scales = rng.uniform(0.01, 2.0, (rows, n_groups)).astype(np.float16)
    zeros = None
    if not fmt.symmetric:
        zeros = rng.integers(0, 1 << fmt.bits, scales.shape).astype(np.uint8)
    return pack_values(fmt_name, values, scales, group, zeros)


@pytest.fixture
def use_isa():
    """Switch the kernels to one ISA for a test, and back to automatic choice afterwards."""
    def switch(name: str) -> None:
        kernels.set_isa(name)
    yield switch
    kernels.set_isa("auto")
