"""Every board and device file validates; bad names and bad values are clear errors."""

from __future__ import annotations

import dataclasses

import pytest

from edgekit.boards import Board, board_names, load_board
from edgekit.errors import ConfigError

FPGA_BOARDS = {"kv260", "zcu104", "zcu102", "ultra96v2", "pynq-z2"}


@pytest.mark.parametrize("name", board_names())
def test_each_board_file_validates(name):
    board = load_board(name)
    assert board.name == name
    assert board.ddr_bandwidth_gbs > 0 and board.cpu_cores > 0 and board.host_bandwidth_gbs > 0
    if board.has_fabric:
        assert board.luts > 0 and board.dsps > 0 and board.bram_36k > 0 and board.fabric_clock_mhz > 0
        assert board.host_bandwidth_gbs <= board.ddr_bandwidth_gbs
    else:
        assert (board.luts, board.dsps, board.bram_36k, board.uram) == (0, 0, 0, 0)


def test_known_boards():
    assert FPGA_BOARDS == set(board_names("fpga"))
    assert {"sapphire-rapids-2c", "raspberry-pi-5"} <= set(board_names("cpu") + board_names("edge"))
    assert board_names("phone") == ["snapdragon-8-gen-3"]
    assert load_board("kv260").uram == 64 and load_board("zcu102").uram == 0


def test_unknown_board_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="kv260") as error:
        load_board("pynq-z9")
    assert error.value.fix


def test_bad_values_are_rejected():
    good = dataclasses.asdict(load_board("kv260"))
    with pytest.raises(ConfigError, match="dsps"):
        Board(**{**good, "dsps": -1})
    with pytest.raises(ConfigError, match="part"):
        Board(**{**good, "part": ""})
    with pytest.raises(ConfigError, match="luts.*must be a int"):
        Board(**{**good, "luts": 1.5})
    with pytest.raises(ConfigError, match="kind"):
        Board(**{**good, "kind": "gpu"})
    cpu = dataclasses.asdict(load_board("raspberry-pi-5"))
    with pytest.raises(ConfigError, match="no fabric"):
        Board(**{**cpu, "luts": 1000})
