"""Every board file validates; bad names and bad values are clear errors."""

from __future__ import annotations

import dataclasses

import pytest

from edgekit.boards import Board, board_names, load_board
from edgekit.errors import ConfigError


@pytest.mark.parametrize("name", board_names())
def test_each_board_file_validates(name):
    board = load_board(name)
    assert board.name == name
    assert board.luts > 0 and board.dsps > 0 and board.ddr_bandwidth_gbs > 0


def test_known_boards():
    assert {"kv260", "zcu104"} <= set(board_names())
    assert load_board("kv260").uram == 64


def test_unknown_board_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="kv260"):
        load_board("pynq-z9")


def test_bad_values_are_rejected():
    good = dataclasses.asdict(load_board("kv260"))
    with pytest.raises(ConfigError, match="dsps"):
        Board(**{**good, "dsps": -1})
    with pytest.raises(ConfigError, match="part"):
        Board(**{**good, "part": ""})
