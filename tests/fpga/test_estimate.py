"""The cycle/resource model: consistent with the generator's own layout, monotone where it must be, and
its comparison with TeLLMe's published figures stated with the error."""

from __future__ import annotations

import pytest

from edgekit.boards import load_board
from edgekit.errors import ConfigError
from edgekit.fpga.estimate import (PRESETS, TELLME, CycleModel, compare_with_tellme, estimate_config,
                                   estimate_design, head_bytes, recommend_hls, weight_bytes)
from edgekit.hls.design import HlsConfig, design_for
from edgekit.hls.packing import matrix_words
from edgekit.hls.resources import check_fits
from edgekit.hls.writer import generate_project
from tests.hls.synthetic import synthetic_model


def test_weight_traffic_is_the_generated_weight_file(tmp_path):
    model = synthetic_model()
    hls = HlsConfig(lanes=8, tile_tokens=4, max_seq=16)
    project = generate_project(model, load_board("kv260"), tmp_path / "prj", hls)
    assert weight_bytes(design_for(model.config, hls)) == (project / "data" / "weights.bin").stat().st_size


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_on_kv260(preset):
    board = load_board("kv260")
    config = PRESETS[preset]()
    hls = recommend_hls(config, board, max_seq=2048)
    design = design_for(config, hls)
    check_fits(design, board)                                    # the recommendation fits the part
    result = estimate_design(design, board)
    rates = [row["tok_s"] for row in result.decode]
    assert rates == sorted(rates, reverse=True)                  # longer context, slower decode
    assert all(row["fpga_only_tok_s"] > row["tok_s"] for row in result.decode)
    ttft = [row["ttft_s"] for row in result.prefill]
    assert ttft == sorted(ttft)
    # nobody beats the DDR roofline of the ternary weights alone
    assert max(rates) < result.roofline_tok_s


def test_bitnet_2b4t_weights_and_roofline():
    design = design_for(PRESETS["bitnet-b1.58-2b4t"](), HlsConfig(group=3, lanes=64, max_seq=1024))
    # 2.09e9 ternary weights at 5 bits per 3 trits, 12 codes a 64-bit word: ~0.47 GB, ~41 tok/s at 19.2 GB/s
    assert 0.44e9 < weight_bytes(design) < 0.48e9
    result = estimate_design(design, load_board("kv260"))
    assert 39 < result.roofline_tok_s < 44


def test_the_model_is_bound_by_compute_or_memory():
    design = design_for(PRESETS["bitnet-b1.58-large"](), HlsConfig(lanes=16, max_seq=1024))
    slow, fast = CycleModel(design, load_board("kv260")), CycleModel(design, load_board("zcu104"))
    assert slow.matrix_s(4096, 1536) > 0
    # same clock and DDR: one matrix costs the same on both; more lanes cut compute-bound time
    assert slow.matrix_s(4096, 1536) == fast.matrix_s(4096, 1536)
    wide = design_for(PRESETS["bitnet-b1.58-large"](), HlsConfig(lanes=64, max_seq=1024))
    assert CycleModel(wide, load_board("kv260")).matrix_s(4096, 1536) < slow.matrix_s(4096, 1536)


def test_comparison_states_the_error():
    result = estimate_config(PRESETS["bitnet-b1.58-large"](), load_board("kv260"),
                             HlsConfig(lanes=96, tile_tokens=4, attn_macs=64, max_seq=2048))
    rows = compare_with_tellme(result)
    assert {r["version"] for r in rows} == {"v1", "v2"} and len(rows) == 6
    for row in rows:
        assert row["error"] == pytest.approx(row["ours"] / row["theirs"] - 1)
    assert TELLME["v2"]["decode_tok_s"] == 25.0


def test_a_part_too_small_is_refused():
    with pytest.raises(ConfigError, match="no engine configuration"):
        recommend_hls(PRESETS["bitnet-b1.58-2b4t"](), load_board("pynq-z2"), max_seq=2048)


@pytest.mark.slow
def test_cycle_model_counts_what_the_c_simulated_design_does(models):
    """The model's TLMM, table and attention work equals the iterations the C-simulated design runs."""
    from edgekit.fpga.backend import project_for
    from edgekit.fpga.buffers import HostAllocator
    from edgekit.fpga.devices import CsimDevice
    from edgekit.fpga.driver import EkTopDriver
    from edgekit.fpga.host import FpgaSession
    from edgekit.hls.csim import build_shared_library
    from edgekit.hls.model_data import extract_device_data
    from edgekit.model import load

    model = load(models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin")
    design = design_for(model.config, HlsConfig(lanes=16, tile_tokens=4, max_seq=48))
    data = extract_device_data(model, design)
    board = load_board("kv260")
    allocator = HostAllocator()
    device = CsimDevice(build_shared_library(project_for(model, design, data, board)), allocator)
    session = FpgaSession(model, design, data, EkTopDriver(device), allocator)
    cycles = CycleModel(design, board)
    before = device.counters()
    session.run(list(range(1, 11)))                                       # 10 tokens: tiles of 4, 4, 2
    prefill = {k: v - before[k] for k, v in device.counters().items()}
    session.run([42], head_rows=1)                                        # decode at position 10, head on the fabric
    decode = {k: v - before[k] - prefill[k] for k, v in device.counters().items()}
    assert prefill["head_cycles"] == 0
    assert decode["head_cycles"] == cycles.head_cycles(pipeline_depth=0)
    L = design.layers
    assert prefill["tlmm_cycles"] == 3 * L * cycles.layer_tlmm_cycles(pipeline_depth=0)
    assert decode["tlmm_cycles"] == L * cycles.layer_tlmm_cycles(pipeline_depth=0)
    assert prefill["table_cycles"] == 3 * L * cycles.layer_table_cycles()
    assert decode["table_cycles"] == L * cycles.layer_table_cycles()
    assert decode["attention_macs"] == L * cycles.attention_macs(context=11, n_tok=1)
    # prefill: the model charges each tile its whole context; the design skips the masked half of the diagonal
    causal = L * sum(cycles.attention_macs(context=t + 1, n_tok=1) for t in range(10))
    charged = L * sum(cycles.attention_macs(context=start + n, n_tok=n) for start, n in ((0, 4), (4, 4), (8, 2)))
    assert prefill["attention_macs"] == causal <= charged
    assert (prefill["calls"], decode["calls"]) == (1, 1)
    # the wide loaders read exactly the 64-byte lines the model counts: every weight row block once per tile,
    # the head's row blocks once per headed token (4 x 128-bit ports, ek_axi.h)
    assert prefill["axi_lines"] == 3 * cycles.weight_line_reads()
    assert decode["axi_lines"] == cycles.weight_line_reads() + cycles.head_line_reads()
    assert decode["axi_lines"] * 64 >= weight_bytes(design) + 8 * design.head_words


def test_the_model_bandwidth_is_what_the_design_ports_move():
    """The estimate's DDR bandwidth comes from the same port parameters as the HLS code: the constants of
    ek_axi.h, the striped pointer arguments of ek_top.cpp on distinct bundles, the HP ports of the block design."""
    import re
    from pathlib import Path

    from edgekit.fpga.flow import AXI_MASTERS, axi_read_bytes_per_s, processing_system
    from edgekit.hls import ip

    include = Path(ip.__file__).parent / "include"
    axi = (include / "ek_axi.h").read_text()
    ports, bits = (int(v) for v in re.search(r"constexpr int kAxiPorts = (\d+), kPortBits = (\d+);", axi).groups())
    assert (ports, bits) == (ip.AXI_PORTS, ip.AXI_PORT_BITS)
    top = (Path(ip.__file__).parent / "src" / "ek_top.cpp").read_text()
    for name in ip.STRIPED_BUFFERS:
        bundles = [re.search(rf"EK_STRIPED\({reg}, (gmem\d)\)", top).group(1) for reg in ip.port_registers(name)]
        assert bundles == [f"gmem{p}" for p in range(ports)], name      # one AXI master per port, in order
        assert re.search(rf"ek::beat_t\* {name}\b", top)               # 128-bit beats, not 64-bit words
    kv260, z2 = load_board("kv260"), load_board("pynq-z2")
    assert len(processing_system(kv260)[3]) == len(AXI_MASTERS) == ports + 1
    # four 128-bit ports at 250 MHz: 16 GB/s, above 80% of 19.2 GB/s, so the DDR stays the limit on KV260
    assert axi_read_bytes_per_s(kv260) == ports * bits / 8 * kv260.fabric_clock_mhz * 1e6 == 16e9
    design = design_for(PRESETS["bitnet-b1.58-2b4t"](), HlsConfig(lanes=96, tile_tokens=4, max_seq=1024))
    model = CycleModel(design, kv260)
    assert model.bw == min(0.8 * 19.2e9, 16e9) == model.ddr_bw
    # Zynq-7000's HP ports are 64 bits wide: the ports, not the DDR, would bound it
    slow = CycleModel(design, z2)
    assert slow.port_bw == ports * 64 / 8 * z2.fabric_clock_mhz * 1e6 and slow.bw == min(slow.port_bw, slow.ddr_bw)
    # a matrix's DDR time never beats one line a cycle of the words it needs
    for out, inp in design.matrix_shapes().values():
        words = matrix_words(out, inp, design.code, design.hls.lanes)
        assert model.matrix_s(out, inp) >= 8 * words / ip.LINE_BYTES / model.f
    result = estimate_design(design, kv260)
    assert result.bandwidth == {"ddr_gbs": pytest.approx(15.36), "ports_gbs": 16.0, "used_gbs": pytest.approx(15.36)}


def test_decode_traffic_grows_with_the_kv_cache():
    design = design_for(PRESETS["bitnet-b1.58-2b4t"](), HlsConfig(lanes=64, max_seq=2048))
    rows = estimate_design(design, load_board("kv260")).decode
    assert rows[0]["ddr_bytes"] > weight_bytes(design)
    # float32 K and V of 5 kv heads x 128 over 30 layers: 153,600 bytes more per extra cached token
    per_token = (rows[-1]["ddr_bytes"] - rows[0]["ddr_bytes"]) / (rows[-1]["context"] - rows[0]["context"])
    assert per_token == 2 * 640 * 4 * 30
    int8 = design_for(PRESETS["bitnet-b1.58-2b4t"](), HlsConfig(lanes=64, max_seq=2048, kv_bits=8))
    rows8 = estimate_design(int8, load_board("kv260")).decode
    # int8 codes of K and V plus a float32 scale per kv head for each: 2 x (640 + 5 x 4) bytes a layer
    per_token = (rows8[-1]["ddr_bytes"] - rows8[0]["ddr_bytes"]) / (rows8[-1]["context"] - rows8[0]["context"])
    assert per_token == 2 * (640 + 5 * 4) * 30
    assert rows8[0]["ddr_bytes"] - weight_bytes(int8) < rows[0]["ddr_bytes"] - weight_bytes(design)


def test_a_model_bigger_than_the_board_ddr_is_refused():
    design = design_for(PRESETS["bitnet-b1.58-2b4t"](), HlsConfig(lanes=4, tile_tokens=1, max_seq=4096))
    with pytest.raises(ConfigError, match="MiB of DDR") as error:
        check_fits(design, load_board("pynq-z2"))
    assert "--max-seq" in error.value.fix


@pytest.mark.slow
def test_the_screened_head_work_is_counted_by_the_model(tmp_path):
    """head_screen: the decode step's head words in C simulation = the 2-bit scan + the C rescored rows."""
    from edgekit.fpga.backend import project_for
    from edgekit.fpga.buffers import HostAllocator
    from edgekit.fpga.devices import CsimDevice
    from edgekit.fpga.driver import EkTopDriver
    from edgekit.fpga.host import FpgaSession
    from edgekit.hls.csim import build_shared_library
    from edgekit.hls.model_data import extract_device_data

    model = synthetic_model()
    design = design_for(model.config, HlsConfig(lanes=4, tile_tokens=2, max_seq=16, head_lanes=3, head_screen=16))
    data, board, allocator = extract_device_data(model, design), load_board("kv260"), HostAllocator()
    device = CsimDevice(build_shared_library(project_for(model, design, data, board)), allocator)
    session = FpgaSession(model, design, data, EkTopDriver(device), allocator)
    session.run([3, 4, 5])
    before = device.counters()["head_cycles"]
    session.run([6], head_rows=1)
    cycles = CycleModel(design, board)
    assert device.counters()["head_cycles"] - before == (cycles.head_cycles(pipeline_depth=0, bits=2)
                                                         + cycles.rescore_cycles(latency=0))
    assert head_bytes(design) == 8 * design.head_rows * design.screen_row_words + 4 * design.head_rows + 16 * (
        8 * design.head_row_words + 4)


def test_head_traffic_is_the_generated_head_file(tmp_path):
    model = synthetic_model()
    hls = HlsConfig(lanes=8, tile_tokens=4, max_seq=16, head_lanes=3)
    project = generate_project(model, load_board("kv260"), tmp_path / "prj", hls)
    design = design_for(model.config, hls)
    row_scales = (project / "data" / "head_params.bin").stat().st_size - 4 * design.dim
    assert head_bytes(design) == (project / "data" / "head.bin").stat().st_size + row_scales


def test_the_fabric_head_of_2b4t():
    """int4 in groups of 64 with uint8 sub-scales: 128,256 rows of 160 code + 5 sub-scale words, 169 MB a
    token (the int8 head's 328 MB is 21 ms at 80% of 19.2 GB/s, before any ternary weight)."""
    config, board = PRESETS["bitnet-b1.58-2b4t"](), load_board("kv260")
    design = design_for(config, HlsConfig(lanes=128, tile_tokens=4, attn_macs=64, max_seq=2048, head_lanes=16))
    assert design.head_row_words == 165 and head_bytes(design) == 128256 * 165 * 8 + 128256 * 4
    fabric, host = CycleModel(design, board), CycleModel(design, board, lm_head="host")
    assert fabric.fabric_head_s() == pytest.approx(head_bytes(design) / (19.2e9 * 0.8) + 3 * 2560 / 250e6)
    assert host.host_head_s() == pytest.approx(128256 * 2560 / 6e9)             # the A53 cores' int8 head
    on_fabric, on_host = fabric.decode_split(1024), host.decode_split(1024)
    assert on_fabric["ddr_bytes"] - on_host["ddr_bytes"] == head_bytes(design)
    assert on_fabric["tok_s"] > 1.6 * on_host["tok_s"]
    assert on_fabric["host_s"] < 1e-3 and on_host["head_s"] == 0.0
    int8 = CycleModel(design_for(config, HlsConfig(lanes=128, tile_tokens=4, max_seq=2048, head_bits=8,
                                                    head_lanes=16)), board)
    assert int8.fabric_head_s() > 1.9 * fabric.fabric_head_s()
    check_fits(design, board)


def test_a_head_too_wide_for_the_part_is_refused_with_the_knob(tmp_path):
    model = synthetic_model()
    with pytest.raises(ConfigError, match="needs .* dsps but ultra96v2") as error:
        generate_project(model, load_board("ultra96v2"), tmp_path / "prj", HlsConfig(lanes=4, head_lanes=64, max_seq=16))
    assert "--head-lanes" in error.value.fix
    assert list(tmp_path.iterdir()) == []
