"""The accelerator's identity and register map: the one source the HLS writer and the PYNQ driver share.

The writer puts `IP_VLNV` into the Vitis HLS export (`config_export -vendor/-library/-ipname/-version`)
and the driver binds to it (`pynq.DefaultIP.bindto`). The register map follows Vitis HLS's s_axilite
layout for `ek_top`'s arguments in order: 0x00 control, 0x04 global interrupt enable, 0x08 IP interrupt
enable, 0x0c IP interrupt status, then each 64-bit pointer as low word, high word and a reserved word
(12 bytes) and each 32-bit scalar as a data word and a reserved word (8 bytes). A striped buffer (below) has
one pointer per AXI port.
"""

from __future__ import annotations

from dataclasses import dataclass

IP_VENDOR, IP_LIBRARY, IP_NAME, IP_VERSION = "edgekit.org", "hls", "ek_top", "1.0"
IP_VLNV = f"{IP_VENDOR}:{IP_LIBRARY}:{IP_NAME}:{IP_VERSION}"
TOP_FUNCTION = "ek_top"

# Control register bits (Vitis HLS ap_ctrl_hs).
AP_START, AP_DONE, AP_IDLE, AP_READY = 0x1, 0x2, 0x4, 0x8


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    width_bits: int   # 32 for scalars and control, 64 for buffer addresses


def _build_register_map() -> dict[str, Register]:
    regs = [Register("CTRL", 0x00, 32), Register("GIER", 0x04, 32), Register("IP_IER", 0x08, 32),
            Register("IP_ISR", 0x0C, 32)]
    offset = 0x10
    for name in BUFFER_ARGS:
        regs.append(Register(name, offset, 64))
        offset += 12
    for name in SCALAR_ARGS:
        regs.append(Register(name, offset, 32))
        offset += 8
    return {r.name: r for r in regs}


# The wide DDR path (hls/include/ek_axi.h): the weights, the KV cache and the LM head are each striped over
# AXI_PORTS masters of AXI_PORT_BITS bits (16-byte beats round-robin over the ports), so a load iteration reads
# a line of AXI_PORTS x AXI_PORT_BITS bits. Each striped buffer has one pointer register per port: its own name
# for port 0, then name_1 .. name_{AXI_PORTS - 1}, each holding the address of that port's region.
AXI_PORTS, AXI_PORT_BITS = 4, 128
BEAT_BYTES = AXI_PORT_BITS // 8
LINE_BYTES = AXI_PORTS * BEAT_BYTES
STRIPED_BUFFERS = ("weights", "kv", "head")


def port_registers(name: str) -> tuple[str, ...]:
    """The pointer registers of one buffer: itself, or for a striped buffer one per port."""
    if name not in STRIPED_BUFFERS:
        return (name,)
    return (name,) + tuple(f"{name}_{p}" for p in range(1, AXI_PORTS))


# ek_top's arguments in order: the layers' buffers, then the LM head's (ek_lmhead.h), then the scalars.
BUFFERS = ("weights", "params", "rope", "kv", "hbuf", "head", "head_params", "top_ids", "top_logits", "logits")
BUFFER_ARGS = tuple(reg for name in BUFFERS for reg in port_registers(name))
SCALAR_ARGS = ("n_tokens", "start_pos", "layer_begin", "layer_end", "head_rows", "write_logits")
REGISTER_MAP: dict[str, Register] = _build_register_map()
