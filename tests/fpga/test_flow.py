"""The Vitis HLS and Vivado scripts of a generated project, sourced by tclsh against stub commands: the
steps come in order, every file they add exists, and the IP they build and instantiate is our VLNV.
Real runs need Vitis (marked `vitis`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from edgekit.boards import load_board
from edgekit.fpga.flow import AXI_MASTERS, BD_STEPS, HLS_IP_DIR
from edgekit.hls import ip
from edgekit.hls.design import HlsConfig
from edgekit.hls.tcl import HLS_STEPS
from edgekit.hls.writer import generate_project
from tests.hls.synthetic import synthetic_model

HLS_COMMANDS = ("open_project set_top add_files open_solution set_part create_clock config_interface csim_design "
                "csynth_design cosim_design config_export export_design")
BD_COMMANDS = ("create_project set_property current_project update_ip_catalog create_bd_design create_bd_cell "
               "get_bd_cells apply_bd_automation get_bd_intf_pins validate_bd_design save_bd_design make_wrapper "
               "get_files add_files launch_runs wait_on_run")

# Every Vitis/Vivado command becomes a proc that records its arguments; `file copy` is recorded, not run.
HARNESS = """
set ::calls {{}}
foreach cmd {{{commands}}} {{
    proc $cmd args "lappend ::calls \\[linsert \\$args 0 $cmd\\]; return $cmd"
}}
rename file real_file
proc file {{sub args}} {{
    if {{$sub eq "copy"}} {{ lappend ::calls [linsert $args 0 file_copy]; return }}
    return [real_file $sub {{*}}$args]
}}
proc exit args {{ set ::exited 1 }}
source {script}
foreach call $::calls {{ puts $call }}
"""

# Outside CI a missing tclsh skips these checks; under CI (CI=true, .ci/run installs tcl) it fails them.
pytestmark = pytest.mark.skipif(shutil.which("tclsh") is None and os.environ.get("CI") != "true",
                                reason="tclsh is not installed")


def run_stubbed(project, script, commands):
    harness = project / "harness.tcl"
    harness.write_text(HARNESS.format(commands=commands, script=script))
    done = subprocess.run(["tclsh", str(harness)], cwd=project, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module", params=["kv260", "pynq-z2"])
def project(request, tmp_path_factory):
    # pynq-z2 is a Zynq-7000 (220 DSPs): the small synthetic model at few lanes, 4 attention MACs and
    # 2 LM-head lanes fits it
    hls = HlsConfig(lanes=4, tile_tokens=2, attn_macs=4, max_seq=16, head_lanes=2)
    return generate_project(synthetic_model(), load_board(request.param),
                            tmp_path_factory.mktemp(request.param) / "prj", hls), request.param


def test_hls_script_steps_in_order_and_files_exist(project):
    folder, board = project
    calls = run_stubbed(folder, "hls.tcl", HLS_COMMANDS)
    names = [c[0] for c in calls]
    assert [n for n in names if n in HLS_STEPS] == list(HLS_STEPS)
    assert names.index("set_part") < names.index("csim_design")
    for call in calls:
        if call[0] == "add_files":
            path = call[2] if call[1] == "-tb" else call[1]
            assert (folder / path).exists(), path
    (part,) = [c[1] for c in calls if c[0] == "set_part"]
    assert part == load_board(board).part
    (export,) = [c for c in calls if c[0] == "config_export"]
    vlnv = ":".join(export[export.index(flag) + 1] for flag in ("-vendor", "-library", "-ipname", "-version"))
    assert vlnv == ip.IP_VLNV


def test_block_design_instantiates_our_ip(project):
    folder, board = project
    calls = run_stubbed(folder, "vivado/bd.tcl", BD_COMMANDS)
    names = [c[0] for c in calls]
    assert [n for n in dict.fromkeys(n for n in names if n in BD_STEPS)] == list(BD_STEPS)
    cells = [c for c in calls if c[0] == "create_bd_cell"]
    assert [c[-2:] for c in cells][1] == [ip.IP_VLNV, "ek_top_0"]
    ps = "processing_system7" if board == "pynq-z2" else "zynq_ultra_ps_e"
    assert ps in cells[0][-2]
    assert any(HLS_IP_DIR in " ".join(c) for c in calls if c[0] == "set_property")
    assert [c[-1] for c in calls if c[0] == "file_copy"] == ["ek.bit", "ek.hwh"]
    automation = [c for c in calls if c[0] == "apply_bd_automation"]
    assert len(automation) == 1 + len(AXI_MASTERS) == 6                    # AXI-lite + 4 striped ports + gmem4
    masters = [m for m in AXI_MASTERS if any(f"/ek_top_0/{m}" in " ".join(c) for c in automation)]
    assert masters == list(AXI_MASTERS)
    slaves = [re.search(r"Slave /\S+?/(\w+)", " ".join(c)).group(1) for c in automation[1:]]
    assert len(set(slaves)) == 5 and all("HP" in s for s in slaves[:4])    # one PS port each: no shared HP port


def test_makefile_chains_hls_then_vivado(project):
    folder, _ = project
    text = (folder / "Makefile").read_text()
    assert "vitis_hls -f hls.tcl" in text and "vivado -mode batch -source vivado/bd.tcl" in text
    assert text.index("$(HLS_IP):") < text.index("ek.bit ek.hwh:")


@pytest.mark.vitis
def test_real_vitis_flow(project):
    folder, _ = project
    if not os.environ.get("XILINX_HLS"):
        pytest.skip("Vitis HLS is not installed (XILINX_HLS unset)")
    subprocess.run(["vitis_hls", "-f", "hls.tcl"], cwd=folder, check=True, timeout=7200)
    assert (folder / HLS_IP_DIR / "component.xml").is_file()
