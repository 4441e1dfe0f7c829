"""`--backend fpga`: the accelerator behind edgekit's runtime interface.

EDGEKIT_FPGA_DEVICE chooses the device: "csim" (default) generates the HLS project for the model (cached
by content), builds its C-simulated top function as a shared library and drives it through the same
register-level driver as the board; "pynq" loads EDGEKIT_FPGA_BITSTREAM (with its .hwh) on the board.
EDGEKIT_FPGA_BOARD picks the board file (default kv260); EDGEKIT_FPGA_LM_HEAD the LM head: "fpga" (default:
the design's group-quantized head on the fabric, top-k per decode step; prefill returns every row's logits
for evaluation), or the host's "f32" (the reference's logits) or "int8" (what a board's ARM cores would run).
EDGEKIT_FPGA_HEAD_BITS sets the fabric head's weight bits (4 by default; 8 or 2); EDGEKIT_FPGA_KV_BITS the
device KV cache (8 by default: int8 with a scale per token and kv head, ek_kvcache.h; 32: float32);
EDGEKIT_FPGA_HEAD_SCREEN the decode head's rescored rows after a 2-bit screen (0 by default: the full head);
EDGEKIT_FPGA_ATTN attention on the int8 KV codes ("int", the default with the int8 cache) or in float ("float").
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from edgekit.boards import load_board
from edgekit.errors import ConfigError
from edgekit.fpga.buffers import HostAllocator, PynqAllocator
from edgekit.fpga.devices import CsimDevice
from edgekit.fpga.driver import EkTopDriver, pynq_ip_class
from edgekit.fpga.host import FpgaSession
from edgekit.fpga.hwh import find_ek_top
from edgekit.hls.csim import build_shared_library, cache_root
from edgekit.hls.design import HlsConfig, design_for
from edgekit.hls.model_data import extract_device_data
from edgekit.hls.writer import generate_project
from edgekit.model.model import Model

DEVICES = ("csim", "pynq")


def hls_sources_digest() -> bytes:
    """The headers, top function and testbench this edgekit ships (a cached project must match them)."""
    digest = hashlib.sha256()
    package = resources.files("edgekit.hls")
    for sub in ("include", "src", "tb"):
        for entry in sorted(package.joinpath(sub).iterdir(), key=lambda e: e.name):
            digest.update(entry.name.encode() + entry.read_bytes())
    return digest.digest()


def project_for(model: Model, design, data, board) -> Path:
    """A generated project for exactly these weights, this design and these HLS sources, reused across runs."""
    digest = hashlib.sha256(data.weights.tobytes() + data.params.tobytes() + data.head_words.tobytes()
                            + data.head_params.tobytes() + hls_sources_digest())
    digest.update(json.dumps([design.to_json(), board.name]).encode())
    project = cache_root() / "projects" / digest.hexdigest()[:24]
    if not (project / "manifest.json").is_file():
        try:
            generate_project(model, board, project, design.hls)
        except (ConfigError, OSError):
            if not (project / "manifest.json").is_file():    # not another process that won the race
                raise
    return project


def open_csim_driver(model: Model, design, data, board) -> tuple[EkTopDriver, HostAllocator]:
    allocator = HostAllocator()
    library = build_shared_library(project_for(model, design, data, board))
    return EkTopDriver(CsimDevice(library, allocator)), allocator


def open_pynq_driver() -> tuple[EkTopDriver, PynqAllocator]:
    bitstream = os.environ.get("EDGEKIT_FPGA_BITSTREAM")
    if not bitstream:
        raise ConfigError("EDGEKIT_FPGA_BITSTREAM is not set", fix="point it at the .bit built by the project's Makefile")
    instance = find_ek_top(Path(bitstream).with_suffix(".hwh"))
    allocator = PynqAllocator()
    pynq_ip_class()                            # defined before the overlay loads, so PYNQ binds it by VLNV
    import pynq  # noqa: PLC0415

    overlay = pynq.Overlay(bitstream)
    return getattr(overlay, instance).driver, allocator


class FpgaBackend:
    name = "fpga"

    def __init__(self, model: Model, context_length: int | None = None):
        device = os.environ.get("EDGEKIT_FPGA_DEVICE", "csim")
        if device not in DEVICES:
            raise ConfigError(f"EDGEKIT_FPGA_DEVICE={device!r} is not one of {DEVICES}")
        self.model = model
        board = load_board(os.environ.get("EDGEKIT_FPGA_BOARD", "kv260"))
        max_seq = min(context_length or model.config.max_seq_len, model.config.max_seq_len)
        head_bits = os.environ.get("EDGEKIT_FPGA_HEAD_BITS", "4")
        if head_bits not in ("8", "4", "2"):
            raise ConfigError(f"EDGEKIT_FPGA_HEAD_BITS={head_bits!r} is not 8, 4 or 2")
        kv_bits = os.environ.get("EDGEKIT_FPGA_KV_BITS", "8")
        if kv_bits not in ("8", "32"):
            raise ConfigError(f"EDGEKIT_FPGA_KV_BITS={kv_bits!r} is not 8 or 32")
        screen = os.environ.get("EDGEKIT_FPGA_HEAD_SCREEN", "0")
        if not screen.isdigit():
            raise ConfigError(f"EDGEKIT_FPGA_HEAD_SCREEN={screen!r} is not a row count", fix="pass 0 or e.g. 64")
        attn = os.environ.get("EDGEKIT_FPGA_ATTN", "int" if kv_bits == "8" else "float")
        if attn not in ("int", "float"):
            raise ConfigError(f"EDGEKIT_FPGA_ATTN={attn!r} is not int or float", fix="int needs EDGEKIT_FPGA_KV_BITS=8")
        self.design = design_for(model.config, HlsConfig(max_seq=max_seq, head_bits=int(head_bits),
                                                         kv_bits=int(kv_bits), head_screen=int(screen),
                                                         attn_int=attn == "int"))
        data = extract_device_data(model, self.design)
        driver, allocator = (open_csim_driver(model, self.design, data, board) if device == "csim"
                             else open_pynq_driver())
        self.session = FpgaSession(model, self.design, data, driver, allocator,
                                   lm_head=os.environ.get("EDGEKIT_FPGA_LM_HEAD", "fpga"))

    @property
    def position(self) -> int:
        return self.session.position

    @property
    def context_length(self) -> int:
        return self.design.max_seq

    def prefill(self, tokens: Sequence[int], last_only: bool = False) -> np.ndarray:
        """Logits [T, vocab] of every token; with last_only [1, vocab] of the last (the fabric head returns
        only its top-k then, as a generation on the board does: what the estimate's TTFT counts)."""
        if last_only:
            return self.session.last_logits(tokens)[None, :]
        return self.session.prefill_logits(tokens)

    def decode(self, token: int) -> np.ndarray:
        return self.session.decode_logits(token)

    def reset(self) -> None:
        self.session.position = 0

    def close(self) -> None:
        self.session.buffers = {}
