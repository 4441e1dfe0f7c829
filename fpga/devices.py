"""Device back ends behind the driver's register interface (`read(offset)` / `write(offset, value)`,
as pynq.DefaultIP offers on the board).

- `MemoryDevice`: a register file that records every access; starting it completes at once. Tests
  assert the exact register traffic against it.
- `CsimDevice`: the same register file, but starting it calls the C-simulated `ek_top` (the project's
  src/ek_top.cpp built as a shared library) on the buffers the pointer registers name.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from edgekit.errors import ConfigError
from edgekit.fpga.buffers import HostAllocator
from edgekit.hls import ip

MASK32 = 0xFFFF_FFFF


class MemoryDevice:
    """Registers in a dict; `log` holds ("read" | "write", offset, value) in order."""

    def __init__(self):
        self.registers: dict[int, int] = {}
        self.log: list[tuple[str, int, int]] = []
        self.starts = 0

    def write(self, offset: int, value: int) -> None:
        if offset % 4 or not 0 <= value <= MASK32:
            raise ConfigError(f"register write at 0x{offset:x} of {value!r}: offsets are word-aligned, "
                              "values 32-bit")
        self.log.append(("write", offset, value))
        if offset == ip.REGISTER_MAP["CTRL"].offset and value & ip.AP_START:
            self.starts += 1
            self.execute()
            value = ip.AP_DONE | ip.AP_IDLE | ip.AP_READY
        self.registers[offset] = value

    def read(self, offset: int) -> int:
        value = self.registers.get(offset, ip.AP_IDLE if offset == 0 else 0)
        self.log.append(("read", offset, value))
        if offset == ip.REGISTER_MAP["CTRL"].offset:   # ap_done clears on read (Vitis ap_ctrl_hs)
            self.registers[offset] = value & ~ip.AP_DONE
        return value

    def register(self, name: str) -> int:
        reg = ip.REGISTER_MAP[name]
        value = self.registers.get(reg.offset, 0)
        if reg.width_bits == 64:
            value |= self.registers.get(reg.offset + 4, 0) << 32
        return value

    def execute(self) -> None:
        """The accelerator's work; a memory-backed device does none."""


class CsimDevice(MemoryDevice):
    """Runs the C-simulated top function when started, on host buffers from `allocator`."""

    def __init__(self, library: str | Path, allocator: HostAllocator):
        super().__init__()
        self.allocator = allocator
        self.library = ctypes.CDLL(str(library))
        fn = self.library[ip.TOP_FUNCTION]
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p] * len(ip.BUFFER_ARGS) + [ctypes.c_int] * len(ip.SCALAR_ARGS)
        self.top = fn
        counters = self.library["ek_counters"]
        counters.restype = ctypes.POINTER(ctypes.c_long)
        self._counters = counters()

    COUNTERS = ("tlmm_cycles", "table_cycles", "attention_macs", "calls", "head_cycles", "axi_lines")

    def counters(self) -> dict[str, int]:
        """Work the C-simulated design did so far (hls/include/ek_types.h EK_COUNTER_*)."""
        return {name: int(self._counters[i]) for i, name in enumerate(self.COUNTERS)}

    def pointer(self, name: str) -> int:
        buffer, offset = self.allocator.resolve(self.register(name))
        return buffer.ctypes.data + offset

    def execute(self) -> None:
        pointers = [self.pointer(name) for name in ip.BUFFER_ARGS]
        scalars = [np.int32(np.uint32(self.register(name))).item() for name in ip.SCALAR_ARGS]
        self.top(*pointers, *scalars)
