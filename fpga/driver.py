"""The PYNQ-style driver of the `ek_top` IP: named registers from hls/ip.py's register map.

`EkTopDriver` talks to anything with `read(offset)` / `write(offset, value)`: a `pynq.DefaultIP` on the
board (see `pynq_ip_class`, bound by VLNV), or the memory-backed and C-simulation devices here.
"""

from __future__ import annotations

import time

from edgekit.errors import ConfigError, GenerationError
from edgekit.hls import ip


class EkTopDriver:
    def __init__(self, mmio, timeout_s: float = 600.0):
        self.mmio = mmio
        self.timeout_s = timeout_s

    def write_register(self, name: str, value: int) -> None:
        reg = ip.REGISTER_MAP[name]
        value = int(value) & ((1 << reg.width_bits) - 1)        # scalars are int32 two's complement
        self.mmio.write(reg.offset, value & 0xFFFF_FFFF)
        if reg.width_bits == 64:
            self.mmio.write(reg.offset + 4, value >> 32)

    def read_register(self, name: str) -> int:
        reg = ip.REGISTER_MAP[name]
        value = self.mmio.read(reg.offset)
        if reg.width_bits == 64:
            value |= self.mmio.read(reg.offset + 4) << 32
        return value

    def set_buffers(self, buffers: dict) -> None:
        """Write each buffer's device address into its pointer register, in register-map order; a striped buffer
        (hls/ip.py STRIPED_BUFFERS) is AXI_PORTS equal regions, one per port register."""
        missing = [name for name in ip.BUFFERS if name not in buffers]
        if missing:
            raise ConfigError(f"buffers missing for {missing}")
        for name in ip.BUFFERS:
            registers, buffer = ip.port_registers(name), buffers[name]
            region = buffer.nbytes // len(registers)
            if len(registers) > 1 and region * len(registers) != buffer.nbytes:
                raise ConfigError(f"striped buffer {name!r} of {buffer.nbytes} bytes is not {len(registers)} equal "
                                  "port regions", fix="lay it out with edgekit.hls.packing.stripe_ports")
            for port, register in enumerate(registers):
                self.write_register(register, buffer.device_address + port * region)

    def start(self, n_tokens: int, start_pos: int, layer_begin: int, layer_end: int, head_rows: int = 0,
              write_logits: bool = False) -> None:
        """Layers [layer_begin, layer_end) on n_tokens tokens from start_pos, then the LM head on the last
        head_rows of them (top-k always, the logits rows when write_logits); no layers = a head-only call."""
        values = (n_tokens, start_pos, layer_begin, layer_end, head_rows, int(write_logits))
        for name, value in zip(ip.SCALAR_ARGS, values):
            self.write_register(name, value)
        self.write_register("CTRL", ip.AP_START)

    def wait(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not self.read_register("CTRL") & ip.AP_DONE:
            if time.monotonic() > deadline:
                raise GenerationError(f"ek_top did not finish within {self.timeout_s:.0f} s",
                                      fix="check the bitstream and the buffer addresses")

    def run(self, n_tokens: int, start_pos: int, layer_begin: int, layer_end: int, head_rows: int = 0,
            write_logits: bool = False) -> None:
        self.start(n_tokens, start_pos, layer_begin, layer_end, head_rows, write_logits)
        self.wait()


def pynq_ip_class():
    """The `pynq.DefaultIP` subclass PYNQ binds to our VLNV (board only: imports pynq)."""
    import pynq  # noqa: PLC0415

    class EkTopIP(pynq.DefaultIP):
        bindto = [ip.IP_VLNV]

        def __init__(self, description):
            super().__init__(description=description)
            self.driver = EkTopDriver(self)

    return EkTopIP
