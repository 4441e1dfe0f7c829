"""Board and device descriptions: one TOML file per board, loaded into a frozen `Board`.

The HLS writer and the PYNQ driver read the same `Board`, so resource budgets and memory bandwidth have
one source. Files live beside this module (`kv260.toml`, ...); `load_board(name)` validates them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from importlib import resources

from edgekit.errors import ConfigError


@dataclass(frozen=True)
class Board:
    """An FPGA board: programmable-logic resources, off-chip memory and the default fabric clock."""

    name: str
    description: str
    part: str
    luts: int
    flip_flops: int
    dsps: int
    bram_36k: int
    uram: int
    ddr_bytes: int
    ddr_bandwidth_gbs: float
    fabric_clock_mhz: float

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "str" and not (isinstance(value, str) and value):
                raise ConfigError(f"board {self.name!r}: field {f.name!r} must be a non-empty string")
            if f.type in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))
                                               or value < 0 or (f.name != "uram" and value == 0)):
                raise ConfigError(f"board {self.name!r}: field {f.name!r} must be a positive number, got {value!r}")


def board_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml"))


def load_board(name: str) -> Board:
    """Load and validate `<name>.toml`; unknown names list the boards that exist."""
    names = board_names()
    if name not in names:
        raise ConfigError(f"unknown board {name!r}; available boards: {names}")
    source = resources.files(__name__).joinpath(f"{name}.toml")
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}.toml is not valid TOML: {exc}") from None
    known = {f.name for f in fields(Board)}
    unknown, missing = sorted(set(data) - known), sorted(known - set(data))
    if unknown or missing:
        raise ConfigError(f"{name}.toml: unknown fields {unknown}, missing fields {missing}")
    return Board(**data)
