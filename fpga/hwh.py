"""Checks a bitstream's hardware handoff (.hwh) before PYNQ loads it: the ek_top IP must be there under
hls/ip.py's VLNV, or the driver would bind to nothing (or to the wrong core)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from edgekit.errors import ConfigError, ModelNotFoundError
from edgekit.hls import ip


def ip_instances(hwh: str | Path) -> dict[str, str]:
    """{instance name: VLNV} of every MODULE in the .hwh."""
    path = Path(hwh)
    if not path.is_file():
        raise ModelNotFoundError("hardware handoff (.hwh) not found beside the bitstream", path=path,
                                 fix="copy the .hwh Vivado wrote next to the .bit (same base name)")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ConfigError(f"the .hwh is not valid XML: {exc}", path=path) from None
    return {m.get("INSTANCE", "?"): m.get("VLNV", "") for m in root.iter("MODULE")}


def find_ek_top(hwh: str | Path) -> str:
    """The instance name of our IP; refuses a .hwh without it, listing what it has."""
    modules = ip_instances(hwh)
    matches = [name for name, vlnv in modules.items() if vlnv == ip.IP_VLNV]
    if len(matches) != 1:
        found = sorted(set(modules.values()))
        raise ConfigError(f"expected exactly one IP with VLNV {ip.IP_VLNV}, found {len(matches)} "
                          f"(VLNVs present: {found})", path=hwh,
                          fix="build the bitstream from this edgekit version's generated project (edgekit hls generate)")
    return matches[0]
