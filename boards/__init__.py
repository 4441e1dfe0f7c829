"""Board and device descriptions: one TOML file per board or device, loaded into a frozen `Board`.

The HLS writer, the resource check, the cycle model and the PYNQ driver read the same `Board`, so
resource budgets and memory bandwidth have one source. `kind` is "fpga" (programmable logic plus the
host CPU of its SoC) or "cpu" / "phone" / "edge" (no fabric: the roofline side of benchmarks). FPGA
resources are 36 Kb BRAM blocks and 288 Kb URAM blocks; bandwidths are nominal peaks (bus width x
transfer rate) unless the file says it measured them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from importlib import resources

from edgekit.errors import ConfigError

KINDS = ("fpga", "cpu", "phone", "edge")
FABRIC_FIELDS = ("luts", "flip_flops", "dsps", "bram_36k", "uram", "fabric_clock_mhz")
OPTIONAL_ZERO = ("uram",)                  # many FPGA parts have no UltraRAM


@dataclass(frozen=True)
class Board:
    """A board or device: SoC/part, fabric resources (zero without fabric), memory and host CPU."""

    name: str
    kind: str
    description: str
    part: str
    luts: int
    flip_flops: int
    dsps: int
    bram_36k: int
    uram: int
    fabric_clock_mhz: float
    ddr_bytes: int
    ddr_bandwidth_gbs: float
    cpu: str
    cpu_cores: int
    cpu_clock_mhz: float
    isa: str
    host_bandwidth_gbs: float              # what the CPU cores reach (the LM head's bound)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"board {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        for f in fields(self):
            check_field(self, f.name, f.type, getattr(self, f.name))

    @property
    def has_fabric(self) -> bool:
        return self.kind == "fpga"


def check_field(board: Board, name: str, type_name: str, value) -> None:
    where = f"board {board.name!r}: field {name!r}"
    if type_name == "str":
        if not (isinstance(value, str) and value):
            raise ConfigError(f"{where} must be a non-empty string", fix=f"set {name} in {board.name}.toml")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (type_name == "int" and not isinstance(value, int)):
        raise ConfigError(f"{where} must be a {type_name}, got {value!r}", fix=f"set {name} in {board.name}.toml")
    if name in FABRIC_FIELDS and not board.has_fabric:
        if value != 0:
            raise ConfigError(f"{where} is {value!r} but a {board.kind!r} device has no fabric",
                              fix=f"set {name} = 0 or kind = \"fpga\"")
        return
    if value < 0 or (value == 0 and name not in OPTIONAL_ZERO):
        raise ConfigError(f"{where} must be a positive number, got {value!r}", fix=f"set {name} in {board.name}.toml")


def board_names(kind: str | None = None) -> list[str]:
    names = sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml"))
    return names if kind is None else [n for n in names if load_board(n).kind == kind]


def load_board(name: str) -> Board:
    """Load and validate `<name>.toml`; unknown names list the boards that exist."""
    names = board_names()
    if name not in names:
        raise ConfigError(f"unknown board {name!r}; available boards: {names}", fix="pass one of the listed names")
    source = resources.files(__name__).joinpath(f"{name}.toml")
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}.toml is not valid TOML: {exc}") from None
    known = {f.name for f in fields(Board)}
    unknown, missing = sorted(set(data) - known), sorted(known - set(data))
    if unknown or missing:
        raise ConfigError(f"{name}.toml: unknown fields {unknown}, missing fields {missing}")
    if data["name"] != name:
        raise ConfigError(f"{name}.toml: name is {data['name']!r}, expected {name!r} (the file name)")
    return Board(**data)
