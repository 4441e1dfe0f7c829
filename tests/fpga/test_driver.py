"""The driver's exact register traffic on a memory-backed device, and the same driver end to end on the
C-simulated top function (bit-exact against the numpy integer reference, greedy text as the reference)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.boards import load_board
from edgekit.errors import ConfigError
from edgekit.fpga.backend import project_for
from edgekit.fpga.buffers import HostAllocator
from edgekit.fpga.devices import CsimDevice, MemoryDevice
from edgekit.fpga.driver import EkTopDriver
from edgekit.fpga.host import FpgaSession
from edgekit.fpga.hwh import find_ek_top
from edgekit.hls import ip
from edgekit.hls.csim import build_shared_library
from edgekit.hls.design import HlsConfig, design_for
from edgekit.hls.model_data import extract_device_data
from edgekit.hls.packing import unstripe_ports
from edgekit.hls.reference import HlsReference
from edgekit.model import load
from edgekit.model.sampling import SamplingConfig
from edgekit.runtime import generate_tokens, open_backend


def test_register_map_follows_the_vitis_layout():
    # ek_top's pointer arguments in order (a striped buffer has one per AXI port), 12 bytes each, then the scalars
    offsets = {name: reg.offset for name, reg in ip.REGISTER_MAP.items()}
    pointers = ["weights", "weights_1", "weights_2", "weights_3", "params", "rope", "kv", "kv_1", "kv_2", "kv_3",
                "hbuf", "head", "head_1", "head_2", "head_3", "head_params", "top_ids", "top_logits", "logits"]
    scalars = ["n_tokens", "start_pos", "layer_begin", "layer_end", "head_rows", "write_logits"]
    expected = {"CTRL": 0x00, "GIER": 0x04, "IP_IER": 0x08, "IP_ISR": 0x0C}
    expected.update({name: 0x10 + 12 * i for i, name in enumerate(pointers)})
    expected.update({name: 0x10 + 12 * len(pointers) + 8 * i for i, name in enumerate(scalars)})
    assert offsets == expected
    assert offsets["weights_1"] == 0x1C and offsets["logits"] == 0xE8 and offsets["write_logits"] == 0x11C


def test_ek_top_signature_matches_the_register_map():
    # the hand-written top function and the driver's register map must list the same pointers in the same order
    import re  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    source = (Path(ip.__file__).parent / "src" / "ek_top.cpp").read_text()
    signature = source[source.index('void ek_top('):source.index(") {", source.index('void ek_top('))]
    names = re.findall(r"\*\s*(\w+)", signature)
    assert tuple(names) == ip.BUFFER_ARGS
    assert tuple(re.findall(r"\bint (\w+)", signature)) == ip.SCALAR_ARGS


def test_exact_register_traffic_of_one_call():
    device, allocator = MemoryDevice(), HostAllocator(base=0x1_2345_0000)
    buffers = {name: allocator.allocate((1024,), np.float32) for name in ip.BUFFERS}
    driver = EkTopDriver(device)
    driver.set_buffers(buffers)
    driver.run(n_tokens=5, start_pos=7, layer_begin=0, layer_end=8, head_rows=1)
    base = {name: 0x1_2345_0000 + i * 4096 for i, name in enumerate(ip.BUFFERS)}
    addresses = []                                   # a striped buffer: four 1 KiB port regions of its 4 KiB
    for name in ip.BUFFERS:
        ports = ip.port_registers(name)
        addresses += [base[name] + p * 4096 // len(ports) for p in range(len(ports))]
    assert len(addresses) == 19 and addresses[1] == 0x1_2345_0400
    expected = []
    for offset, address in zip(range(0x10, 0xF4, 12), addresses):
        expected += [("write", offset, address & 0xFFFF_FFFF), ("write", offset + 4, address >> 32)]
    expected += [("write", 0xF4, 5), ("write", 0xFC, 7), ("write", 0x104, 0), ("write", 0x10C, 8),
                 ("write", 0x114, 1), ("write", 0x11C, 0),
                 ("write", 0x00, ip.AP_START), ("read", 0x00, ip.AP_DONE | ip.AP_IDLE | ip.AP_READY)]
    assert device.log == expected
    assert device.starts == 1
    assert device.register("hbuf") == base["hbuf"]
    assert device.register("head_3") == base["head"] + 3 * 1024
    assert device.register("logits") == base["logits"]


def test_a_striped_buffer_must_split_into_equal_port_regions():
    allocator = HostAllocator()
    buffers = {name: allocator.allocate((1024,), np.float32) for name in ip.BUFFERS}
    buffers["kv"] = allocator.allocate((1001,), np.uint8)
    with pytest.raises(ConfigError, match="'kv'.*4 equal port regions"):
        EkTopDriver(MemoryDevice()).set_buffers(buffers)


def test_stripe_ports_round_trips_and_puts_beats_round_robin():
    from edgekit.hls.packing import stripe_ports, unstripe_ports  # noqa: PLC0415

    words = np.arange(1, 20, dtype=np.uint64)          # 152 bytes: three 64-byte lines, the last padded
    striped = stripe_ports(words)
    assert striped.dtype == np.uint8 and striped.size == 3 * ip.LINE_BYTES
    regions = striped.reshape(ip.AXI_PORTS, -1).view(np.uint64)      # [port, words of that port's beats]
    assert regions[1, :2].tolist() == [3, 4] and regions[0, 2:4].tolist() == [9, 10]   # beat 1 -> port 1; beat 4 -> port 0
    np.testing.assert_array_equal(unstripe_ports(striped, np.uint64, words.size), words)


def test_done_clears_on_read_and_bad_writes_are_refused():
    device = MemoryDevice()
    EkTopDriver(device).run(1, 0, 0, 1)
    assert not device.read(0) & ip.AP_DONE
    with pytest.raises(ConfigError, match="32-bit"):
        device.write(0x10, 1 << 32)


def test_stray_addresses_are_refused():
    allocator = HostAllocator()
    allocator.allocate((4,), np.float32)
    with pytest.raises(ConfigError, match="not inside any allocated buffer"):
        allocator.resolve(0x10)


@pytest.fixture(scope="module")
def csim_setup(models):
    model = load(models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin")
    design = design_for(model.config, HlsConfig(max_seq=48, tile_tokens=4))
    data = extract_device_data(model, design)
    library = build_shared_library(project_for(model, design, data, load_board("kv260")))
    return model, design, data, library


@pytest.mark.slow
def test_csim_device_runs_the_driver_bit_exactly(csim_setup):
    model, design, data, library = csim_setup
    allocator = HostAllocator()
    device = CsimDevice(library, allocator)
    session = FpgaSession(model, design, data, EkTopDriver(device), allocator, lm_head="f32")
    ref = HlsReference(design, data.trits, data.params, data.rope)
    prompt = model.tokenizer.encode("Once upon a time, there was a little")   # several prefill tiles
    h = session.run(prompt)
    emb = session.forward.rows("tok_embeddings", np.asarray(prompt))
    np.testing.assert_array_equal(h, ref.run(emb, 0))
    for step, token in enumerate([42, 7]):
        want = ref.run(session.forward.rows("tok_embeddings", np.asarray([token])), len(prompt) + step)
        np.testing.assert_array_equal(session.run([token]), want)
    assert device.starts == 3
    assert [entry[1] for entry in device.log if entry[0] == "write"][:38] == [
        offset + half for offset in range(0x10, 0xF4, 12) for half in (0, 4)]


@pytest.mark.slow
def test_the_fabric_lm_head_runs_through_the_driver_bit_exactly(csim_setup):
    """The device's head: every prefill row's logits, then decode steps returning only the top-k."""
    from edgekit.hls.reference import lm_head_logits, top_k

    model, design, data, library = csim_setup
    allocator = HostAllocator()
    device = CsimDevice(library, allocator)
    session = FpgaSession(model, design, data, EkTopDriver(device), allocator)          # lm_head="fpga"
    ref = HlsReference(design, data.trits, data.params, data.rope)

    def twin(h):
        return lm_head_logits(h, data.head_params[:design.dim], np.float32(design.norm_eps), data.head.codes,
                              data.head.sub_scales, data.head.row_scales, design.vocab)

    prompt = model.tokenizer.encode("Once upon a time, there was a little")
    logits = session.prefill_logits(prompt)
    h = ref.run(session.forward.rows("tok_embeddings", np.asarray(prompt)), 0)
    np.testing.assert_array_equal(logits, twin(h))
    token, position = int(logits[-1].argmax()), len(prompt)
    for _ in range(3):
        got = session.decode_logits(token)
        want_ids, want_values = top_k(twin(ref.run(session.forward.rows("tok_embeddings", np.asarray([token])),
                                                   position)), design.hls.top_k)
        ids, values = session.top_k(1)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(values, want_values)
        assert np.isfinite(got).sum() == design.hls.top_k and got.argmax() == want_ids[0, 0]
        token, position = int(want_ids[0, 0]), position + 1
    # the decode step's head: one code word of every lane a cycle, every row block once
    assert device.counters()["head_cycles"] > 0
    session.position = 0                                   # a generation's prefill: the last row's top-k only
    last = session.last_logits(prompt)
    want_ids, want_values = top_k(logits[-1:], design.hls.top_k)
    np.testing.assert_array_equal(session.top_k(1)[0], want_ids)
    np.testing.assert_array_equal(last[want_ids[0]], want_values[0])
    assert np.isfinite(last).sum() == design.hls.top_k


def test_head_rows_beyond_the_logits_buffer_are_refused(csim_setup):
    from edgekit.errors import GenerationError

    model, design, data, library = csim_setup
    allocator = HostAllocator()
    session = FpgaSession(model, design, data, EkTopDriver(CsimDevice(library, allocator)), allocator)
    with pytest.raises(GenerationError, match="head_rows 3 must be in"):
        session.run([1, 2], head_rows=3)


@pytest.mark.slow
def test_the_int8_kv_cache_runs_through_the_driver_bit_exactly(models):
    """kv_bits 8 (ek_kvcache.h): hidden states and the device's KV bytes (codes + scales) equal the twin's;
    base-3 weight words and the screened decode head (its top-k equals the twin's) in the same design."""
    from edgekit.hls.writer import decode_top_k

    model = load(models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin")
    design = design_for(model.config, HlsConfig(max_seq=40, tile_tokens=4, kv_bits=8, trit_pack="base3",
                                                head_screen=64))
    data = extract_device_data(model, design)
    allocator = HostAllocator()
    device = CsimDevice(build_shared_library(project_for(model, design, data, load_board("kv260"))), allocator)
    session = FpgaSession(model, design, data, EkTopDriver(device), allocator, lm_head="f32")
    ref = HlsReference(design, data.trits, data.params, data.rope)
    prompt = model.tokenizer.encode("Once upon a time, there was")
    np.testing.assert_array_equal(session.run(prompt), ref.run(session.forward.rows("tok_embeddings",
                                                                                   np.asarray(prompt)), 0))
    want = ref.run(session.forward.rows("tok_embeddings", np.asarray([42])), len(prompt))
    np.testing.assert_array_equal(session.run([42], head_rows=1), want)
    for got, expected in zip(session.top_k(1), decode_top_k(design, data, want)):
        np.testing.assert_array_equal(got, expected)
    striped = session.buffers["kv"]
    striped.sync_from_device()
    kv_bytes = design.layers * design.max_seq * (2 * design.kv_dim + 8 * design.kv_heads)
    assert striped.nbytes == -(-kv_bytes // ip.LINE_BYTES) * ip.LINE_BYTES
    layers = unstripe_ports(striped, np.uint8, kv_bytes).reshape(design.layers, -1)
    for layer in range(design.layers):
        np.testing.assert_array_equal(layers[layer], ref.kv_bytes(layer))


@pytest.mark.slow
def test_fpga_backend_generates_the_reference_text(models, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEKIT_FPGA_DEVICE", "csim")
    monkeypatch.setenv("EDGEKIT_FPGA_KV_BITS", "32")              # float32 KV: the reference's cache
    monkeypatch.setenv("EDGEKIT_FPGA_LM_HEAD", "f32")             # the host's float head: the reference's logits
    model = load(models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin")
    prompt = model.tokenizer.encode("Once upon a time")
    sampling = SamplingConfig(temperature=0.0)
    fpga = open_backend(model, "fpga", 64)
    got = list(generate_tokens(fpga, prompt, 24, sampling))
    want = list(generate_tokens(open_backend(model, "reference", 64), prompt, 24, sampling))
    assert got == want
    fpga.reset()
    assert fpga.position == 0
    assert list(generate_tokens(fpga, prompt, 24, sampling)) == want


HWH = """<?xml version="1.0" encoding="UTF-8"?>
<EDKSYSTEM><MODULES>
  <MODULE INSTANCE="zynq_ultra_ps_e_0" VLNV="xilinx.com:ip:zynq_ultra_ps_e:3.5"/>
  <MODULE INSTANCE="ek_top_0" VLNV="{vlnv}"/>
</MODULES></EDKSYSTEM>
"""


def test_hwh_must_hold_our_vlnv(tmp_path):
    good, bad = tmp_path / "good.hwh", tmp_path / "bad.hwh"
    good.write_text(HWH.format(vlnv=ip.IP_VLNV))
    bad.write_text(HWH.format(vlnv="xilinx.com:hls:ek_top:0.9"))
    assert find_ek_top(good) == "ek_top_0"
    with pytest.raises(ConfigError, match="edgekit.org:hls:ek_top:1.0.*ek_top:0.9") as error:
        find_ek_top(bad)
    assert "edgekit hls generate" in error.value.fix


def test_int8_lm_head_is_close_to_the_float_head(models):
    from edgekit.fpga.host import Int8LmHead
    from edgekit.model.reference import ReferenceForward

    model = load(models / "bitnet" / "bitllama2c_3M_ternary_lsbfirst.bin")
    weight, _ = ReferenceForward(model).weight(model.output_name)
    hidden = np.random.default_rng(3).normal(0, 1, (16, model.config.dim)).astype(np.float32)
    head = Int8LmHead(weight)
    assert head.codes.dtype == np.int8 and head.codes.nbytes == weight.size     # a quarter of float32
    want, got = hidden @ weight.T, head(hidden)
    assert np.max(np.abs(got - want)) < 0.02 * np.max(np.abs(want))
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9


def test_unknown_lm_head_is_refused(csim_setup):
    model, design, data, library = csim_setup
    allocator = HostAllocator()
    with pytest.raises(ConfigError, match="LM head"):
        FpgaSession(model, design, data, EkTopDriver(CsimDevice(library, allocator)), allocator, lm_head="int3")
