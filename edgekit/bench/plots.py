"""matplotlib charts for people: tokens/s per back end, and the decode roofline, one pair per shape.

matplotlib is the `bench` extra (`pip install "edgekit[bench]"`); it is imported only here, with the
non-interactive Agg backend, and files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.bench.results import BenchReport, CellResult
from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_path


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise EdgekitError(f"plots need matplotlib ({exc})", fix='pip install "edgekit[bench]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path


def plot_rates(plt, report: BenchReport, shape: str, path: Path) -> Path:
    """Horizontal bars: decode and first-prompt prefill tokens/s for each back end, one bar per thread count."""
    cells = [c for c in report.cells if c.shape == shape and c.status == "ok"]
    labels = list(dict.fromkeys(c.label for c in cells))
    threads = sorted({c.threads for c in cells})
    prompt = report.config["prompt_lengths"][0]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * max(len(labels), 3) + 1.5), sharey=True)
    height = 0.8 / max(len(threads), 1)
    for axis, title, rate in ((axes[0], f"decode tg{report.config['generate_length']}", CellResult.decode_rate),
                              (axes[1], f"prefill pp{prompt}", lambda c: c.prefill_rate(prompt))):
        for k, t in enumerate(threads):
            values = [next((rate(c) or 0 for c in cells if c.label == label and c.threads == t), 0)
                      for label in labels]
            axis.barh([i + k * height for i in range(len(labels))], values, height, label=f"{t} thread(s)")
        axis.set_title(f"{shape}: {title}")
        axis.set_xlabel("tokens/s")
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks([i + height * (len(threads) - 1) / 2 for i in range(len(labels))], labels)
    axes[0].invert_yaxis()
    axes[0].legend()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def plot_roofline(plt, report: BenchReport, shape: str, path: Path) -> Path:
    """Decode tokens/s against MB read per token (log-log); each line is bandwidth / bytes for a thread count."""
    cells = [c for c in report.cells if c.shape == shape and c.status == "ok" and c.bytes_per_token]
    fig, axis = plt.subplots(figsize=(8, 5.5))
    sizes = [c.bytes_per_token / 1e6 for c in cells] or [1.0]
    low, high = min(sizes) / 1.5, max(sizes) * 1.5
    for t, info in sorted(report.bandwidth.items()):
        gbps = info["gb_per_s"]
        axis.plot([low, high], [gbps * 1e3 / low, gbps * 1e3 / high], "--", label=f"roofline {t} thread(s), "
                  f"{gbps:.1f} GB/s")
    markers = {t: m for t, m in zip(sorted({c.threads for c in cells}), "os^D")}
    colours = {b: f"C{i + 2}" for i, b in enumerate(sorted({c.backend for c in cells}))}
    for cell in cells:
        x, y = cell.bytes_per_token / 1e6, cell.decode_rate()
        axis.plot(x, y, markers[cell.threads], color=colours[cell.backend])
        axis.annotate(f"{cell.label} ({cell.threads}t)", (x, y), textcoords="offset points", xytext=(4, 3),
                      fontsize=7)
    axis.set_xscale("log")
    axis.set_yscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax in (axis.xaxis, axis.yaxis):   # plain numbers, not 10^x, at the decades only
        ax.set_major_formatter(ScalarFormatter())
        ax.set_minor_formatter(NullFormatter())
    axis.set_xlabel("MB read per decoded token")
    axis.set_ylabel(f"decode tokens/s (tg{report.config['generate_length']})")
    axis.set_title(f"{shape}: decode against the memory roofline")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def write_plots(report: BenchReport, output_dir: Path) -> list[Path]:
    """tokens_per_s_<shape>.png and roofline_<shape>.png for every shape in the report."""
    plt = _pyplot()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for shape in report.config["shapes"]:
        written.append(plot_rates(plt, report, shape, output_dir / f"tokens_per_s_{shape}.png"))
        written.append(plot_roofline(plt, report, shape, output_dir / f"roofline_{shape}.png"))
    return written
