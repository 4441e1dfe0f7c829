"""Regenerate docs/QUALITY.md: what each quantization recipe costs on the real models in ../shared.

    python -m edgekit.quantize.quality_table [--shared ../shared] [--out docs/QUALITY.md] [--jobs N] [--fresh]
                                             [--no-memory]

Every row quantizes a real checkpoint with one recipe and compares it with its float (or natively
ternary) source on the TinyStories sample: bits per weight of the linear layers, perplexity, mean KL
divergence and top-1 agreement (`edgekit.quantize.evaluate.compare_models`). Calibration and training
text (GPTQ, QAT) uses documents 40 and later (QAT: distillation from the float model with
straight-through fake quantization, `edgekit.quantize.qat`); evaluation uses the first 40, so no row is scored on text
it was fitted to. Hadamard rows fold the norms and untie the output matrix (kept in the recipe's
`output_format`, ek_i8 g32 by default).

Each measured row is kept in a cache file (`--cache`, default `build/quality_rows.json`) under a key of the
source checkpoint's and the text's sha256, the evaluation documents, the label and the recipe's config JSON:
a rerun measures only new or changed recipes. The key does not see the code: after changing quantization or
evaluation code, pass `--fresh`.

The last section is the streaming target: peak memory of quantizing a synthetic ~1B-parameter checkpoint
(`memory_check.py`, cached under its own key; `--no-memory` leaves it out).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_path
from edgekit.model import load
from edgekit.model.inspect import describe_model
from edgekit.model.model import Model
from edgekit.quantize.config import QuantizeConfig
from edgekit.quantize.evaluate import compare_models
from edgekit.quantize.pipeline import quantize_model
from edgekit.runtime import open_backend

log = logging.getLogger(__name__)

EVAL_DOCUMENTS = 40


@dataclass(frozen=True)
class Recipe:
    """One row: its label and the whole recipe (a `QuantizeConfig`, or a `QATConfig` trained on the text)."""

    label: str
    config: QuantizeConfig | Any

    def build(self, model: Model, text: Path) -> Model:
        if isinstance(self.config, QuantizeConfig):
            return quantize_model(model, self.config)
        from edgekit.quantize.qat import quantize_qat  # torch

        return quantize_qat(model, text, self.config)


def rtn(fmt: str, group: int | None = None, scale_search: str = "none") -> QuantizeConfig:
    method = "absmean" if fmt.startswith("ek_t") else "rtn"
    return QuantizeConfig(format=fmt, method=method, group_size=group, scale_search=scale_search)


def gptq(fmt: str, group: int | None, text: Path, rotate: str | None = None,
         scale_search: str = "none") -> QuantizeConfig:
    return QuantizeConfig(format=fmt, method="gptq", group_size=group, calib_path=str(text),
                          calib_first_document=EVAL_DOCUMENTS, act_order=True, rotate=rotate,
                          scale_search=scale_search)


def qat(fmt: str, group: int | None, steps: int, lr: float, **options):
    from edgekit.quantize.qat import QATConfig  # torch

    return QATConfig(**{"format": fmt, "group_size": group, "steps": steps, "batch_size": 8, "seq_len": 128,
                        "lr": lr, "first_document": EVAL_DOCUMENTS, **options})


# QAT recipes: (format, group, label, steps, peak lr, QATConfig options). Ternary and int2 start far from the
# float weights and want a large step; int4 starts close and a large step only walks it away (lr 1e-3: +6.9%,
# 3e-4: +4.9%, 1e-4: +3.6% perplexity at 300-600 steps on stories260K; 5e-5 for 1500 steps: +4.2%; a learned
# LSQ step: no gain).
#
# The int4 g32 levers measured one by one against that +3.65% (QAT 600 steps, lr 1e-4, batch 8 x 128, RTN grid
# refit every step), perplexity vs float on the 40 held-out documents:
# - (a) MSE scale search per group (`scale_search.py`): RTN +10.04% -> +8.77%; GPTQ act-order +6.98% -> +6.17%
#   (KL 0.0578 -> 0.0536); zero-point GPTQ +5.25% -> +5.46% (KL 0.0515 -> 0.0477: KL better, perplexity not);
#   as QAT's grid, frozen at the searched scales: +3.64% (no gain); re-searched every step: ~4.5 s per step on
#   this machine, not practical.
# - (b) QAT initialised from GPTQ act-order weights: +4.61% (worse: the latent weights start on grid points,
#   half a step from any rounding boundary, and the Hessian fit does not carry over).
# - (d) learned per-group scales (LSQ gradient, scale lr 0.1 x) on the searched grid: +3.50% (small gain).
# - training windows of the model's full 512-token context (batch 2, the same tokens per step) instead of 128:
#   +3.28% (the evaluation scores documents up to 512 tokens, and most of their tokens sit past position 128).
# - both together (learned searched scales, 512-token windows): +3.02% (KL 0.0260), the best so far; with the
#   scales' lr at 1.0 x instead of 0.1 x: +3.26%; (c) the same on ek_u4 (zero points): +3.52% (KL 0.0254, the
#   lowest KL, yet a higher perplexity).
# Re-measured on 2026-12-02 with one torch thread (as the table's workers run), the learned-searched-scales
# 512-window recipe gave +3.49% (KL 0.0253), not +3.02%: the trajectory depends on the order of float reductions
# (thread count), and differences of a few tenths of a percent between runs of one recipe are noise of that kind.
# - (e) AWQ (`awq.py`: per-channel scales rms(x)^alpha, alpha searched per input group on the calibration output
#   error, folded into attn_norm / ffn_norm / w3 rows, the float function unchanged): as PTQ, RTN +10.04% ->
#   +9.21%, RTN + MSE search +8.77% -> +8.24%; folded into the teacher before the same QAT (INT4_TARGET_RECIPE):
#   +2.92% (KL 0.0257), the first recipe within the 3% target, with every block linear int4 g32.
# - (f) INT4_TARGET_RECIPE with ce_weight 0.5 (half the loss cross-entropy on the training text): +6.53%
#   (KL 0.0582), far worse: the float teacher's soft targets beat the text's hard labels for this student.
# - (g) INT4_TARGET_RECIPE with min_lr_ratio 0.0 (cosine to zero, not to 0.1 x): +2.89% (KL 0.0214, lower than
#   0.0257), perplexity within noise of +2.92%; not enough margin to gate CI on (one torch thread).
# Measured on 2026-12-02 with one torch thread each (`quantize_qat` + `compare_models` on the 40 documents, niced
# on the shared 2-vCPU machine; 360 s of training when it had CPU to spare, 1200 s under others' benchmarks):
# - the (e) recipe re-run: +2.96% (KL 0.0249); the same seeds reproduce it only to a few hundredths.
# - (h) lr 2e-4, min_lr_ratio 0.0: +2.78% (KL 0.0205, top-1 93.60%), the best so far: INT4_TARGET_RECIPE below.
# - (i) (h) with distillation temperature 2: +2.91% (KL 0.0210): no gain.
# - (j) lr 4e-4, min_lr_ratio 0.0: +3.57% (KL 0.0243): the larger step walks the weights away again.
# No recipe tried reaches the +2.5% that would leave a margin over the thread-count noise (~0.5%).
# Measured on 2026-12-03 on the shared 2-vCPU AMD EPYC (AVX2, no AVX-512), one torch thread, niced under load:
# - (k) (h) + 40K tokens sampled from the float teacher appended to the 38.9K training tokens (`teacher_tokens`,
#   LLM-QAT's data-free distillation; sampled then with the numpy reference, one sequence at a time): +2.50%
#   (KL 0.0183, top-1 94.19%), from (h)'s +2.78% (KL 0.0205, measured on the AVX-512 machine).
# - (l) (h) + 80K teacher-sampled tokens (batched torch sampler, KV cache): +2.43% (KL 0.0184) at 1 torch thread
#   and +2.43% (KL 0.0184, top-1 93.61%) at 2; (h) re-measured in the same run: +2.96%.
# INT4_TARGET_RECIPE is (l); PREVIOUS_INT4_RECIPE, (h),
# stays as a row beside it. The rows of (a)-(e) were dropped from the table to keep its run short; their numbers
# are above.
PREVIOUS_INT4_RECIPE = ("ek_i4", 32, "int4 g32 AWQ + learned searched scales, 512-token windows, lr to 0", 600,
                        2e-4, {"awq": True, "scale_search": "mse", "grid": "learned", "seq_len": 512,
                               "batch_size": 2, "min_lr_ratio": 0.0})
INT4_TARGET_RECIPE = ("ek_i4", 32, "int4 g32 AWQ + learned searched scales, 512-token windows, lr to 0, "
                      "+80K teacher-sampled tokens", 600, 2e-4, {**PREVIOUS_INT4_RECIPE[5], "teacher_tokens": 80000})
QAT_RECIPES = (INT4_TARGET_RECIPE,
               PREVIOUS_INT4_RECIPE,
               ("ek_i4", 32, "int4 g32", 600, 1e-4, {}),
               ("ek_i2", 32, "int2 g32", 600, 1e-3, {}),
               ("ek_t2", None, "ternary per tensor", 600, 3e-3, {}))


def recipes_for_float_model(text: Path) -> list[Recipe]:
    rows = [Recipe("int8 RTN per channel", rtn("ek_i8", 0)), Recipe("int8 RTN g32 (Q8_0 grid)", rtn("ek_i8", 32))]
    for fmt, label in (("ek_i4", "int4"), ("ek_u4", "int4 zero-point"), ("ek_i3", "int3"), ("ek_i2", "int2"),
                       ("ek_t2", "ternary")):
        group = None if fmt == "ek_t2" else 32
        shape = "per tensor" if fmt == "ek_t2" else "g32"
        rows += [Recipe(f"{label} {shape} {'absmean' if fmt == 'ek_t2' else 'RTN'}", rtn(fmt, group)),
                 Recipe(f"{label} {shape} GPTQ act-order", gptq(fmt, group, text)),
                 Recipe(f"{label} {shape} Hadamard + GPTQ act-order", gptq(fmt, group, text, "hadamard"))]
        if fmt in ("ek_i4", "ek_u4"):  # lever (a): the same codes on MSE-searched scales
            rows += [Recipe(f"{label} {shape} RTN + MSE scale search", rtn(fmt, group, "mse")),
                     Recipe(f"{label} {shape} GPTQ act-order + MSE scale search", gptq(fmt, group, text, None, "mse"))]
    for fmt, group, label, steps, lr, options in QAT_RECIPES:
        rows.append(Recipe(f"{label} QAT ({steps} steps, lr {lr:g})", qat(fmt, group, steps, lr, **options)))
    return rows


def recipes_for_ternary_model() -> list[Recipe]:
    return [Recipe("ternary ek_t2 + f32 embeddings (lossless)", QuantizeConfig(format="ek_t2", embedding_format="f32")),
            Recipe("ternary ek_t1 (1.6 bit) + f32 embeddings (lossless)",
                   QuantizeConfig(format="ek_t1", embedding_format="f32")),
            Recipe("ternary ek_t1 + f16 embeddings (default)", rtn("ek_t1"))]


def measure(source: Model, recipe: Recipe, text: Path) -> dict:
    packed = recipe.build(source, text)
    report = compare_models(open_backend(source), open_backend(packed), text, max_documents=EVAL_DOCUMENTS)
    info = describe_model(packed)
    return {"recipe": recipe.label, "bits": info["linear_bits_per_weight"], "ppl": report.perplexity,
            "ref_ppl": report.reference_perplexity, "kl": report.mean_kl, "top1": report.top1_agreement,
            "tokens": report.tokens}


def render(sections: list[tuple[str, list[dict]]]) -> str:
    lines = ["# Quantization quality", "",
             f"Generated by `python -m edgekit.quantize.quality_table` on {datetime.date.today().isoformat()} "
             f"({platform.machine()}, Python {platform.python_version()}). Evaluation: the first {EVAL_DOCUMENTS} "
             "documents of `../shared/data/tinystories_valid_first112k.txt`, each BOS-prefixed, against the "
             "source model. Bits per weight count the linear layers with their scales.", "",
             "The int4 g32 recipe for the issue's 3% target (`INT4_TARGET_RECIPE` in `quantize/quality_table.py`, "
             "held by `tests/quantize/test_int4_quality.py` in the default test run): AWQ per-channel scales "
             "(`quantize/awq.py`) folded into the float teacher's norms and w3 rows (the same float function), then "
             "600 steps of QAT distillation (KL from the float teacher, peak lr 2e-4 with a cosine decay to 0, "
             "batches of 2 x 512-token windows, one torch thread, seeded) with MSE-searched float16 group scales that "
             "are trained too, on the training documents plus 80K tokens sampled from the float teacher itself "
             "(`teacher_tokens`, LLM-QAT's data-free distillation). The trajectory depends on the order of float "
             "reductions, so other thread counts and CPUs land a few tenths of a percent away. Every block linear "
             "(wq, wk, wv, wo, w1, w2, w3) is int4 g32 with Q4_0's codes and fp16 scales; the tied token "
             "embedding / classifier stays f16 (the default `embedding_format`, as llama.cpp keeps token "
             "embeddings at higher precision) and is not in the bits per weight. From the CLI: `edgekit quantize "
             "../shared/models/stories260K.bin --format ek_i4 --group-size 32 --method qat --awq --scale-search mse "
             "--qat-grid learned --steps 600 --lr 2e-4 --min-lr-ratio 0 --batch-size 2 --seq-len 512 "
             "--teacher-tokens 80000 --calib ../shared/data/tinystories_valid_first112k.txt --calib-first-document 40 "
             "-o int4.edgekit`.", ""]
    for title, rows in sections:
        lines += [f"## {title}", "", "| recipe | bits/weight | perplexity | source perplexity | mean KL (nats) | top-1 |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['recipe']} | {r['bits']:.3f} | {r['ppl']:.4f} | {r['ref_ppl']:.4f} | {r['kl']:.5f} "
                         f"| {r['top1']:.2%} |")
        lines.append("")
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[str]:
    """The issue's quality targets on stories260K, checked against the measured rows."""
    def best(prefix: str) -> dict:
        return min((r for r in rows if r["recipe"].startswith(prefix)), key=lambda r: r["ppl"])

    lines = ["## Targets on stories260K", ""]
    for prefix, limit in (("int8", 0.005), ("int4", 0.03)):
        r = best(prefix)
        excess = r["ppl"] / r["ref_ppl"] - 1
        verdict = "met" if excess <= limit else "missed"
        lines.append(f"- {prefix} perplexity within {limit:.1%} of float: {verdict} (best: {r['recipe']}, "
                     f"{excess:+.2%})")
    for prefix in ("int3", "int2"):
        rtn_kl = next(r["kl"] for r in rows if r["recipe"].startswith(prefix) and r["recipe"].endswith("RTN"))
        gptq_kl = next(r["kl"] for r in rows if r["recipe"].startswith(prefix) and r["recipe"].endswith(
            "g32 GPTQ act-order"))
        lines.append(f"- {prefix}: GPTQ KL {gptq_kl:.4f} vs RTN {rtn_kl:.4f}: "
                     f"{'GPTQ better' if gptq_kl < rtn_kl else 'GPTQ NOT better'}")
    absmean_kl = next(r["kl"] for r in rows if r["recipe"] == "ternary per tensor absmean")
    qat_kl = next(r["kl"] for r in rows if r["recipe"].startswith("ternary per tensor QAT"))
    lines.append(f"- ternary: QAT KL {qat_kl:.4f} vs absmean PTQ {absmean_kl:.4f}: "
                 f"{'QAT better' if qat_kl < absmean_kl else 'QAT NOT better'}")
    lines += ["", "Where a target is missed, the issue that set it stays open; only this 260K-parameter model "
              "(64-wide residual stream) has been measured so far.", ""]
    return lines


SECTIONS = (("stories260K.bin", "stories260K (float, 260K parameters)"),
            ("bitnet/bitllama2c_1M_ternary_msbfirst.bin", "bitllama2c_1M_ternary_msbfirst.bin (natively ternary)"),
            ("bitnet/bitllama2c_3M_ternary_lsbfirst.bin", "bitllama2c_3M_ternary_lsbfirst.bin (natively ternary)"))


def measure_row(shared: Path, section: int, row: int) -> dict:
    """Row `row` of section `section`, measured from scratch (one unit of work for a worker process)."""
    text = shared / "data" / "tinystories_valid_first112k.txt"
    recipes = recipes_for_float_model(text) if section == 0 else recipes_for_ternary_model()
    if section == 0:  # QAT rows train in torch: keep to one thread per worker on the shared machine
        import torch

        torch.set_num_threads(1)
    return measure(load(shared / "models" / SECTIONS[section][0]), recipes[row], text)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def row_key(shared: Path, section: int, recipe: Recipe) -> str:
    """What a cached row was measured from: the source checkpoint's and the text's sha256, the evaluation
    documents, the row's label and its whole recipe (config JSON)."""
    text = shared / "data" / "tinystories_valid_first112k.txt"
    parts = {"model": file_sha256(shared / "models" / SECTIONS[section][0]), "text": file_sha256(text),
             "eval_documents": EVAL_DOCUMENTS, "label": recipe.label, "recipe": recipe.config.to_json()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def read_cache(path: Path | None) -> dict[str, dict]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgekitError(f"quality-table row cache is unreadable ({exc})", path=path,
                           fix="delete it (or pass --fresh) to measure every row again") from None
    return data if isinstance(data, dict) else {}


def write_cache(path: Path | None, rows: dict[str, dict]) -> None:
    if path is not None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(rows, indent=1, sort_keys=True))


def measure_rows(work: list[tuple[Path, int, int]], jobs: int, done: Callable[[tuple, dict], None]) -> None:
    """Measure each (shared, section, row) of `work`, in `jobs` worker processes when > 1 (same numbers:
    each row is independent and seeded), calling `done(item, row)` as each finishes."""
    if jobs <= 1:
        for item in work:
            done(item, measure_row(*item))
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs) as pool:
        futures = {pool.submit(measure_row, *item): item for item in work}
        for future in as_completed(futures):
            done(futures[future], future.result())


def build_table(shared: Path, jobs: int = 1, cache: Path | None = None) -> str:
    """Every row of every section. Rows found in the `cache` file under the same key (`row_key`) are reused;
    the others are measured (QAT rows first, the longest) and added to it as each finishes, so an interrupted
    run resumes and a changed recipe re-measures only its own row."""
    text = shared / "data" / "tinystories_valid_first112k.txt"
    recipes = [recipes_for_float_model(text), recipes_for_ternary_model(), recipes_for_ternary_model()]
    keys = {(shared, s, r): row_key(shared, s, recipe) for s, rows in enumerate(recipes)
            for r, recipe in enumerate(rows)}
    cached = read_cache(cache)
    work = sorted((item for item, key in keys.items() if key not in cached),
                  key=lambda item: not (item[1] == 0 and "QAT" in recipes[0][item[2]].label))
    log.info("quality table: %d rows cached, %d to measure", len(keys) - len(work), len(work))

    def done(item: tuple, row: dict) -> None:
        cached[keys[item]] = row
        write_cache(cache, cached)
        print(f"measured {SECTIONS[item[1]][0]}: {row['recipe']}: ppl {row['ppl']:.4f} ({row['ppl'] / row['ref_ppl'] - 1:+.2%})",
              flush=True)
    measure_rows(work, jobs, done)
    sections = [(title, [cached[keys[(shared, s, r)]] for r in range(len(recipes[s]))])
                for s, (_, title) in enumerate(SECTIONS)]
    return render(sections) + "\n\n" + "\n".join(targets(sections[0][1]))


def memory_section(cache: Path | None, layers: int = 22, fmt: str = "ek_t2") -> list[str]:
    """The issue's streaming target, measured by `memory_check` (a synthetic ~1B-parameter HF checkpoint at
    TinyLlama-1.1B's shapes, quantized in a child process): its peak RSS beside the packed output's size.
    Cached in `cache` like the rows (key: the layer count and format)."""
    import tempfile

    from edgekit.quantize.memory_check import measure, write_checkpoint

    key = f"memory_check:{layers}:{fmt}"
    cached = read_cache(cache)
    if key not in cached:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "synthetic"
            folder.mkdir()
            params = write_checkpoint(folder, layers)
            report = measure(folder, Path(tmp) / "out.edgekit", fmt)
        cached[key] = {**report, "parameters": params}
        write_cache(cache, cached)
    r = cached[key]
    beyond = r["peak_rss_bytes"] - r["output_bytes"]
    mb = 1024 ** 2
    verdict = "met" if beyond < 2 * 1024 ** 3 else "missed"
    return ["## Streaming quantization at 1B parameters", "",
            f"A synthetic checkpoint of {r['parameters'] / 1e9:.2f}B parameters (random f16 weights at TinyLlama-1.1B's "
            f"shapes, {layers} layers, one safetensors shard per layer) quantized to {fmt} layer by layer in a child "
            f"process: peak RSS {r['peak_rss_bytes'] / mb:.0f} MB, packed output {r['output_bytes'] / mb:.0f} MB, "
            f"{r['seconds']:.0f} s. Target (peak under 2 GB beyond the packed output, "
            f"{beyond / mb:.0f} MB here): {verdict}. Measured by `python -m edgekit.quantize.memory_check "
            f"--layers {layers} --format {fmt}` (the same function this table calls) and held by the `slow` test "
            "`tests/quantize/test_memory_scale.py`.", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description="Regenerate the quantization quality table.")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("EDGEKIT_SHARED", "../shared")))
    parser.add_argument("--out", type=Path, default=Path("docs/QUALITY.md"))
    parser.add_argument("--jobs", type=int, default=1, help="rows measured in parallel worker processes")
    parser.add_argument("--cache", type=Path, default=Path("build/quality_rows.json"),
                        help="measured rows by recipe key, reused on the next run")
    parser.add_argument("--fresh", action="store_true", help="ignore the cache: measure every row again "
                        "(after a change to the quantization or evaluation code)")
    parser.add_argument("--no-memory", action="store_true", help="leave out the 1B-parameter streaming memory "
                        "measurement (writes a 2.2 GB synthetic checkpoint to a temporary folder)")
    args = parser.parse_args()
    if args.fresh and args.cache.exists():
        args.cache.unlink()
    table = build_table(args.shared.resolve(), args.jobs, args.cache)
    if not args.no_memory:
        table += "\n\n" + "\n".join(memory_section(args.cache))
    with atomic_path(args.out) as tmp:
        tmp.write_text(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
