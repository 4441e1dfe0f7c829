"""The results of a benchmark run: one `CellResult` per (shape, back end, weights, threads), plus the
machine, versions, bandwidth and config in a `BenchReport` that round-trips through JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError, CorruptCheckpointError

RESULTS_VERSION = 2
READABLE_VERSIONS = (1, 2)   # 1: before interleaving (no per-round "rounds" field); renders, cannot be resumed
STATUSES = ("ok", "pending", "skipped", "failed")   # pending: planned, no round measured yet


@dataclass
class CellResult:
    """One measured (or skipped) cell. Rates are medians over the repetitions.

    prefill: prompt length (str) -> {"tokens", "seconds" [reps], "tokens_per_s", "best_tokens_per_s",
    "joules_per_token"}; decode: the same for the generation. bytes_per_token = weights + KV read per
    decoded token; roofline_fraction = median over rounds of (that round's decode tokens/s / (the bandwidth
    measured beside that round / bytes_per_token)).

    rounds (results version 2): one entry per repetition, in the order measured, each from its own worker
    process: {"round", "prefill_s": {length: s}, "prefill_joules_per_token": {length: J or None},
    "decode_s", "decode_joules_per_token", "ttft_s", "load_s", "peak_rss_bytes", "bandwidth_before_gb_per_s",
    "bandwidth_after_gb_per_s", "bandwidth_gb_per_s" (their mean), "roofline_fraction"}. Round r of every cell
    of a (shape, threads) group is measured before round r + 1 of any, so round r of two cells pairs figures
    taken minutes (not tens of minutes) apart. bandwidth_gb_per_s: median of the rounds' bandwidths."""

    shape: str
    backend: str
    weights: str
    file_type: str
    threads: int
    status: str = "ok"
    reason: str = ""
    prefill: dict[str, dict] = field(default_factory=dict)
    decode: dict | None = None
    ttft_s: float | None = None
    ttft_prompt: int | None = None
    load_s: float | None = None
    peak_rss_bytes: int | None = None
    weight_bytes_per_token: int = 0
    kv_bytes_per_token: int = 0
    roofline_tokens_per_s: float | None = None
    roofline_fraction: float | None = None
    rounds: list[dict] = field(default_factory=list)
    bandwidth_gb_per_s: float | None = None

    @property
    def label(self) -> str:
        return f"{self.backend} {self.file_type}"

    @property
    def bytes_per_token(self) -> int:
        return self.weight_bytes_per_token + self.kv_bytes_per_token

    def decode_rate(self) -> float | None:
        return self.decode["tokens_per_s"] if self.status == "ok" and self.decode else None

    def prefill_rate(self, length: int) -> float | None:
        entry = self.prefill.get(str(length)) if self.status == "ok" else None
        return entry["tokens_per_s"] if entry else None

    def round_rates(self, phase: str, length: int = 0) -> dict[int, float]:
        """round -> tokens/s of that round's decode (phase "decode") or pp`length` prefill; {} for results
        without rounds (version 1) or a cell that is not ok."""
        if self.status != "ok":
            return {}
        rates = {}
        for entry in self.rounds:
            if phase == "decode":
                seconds, tokens = entry.get("decode_s"), (self.decode or {}).get("tokens")
            else:
                seconds, tokens = entry.get("prefill_s", {}).get(str(length)), length
            if seconds and tokens:
                rates[int(entry["round"])] = tokens / seconds
        return rates


@dataclass
class BenchReport:
    config: dict[str, Any]
    machine: dict[str, Any]
    versions: dict[str, str]
    # str(threads) -> {"gb_per_s" (median of every probe of the run), "min_gb_per_s", "max_gb_per_s", "probes",
    # "source"}; version 1 files have only gb_per_s and source (one probe at the start of the run)
    bandwidth: dict[str, dict] = field(default_factory=dict)
    energy_note: str = ""
    cells: list[CellResult] = field(default_factory=list)
    version: int = RESULTS_VERSION
    probes: dict[str, list[float]] = field(default_factory=dict)  # str(threads) -> every probe's GB/s, in run order

    def find(self, shape: str, backend: str, weights: str, threads: int) -> CellResult | None:
        for cell in self.cells:
            if (cell.shape, cell.backend, cell.weights, cell.threads) == (shape, backend, weights, threads):
                return cell
        return None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path = "<dict>") -> BenchReport:
        if not isinstance(data, dict) or data.get("version") not in READABLE_VERSIONS:
            found = data.get("version") if isinstance(data, dict) else None
            raise ConfigError(f"{source}: not a bench results file of version "
                              f"{' or '.join(map(str, READABLE_VERSIONS))} (field 'version' is {found!r})",
                              fix="re-run `edgekit bench` with this edgekit")
        try:
            cells = [CellResult(**cell) for cell in data["cells"]]
            report = cls(**{**data, "cells": cells})
        except (KeyError, TypeError) as exc:
            raise CorruptCheckpointError(f"bench results are malformed ({exc})", path=source) from None
        for cell in cells:
            if cell.status not in STATUSES:
                raise CorruptCheckpointError(f"cell {cell.label} has unknown status {cell.status!r}", path=source)
        return report

    @property
    def interleaved(self) -> bool:
        """True when the cells' repetitions were measured round by round with a bandwidth probe beside each."""
        return self.version >= 2

    def save(self, path: Path) -> Path:
        from edgekit.fileio import write_json_atomic

        write_json_atomic(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> BenchReport:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("bench results file not found", path=path,
                              fix="run `edgekit bench` first, or pass the results.json it wrote") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise CorruptCheckpointError(f"bench results are not readable JSON ({exc})", path=path) from None
        return cls.from_dict(data, path)
