"""Device buffers through one allocator interface: `pynq.allocate` on the board, host memory with made-up
physical addresses for the memory-backed and C-simulation devices.

A buffer is a numpy array with `device_address` (what the driver writes into a pointer register) and
`sync_to_device()` / `sync_from_device()` (cache flush / invalidate on the board; nothing on the host).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edgekit.errors import ConfigError

PAGE = 4096


class Allocator(Protocol):
    def allocate(self, shape: tuple[int, ...], dtype) -> np.ndarray: ...


class HostBuffer(np.ndarray):
    """A host array standing in for contiguous device memory at `device_address`."""

    device_address: int = 0

    def sync_to_device(self) -> None:
        """Nothing to flush: the simulated device reads host memory."""

    def sync_from_device(self) -> None:
        """Nothing to invalidate."""


class HostAllocator:
    """Bump allocator of page-aligned fake physical addresses; `resolve` maps an address back to memory."""

    def __init__(self, base: int = 0x4000_0000):
        self.next_address = base
        self.buffers: list[HostBuffer] = []

    def allocate(self, shape: tuple[int, ...], dtype) -> HostBuffer:
        buffer = np.zeros(shape, dtype=dtype).view(HostBuffer)
        buffer.device_address = self.next_address
        self.next_address += -(-max(buffer.nbytes, 1) // PAGE) * PAGE
        self.buffers.append(buffer)
        return buffer

    def resolve(self, address: int) -> tuple[HostBuffer, int]:
        """(buffer, byte offset) holding `address`; a stray address is a driver bug worth a clear error."""
        for buffer in self.buffers:
            if buffer.device_address <= address < buffer.device_address + max(buffer.nbytes, 1):
                return buffer, address - buffer.device_address
        raise ConfigError(f"device address 0x{address:x} is not inside any allocated buffer",
                          fix="program the pointer registers with buffers from this allocator")


class PynqAllocator:
    """`pynq.allocate` (board only: pynq pins numpy<2, so it is imported here and nowhere else)."""

    def __init__(self):
        try:
            import pynq  # noqa: PLC0415
        except ImportError:
            raise ConfigError("pynq is not installed (it is only available on the board)",
                              fix='on the board: pip install "edgekit[pynq]"; elsewhere use the csim device') from None
        self._allocate = pynq.allocate

    def allocate(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        buffer = self._allocate(shape=shape, dtype=dtype)
        return buffer
