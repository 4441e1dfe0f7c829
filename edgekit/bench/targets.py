"""The issue's speed targets, checked as ratios between cells measured in the same run.

Each target compares an edgekit cell with a peer cell (or the roofline) on the same shape and thread
count. With interleaved results (version 2) the ratio is the median over rounds of the per-round ratio:
round r of the subject against round r of the peer, both measured in the same pass over the group
(`paired_ratios`), and the spread (min-max over rounds) is reported beside it; against the roofline, each
round's decode rate is divided by the roofline of the bandwidth probed beside that round. Version-1 results
(no rounds) fall back to the ratio of the medians. Targets are set at 2 threads; the other thread counts are reported beside them for information.
A target that cannot be checked (a cell skipped or failed) says which cell and why.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from edgekit.bench.results import BenchReport, CellResult

TARGET_THREADS = 2


@dataclass(frozen=True)
class Target:
    name: str
    subject: tuple[str, str]          # (back end, weights)
    peer: tuple[str, str] | None      # None: compare with the roofline
    phase: str                        # "decode" or "prefill"
    goal: float


TARGETS = (
    Target("ternary decode vs llama.cpp TQ2_0", ("native", "t2"), ("llama.cpp", "t2"), "decode", 2.0),
    Target("ternary decode vs roofline", ("native", "t2"), None, "decode", 0.70),
    Target("ternary prefill vs llama.cpp TQ2_0", ("native", "t2"), ("llama.cpp", "t2"), "prefill", 1.5),
    Target("int4 decode vs llama.cpp Q4_0", ("native", "i4"), ("llama.cpp", "i4"), "decode", 1.0),
    Target("int4 decode vs onnxruntime 4-bit", ("native", "i4"), ("onnxruntime", "i4"), "decode", 1.0),
)


@dataclass
class TargetCheck:
    target: Target
    shape: str
    threads: int
    phase_label: str                  # "tg128", "pp512", ...
    ratio: float | None
    why: str
    round_ratios: list[float] = field(default_factory=list)   # per-round ratios the median was taken over

    @property
    def spread(self) -> tuple[float, float] | None:
        return (min(self.round_ratios), max(self.round_ratios)) if self.round_ratios else None

    @property
    def is_target(self) -> bool:
        return self.threads == TARGET_THREADS

    @property
    def status(self) -> str:
        if self.ratio is None:
            return "not measured"
        met = self.ratio >= self.target.goal
        if not self.is_target:
            return "info (above goal)" if met else "info (below goal)"
        return "met" if met else "missed"


def _rate(cell: CellResult | None, phase: str, length: int) -> float | None:
    if cell is None:
        return None
    return cell.decode_rate() if phase == "decode" else cell.prefill_rate(length)


def paired_ratios(subject: dict[int, float], peer: dict[int, float]) -> list[float]:
    """subject[r] / peer[r] for every round r both cells measured, in round order."""
    return [subject[r] / peer[r] for r in sorted(subject) if r in peer and peer[r] > 0]


def _unavailable(cell: CellResult | None, name: str) -> str:
    if cell is None:
        return f"{name} was not in this run's config"
    return f"{name} {cell.status}: {cell.reason}" if cell.reason else f"{name} has no figure"


def _explain(subject: CellResult, peer: CellResult | None, ratio: float, target: Target, label: str,
             length: int) -> str:
    """Facts beside a ratio: each side's rate in the target's phase (and, for decode, how close to the roofline)."""
    def describe(cell: CellResult) -> str:
        if target.phase != "decode":
            return f"{cell.label} {label} {_rate(cell, target.phase, length) or 0:.1f} tok/s"
        roof = f", {cell.roofline_fraction:.0%} of its roofline" if cell.roofline_fraction is not None else ""
        return f"{cell.label} {label} {cell.decode_rate() or 0:.1f} tok/s{roof}"

    text = describe(subject) + ("" if peer is None else f"; {describe(peer)}")
    return text if ratio >= target.goal else f"below goal: {text}"


def check_one(report: BenchReport, target: Target, shape: str, threads: int, length: int) -> TargetCheck:
    label = f"tg{report.config['generate_length']}" if target.phase == "decode" else f"pp{length}"
    subject = report.find(shape, *target.subject, threads)
    peer = report.find(shape, *target.peer, threads) if target.peer else None
    mine = _rate(subject, target.phase, length)
    if mine is None:
        return TargetCheck(target, shape, threads, label, None, _unavailable(subject, " ".join(target.subject)))
    if target.peer is None:
        rounds = [r["roofline_fraction"] for r in subject.rounds if r.get("roofline_fraction") is not None]
        ratio = statistics.median(rounds) if rounds else subject.roofline_fraction
        if ratio is None:
            return TargetCheck(target, shape, threads, label, None, f"{' '.join(target.subject)} has no roofline")
    else:
        theirs = _rate(peer, target.phase, length)
        if not theirs:
            return TargetCheck(target, shape, threads, label, None, _unavailable(peer, " ".join(target.peer)))
        rounds = paired_ratios(subject.round_rates(target.phase, length), peer.round_rates(target.phase, length))
        ratio = statistics.median(rounds) if rounds else mine / theirs
    return TargetCheck(target, shape, threads, label, ratio, _explain(subject, peer, ratio, target, label, length), rounds)


def check_targets(report: BenchReport) -> list[TargetCheck]:
    """Every target whose back ends were in the run, on every shape and thread count (prefill targets at
    each prompt length)."""
    checks = []
    config = report.config
    targets = [t for t in TARGETS if t.subject[0] in config["backends"]
               and (t.peer is None or t.peer[0] in config["backends"])]
    for shape in config["shapes"]:
        for threads in sorted(config["threads"], reverse=True):
            for target in targets:
                lengths = config["prompt_lengths"] if target.phase == "prefill" else [0]
                checks += [check_one(report, target, shape, threads, n) for n in lengths]
    return checks
