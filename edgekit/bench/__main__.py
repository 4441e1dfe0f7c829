"""`python -m edgekit.bench [--preset full] [--write-md] [--from-json results.json]`.

With --write-md the run regenerates BENCHMARKS.md and the plots; --from-json rebuilds them from saved
results without measuring again.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edgekit.bench import BenchConfig, BenchReport, run_bench, write_documents
from edgekit.bench.config import PRESETS
from edgekit.errors import EdgekitError


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m edgekit.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="full", choices=sorted(PRESETS), help="what to measure")
    parser.add_argument("--write-md", action="store_true", help="regenerate BENCHMARKS.md and the plots")
    parser.add_argument("--markdown-path", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--from-json", type=Path, help="rebuild the documents from this results.json")
    parser.add_argument("--output-dir", type=Path, help="results and plots (default docs/bench)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the cells results.json already has (status ok), measure the rest")
    parser.add_argument("--work-dir", type=Path, help="synthetic model cache (default ~/.cache/edgekit/bench)")
    return parser.parse_args(argv)


def progress(cell, done: int, total: int) -> None:
    last = cell.rounds[-1] if cell.rounds and cell.status == "ok" else None
    rate = (f"round {last['round']}: tg {cell.decode['tokens'] / last['decode_s']:.1f} tok/s beside "
            f"{last['bandwidth_gb_per_s']:.1f} GB/s" if last else f"{cell.status}: {cell.reason}")
    print(f"[{done}/{total}] {cell.shape} {cell.label} {cell.threads}t: {rate}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.from_json is not None:
            for path in write_documents(BenchReport.load(args.from_json), args.markdown_path):
                print(f"wrote {path}")
            return 0
        config = BenchConfig.preset(args.preset, output_dir=args.output_dir, work_dir=args.work_dir)
        outcome = run_bench(config, args.markdown_path if args.write_md else None, progress, args.resume)
    except EdgekitError as exc:
        print(f"error: {exc}" + (f"\nfix: {exc.fix}" if exc.fix else ""), file=sys.stderr)
        return 1
    for path in [outcome.results_path, *outcome.written]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
