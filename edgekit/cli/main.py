"""`edgekit` commands. Each is thin: parse options, call one library function, render with rich.

One error boundary (`main`) turns any `EdgekitError` into a red one-line message plus its fix and exit
code 1; `EDGEKIT_DEBUG=1` re-raises so the traceback shows.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import edgekit
from edgekit.errors import EdgekitError
from edgekit.cli.bench import bench
from edgekit.cli.bridge import bridge_app
from edgekit.cli.fpga import fpga_app
from edgekit.cli.hls import hls_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="edgekit: ternary and low-bit LLM inference for CPUs, phones, FPGAs and cloud-edge serving.")
console = Console()
err_console = Console(stderr=True)

MODEL_ARG = typer.Argument(..., metavar="MODEL", help="Checkpoint: HF directory, .gguf file, or llama2.c / bitllama2.c .bin file.")
TOKENIZER_OPT = typer.Option(None, "--tokenizer", help="llama2.c tokenizer.bin (default: tok<vocab>.bin or "
                                                       "tokenizer.bin next to the checkpoint or one folder up).")
BIT_ORDER_OPT = typer.Option(None, "--bit-order", help="bitllama2.c weight order in each byte: lsbfirst or "
                                                       "msbfirst (default: from the file name).")
BACKEND_HELP = ("Runtime back end: native (packed weights on edgekit's C kernels), reference (the numpy "
                "oracle), llama.cpp or onnxruntime.")
THREADS_OPT = typer.Option(None, "--threads", help="Kernel threads of the native back end (default: 1 for small "
                                                   "models, else every core; EDGEKIT_NUM_THREADS also sets it).")
KV_CACHE_OPT = typer.Option(None, "--kv-cache", help="KV cache of the native back end: f32, f16 or int8 "
                                                     "(default: EDGEKIT_KV_CACHE, else f16; f32 for small models).")


def _version(value: bool) -> None:
    if value:
        console.print(f"edgekit {edgekit.__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Show the version and exit.")) -> None:
    """edgekit command line."""


def _load(model: Path, tokenizer: Optional[Path], bit_order: Optional[str]):
    from edgekit.model import load
    from edgekit.runtime.onnxrt import is_onnx_export, load_onnx_export

    if is_onnx_export(model):   # an `edgekit export onnx` directory: runs on --backend onnxruntime only
        return load_onnx_export(model)
    return load(model, tokenizer=tokenizer, bit_order=bit_order)


@app.command()
def inspect(model: Path = MODEL_ARG, tokenizer: Optional[Path] = TOKENIZER_OPT,
            bit_order: Optional[str] = BIT_ORDER_OPT,
            json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")) -> None:
    """Show a checkpoint's architecture, parameter count and tensors."""
    from edgekit.model.inspect import describe_model

    info = describe_model(_load(model, tokenizer, bit_order))
    if json_out:
        console.print_json(json.dumps(info))
        return
    summary = Table(title=f"{model}", show_header=False)
    for key in ("format", "parameters", "bytes", "bits_per_weight", "linear_bits_per_weight", "tokenizer"):
        summary.add_row(key, f"{info[key]:,}" if isinstance(info[key], int) else str(info[key]))
    for key, value in info["config"].items():
        summary.add_row(key, str(value))
    for key in ("recipe", "source", "quantize_config"):
        if key in info["metadata"]:
            summary.add_row(key, info["metadata"][key])
    console.print(summary)
    tensors = Table(title="tensors")
    for column in ("name", "shape", "dtype", "group", "bytes", "bits/weight"):
        tensors.add_column(column, justify="right" if column in ("bytes", "bits/weight", "group") else "left")
    for t in info["tensors"]:
        group = "" if t["group_size"] is None else {-1: "tensor", 0: "channel"}.get(t["group_size"], str(t["group_size"]))
        tensors.add_row(t["name"], "x".join(map(str, t["shape"])) or "scalar", t["dtype"], group, f"{t['bytes']:,}",
                        f"{t['bits_per_weight']:.3f}")
    console.print(tensors)


@app.command()
def run(model: Path = MODEL_ARG,
        prompt: str = typer.Option("", "--prompt", "-p", help="Prompt text (empty: start from BOS)."),
        max_tokens: int = typer.Option(128, "--max-tokens", "-n", help="Tokens to generate at most."),
        temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 is greedy."),
        top_k: int = typer.Option(0, "--top-k", help="Keep the k most likely tokens (0: off)."),
        top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (1.0: off)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Random seed for sampling."),
        backend: str = typer.Option("native", "--backend", help=BACKEND_HELP),
        threads: Optional[int] = THREADS_OPT, kv_cache: Optional[str] = KV_CACHE_OPT,
        tokenizer: Optional[Path] = TOKENIZER_OPT, bit_order: Optional[str] = BIT_ORDER_OPT) -> None:
    """Generate text from a prompt, streaming it, then report prefill and decode speed."""
    from edgekit.model.sampling import SamplingConfig

    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    model = _load(model, tokenizer, bit_order)
    stats = _stream_generation(_open_engine(model, backend, None, threads, kv_cache), prompt, max_tokens, sampling)
    err_console.print(
        f"[dim]{backend}: prefill {stats.prompt_tokens} tokens at {stats.prefill_tokens_per_second:.1f} tok/s, "
        f"decode {stats.generated_tokens} tokens at {stats.decode_tokens_per_second:.1f} tok/s "
        f"(stop: {stats.stop_reason})[/dim]")


@app.command()
def demo(prompt: str = typer.Option("Once upon a time", "--prompt", "-p", help="Prompt text."),
         max_tokens: int = typer.Option(96, "--max-tokens", "-n", help="Tokens to generate at most."),
         backend: str = typer.Option("native", "--backend", help=BACKEND_HELP),
         threads: Optional[int] = THREADS_OPT, kv_cache: Optional[str] = KV_CACHE_OPT,
         temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 is greedy."),
         seed: Optional[int] = typer.Option(None, "--seed", help="Random seed for sampling.")) -> None:
    """Run the built-in default model (ternary, trained by edgekit itself) and report what it is and costs."""
    from edgekit.model.inspect import describe_model
    from edgekit.model.sampling import SamplingConfig
    from edgekit.quantize.default_model import default_model_info, default_model_path, load_default_model

    model = load_default_model()
    info, build = describe_model(model), default_model_info(model)
    stats = _stream_generation(_open_engine(model, backend, None, threads, kv_cache), prompt, max_tokens,
                               SamplingConfig(temperature=temperature, seed=seed))
    quality = build["quality"]
    table = Table(title="edgekit built-in default model", show_header=False)
    path = default_model_path()
    table.add_row("file", f"{path} ({path.stat().st_size / 1e6:.2f} MB)")
    table.add_row("parameters", f"{info['parameters']:,} ({model.config.n_layers} layers, dim {model.config.dim})")
    table.add_row("bits per weight", f"{info['linear_bits_per_weight']:.3f} in the linear layers (ternary), "
                  f"{info['bits_per_weight']:.3f} overall")
    table.add_row("quality vs float teacher", f"perplexity {quality['student_perplexity']:.4f} vs "
                  f"{quality['teacher_perplexity']:.4f}, KL {quality['mean_kl_teacher_student']:.4f} nats, "
                  f"top-1 {100 * quality['top1_agreement']:.1f}% ({quality['tokens']:,} held-out tokens)")
    table.add_row(f"speed ({backend})", f"prefill {stats.prefill_tokens_per_second:.1f} tok/s, decode "
                  f"{stats.decode_tokens_per_second:.1f} tok/s")
    console.print(table)


def _open_engine(model, backend: str, context: Optional[int], threads: Optional[int], kv_cache: Optional[str]):
    """Open `model` on `backend`, passing --threads / --kv-cache only to a back end that takes them."""
    import inspect as signature_of

    from edgekit.runtime.backend import backend_class

    cls = backend_class(backend)
    options = {name: value for name, value in (("threads", threads), ("kv_cache", kv_cache)) if value is not None}
    refused = sorted(set(options) - set(signature_of.signature(cls).parameters))
    if refused:
        flag = "--" + refused[0].replace("_", "-")
        raise EdgekitError(f"back end {backend!r} has no {flag} option", fix=f"drop {flag} or use --backend native")
    return cls(model, context, **options)


def _stream_generation(engine, prompt: str, max_tokens: int, sampling):
    """Generate from `prompt` on `engine`, streaming the text to the console; return the GenerationStats."""
    from edgekit.runtime import GenerationStats, TextStream, generate_tokens

    model = engine.model
    prompt_ids = model.tokenizer.encode(prompt)
    if not prompt_ids:
        raise EdgekitError("the prompt encodes to no tokens and the tokenizer adds no BOS",
                           fix="pass --prompt with some text")
    stats = GenerationStats()
    stream = TextStream(model.tokenizer, prompt_ids)
    console.print(stream.emitted, end="", style="bold", highlight=False, markup=False)
    try:
        for token in generate_tokens(engine, prompt_ids, max_tokens, sampling, stats):
            console.print(stream.push(token), end="", highlight=False, markup=False)
    finally:
        engine.close()
    console.print()
    return stats


@app.command(name="eval")
def eval_(model: Path = MODEL_ARG,
          text: Path = typer.Option(..., "--text", help="UTF-8 text; documents separated by <|endoftext|>."),
          context: Optional[int] = typer.Option(None, "--context", help="Tokens per document at most "
                                                                        "(default: the model's context)."),
          max_documents: Optional[int] = typer.Option(None, "--max-documents", help="Score only the first N."),
          reference: Optional[Path] = typer.Option(None, "--reference", help="Float model to compare against: "
                                                   "adds KL divergence, top-1 agreement and per-layer error."),
          backend: str = typer.Option("native", "--backend", help=BACKEND_HELP),
          threads: Optional[int] = THREADS_OPT, kv_cache: Optional[str] = KV_CACHE_OPT,
          json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
          tokenizer: Optional[Path] = TOKENIZER_OPT, bit_order: Optional[str] = BIT_ORDER_OPT) -> None:
    """Perplexity of a model on a text file (and, with --reference, its divergence from a float model)."""
    from edgekit.quantize.evaluate import compare_models, evaluate_perplexity
    from edgekit.runtime import open_backend

    engine = _open_engine(_load(model, tokenizer, bit_order), backend, context, threads, kv_cache)
    if reference is not None:
        _render_comparison(compare_models(open_backend(_load(reference, tokenizer, bit_order), "reference", context),
                                          engine, text, context, max_documents), model, reference, json_out)
        return
    report = evaluate_perplexity(engine, text, context, max_documents)
    if json_out:
        console.print_json(json.dumps(report.to_dict()))
        return
    table = Table(title=f"perplexity of {model.name} on {text.name}")
    for column in ("documents", "tokens", "context", "mean NLL (nats)", "perplexity"):
        table.add_column(column, justify="right")
    table.add_row(str(report.documents), f"{report.tokens:,}", str(report.context_length),
                  f"{report.mean_nll:.4f}", f"{report.perplexity:.3f}")
    console.print(table)


def _render_comparison(report, model: Path, reference: Path, json_out: bool) -> None:
    if json_out:
        console.print_json(json.dumps(report.to_dict()))
        return
    table = Table(title=f"{model.name} against {reference.name}")
    for column in ("documents", "tokens", "perplexity", "reference perplexity", "mean KL (nats)", "top-1 agreement"):
        table.add_column(column, justify="right")
    table.add_row(str(report.documents), f"{report.tokens:,}", f"{report.perplexity:.3f}",
                  f"{report.reference_perplexity:.3f}", f"{report.mean_kl:.5f}", f"{report.top1_agreement:.2%}")
    console.print(table)
    if not report.layers:
        console.print("[dim]per-layer hidden-state error: add --backend reference (it needs the reference "
                      "forward's block outputs)[/dim]")
    if report.layers:
        layers = Table(title="per-layer hidden-state error")
        layers.add_column("layer", justify="right")
        layers.add_column("relative RMSE", justify="right")
        for layer in report.layers:
            layers.add_row(str(layer.layer), f"{layer.relative_rmse:.5f}")
        console.print(layers)


@app.command()
def quantize(model: Path = MODEL_ARG,
             output: Path = typer.Option(..., "--output", "-o", help="Output .edgekit file."),
             fmt: str = typer.Option("ek_t2", "--format", help="Format of the linear weights (ek_t2, ek_t1, "
                                                               "ek_i2/3/4, ek_u2/3/4, ek_i8, f16)."),
             method: str = typer.Option("absmean", "--method", help="absmean (ternary), rtn (intN), gptq "
                                        "(both; needs --calib) or qat (both; trains on --calib, needs torch)."),
             group_size: Optional[int] = typer.Option(None, "--group-size", help="Weights per scale: 32/64/128, "
                                                      "0 per channel, -1 per tensor (default: the format's)."),
             embedding_format: str = typer.Option("f16", "--embedding-format", help="Format of tok_embeddings."),
             output_format: str = typer.Option("ek_i8", "--output-format", help="Format of an untied output."),
             keep_float: list[str] = typer.Option([], "--keep-float", help="Regex of tensor names kept in f16 "
                                                  "(repeatable), e.g. 'layers\\.0\\..*'."),
             override: list[str] = typer.Option([], "--tensor-type", help="REGEX=FORMAT for matching tensors "
                                                "(repeatable), as llama.cpp's --tensor-type."),
             act_quant: Optional[str] = typer.Option(None, "--act-quant", help="none or int8_absmax "
                                                     "(default: the source model's)."),
             rotate: Optional[str] = typer.Option(None, "--rotate", help="hadamard: fold norms and rotate the "
                                                  "residual stream (QuaRot) before quantizing."),
             calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration text for GPTQ (documents "
                                                  "separated by <|endoftext|>)."),
             calib_tokens: int = typer.Option(8192, "--calib-tokens", help="Calibration tokens at most."),
             calib_first_document: int = typer.Option(0, "--calib-first-document", help="Skip the documents "
                                                      "before this one (keep them for evaluation)."),
             act_order: bool = typer.Option(False, "--act-order", help="GPTQ: quantize columns by decreasing "
                                            "Hessian diagonal."),
             scale_search: str = typer.Option("none", "--scale-search", help="Integer grids of the linear weights: "
                                              "none (RTN's max rule) or mse (search each group's float16 scale and "
                                              "zero point for the least rounding error; GPTQ weights it by the "
                                              "Hessian diagonal). Same codes and layout."),
             qat_init: str = typer.Option("float", "--qat-init", help="QAT: start from the float weights (float) "
                                          "or from GPTQ act-order on --calib (gptq)."),
             qat_grid: str = typer.Option("dynamic", "--qat-grid", help="QAT: dynamic (refit grids every step), "
                                          "frozen (keep the initial grids, train the codes) or learned (also "
                                          "train the scales, LSQ)."),
             scale_lr_ratio: float = typer.Option(0.1, "--scale-lr-ratio", help="QAT with --qat-grid learned: "
                                                  "the scales' learning rate over the weights'."),
             awq: bool = typer.Option(False, "--awq", help="QAT into an int format: fold activation-aware "
                                      "per-channel scales (AWQ) into the teacher's norms first (same float "
                                      "function)."),
             teacher_tokens: int = typer.Option(0, "--teacher-tokens", help="QAT: add at least this many tokens "
                                                "sampled from the float teacher (temperature 1, seeded) to the "
                                                "--calib training text (LLM-QAT style)."),
             steps: int = typer.Option(200, "--steps", help="QAT: optimizer steps."),
             lr: float = typer.Option(1e-3, "--lr", help="QAT: peak learning rate (warm-up, then cosine)."),
             min_lr_ratio: float = typer.Option(0.1, "--min-lr-ratio", help="QAT: final learning rate over the "
                                                "peak (0 decays to zero)."),
             batch_size: int = typer.Option(8, "--batch-size", help="QAT: sequences per step."),
             seq_len: int = typer.Option(128, "--seq-len", help="QAT: tokens per sequence."),
             checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="QAT: save a checkpoint "
                                                           "here and resume from it when it exists."),
             tokenizer: Optional[Path] = TOKENIZER_OPT, bit_order: Optional[str] = BIT_ORDER_OPT) -> None:
    """Quantize a checkpoint into a packed .edgekit file, with a progress bar per tensor (or per QAT step)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgekit.quantize.config import QuantizeConfig
    from edgekit.quantize.workflow import quantize_checkpoint

    overrides = {}
    for item in override:
        pattern, sep, target = item.rpartition("=")
        if not sep or not pattern:
            raise EdgekitError(f"--tensor-type {item!r} is not REGEX=FORMAT", fix="e.g. --tensor-type 'output=ek_i8'")
        overrides[pattern] = target
    if method == "qat":
        config = _qat_config(fmt, group_size, embedding_format, output_format, act_quant, steps, lr, batch_size,
                             seq_len, calib_first_document, overrides, keep_float, rotate,
                             dict(scale_search=scale_search, init=qat_init, grid=qat_grid,
                                  scale_lr_ratio=scale_lr_ratio, calib_tokens=calib_tokens, awq=awq,
                                  min_lr_ratio=min_lr_ratio, teacher_tokens=teacher_tokens))
    else:
        config = QuantizeConfig(format=fmt, method=method, group_size=group_size, embedding_format=embedding_format,
                                output_format=output_format, overrides=overrides, keep_float=list(keep_float),
                                act_quant=act_quant, rotate=rotate, calib_path=str(calib) if calib else None,
                                calib_tokens=calib_tokens, calib_first_document=calib_first_document,
                                act_order=act_order, scale_search=scale_search)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("quantizing", total=None)
        result = quantize_checkpoint(model, output, config,
                                     progress=lambda name, i, n: bar.update(task, total=n, completed=i,
                                                                            description=f"quantizing {name}"),
                                     text=calib, checkpoint_dir=checkpoint_dir, tokenizer=tokenizer,
                                     bit_order=bit_order)
    from edgekit.model.inspect import describe_model

    info = describe_model(result.model)
    console.print(f"wrote {result.output}: {result.packed_bytes:,} bytes of tensors "
                  f"({result.source_bytes / max(result.packed_bytes, 1):.1f}x smaller than float32), "
                  f"{info['bits_per_weight']:.3f} bits/weight overall, "
                  f"{info['linear_bits_per_weight']:.3f} in the linear layers")


def _qat_config(fmt, group_size, embedding_format, output_format, act_quant, steps, lr, batch_size, seq_len,
                first_document, overrides, keep_float, rotate, grid_options):
    """The QATConfig for `quantize --method qat` (options QAT cannot honour are refused, not ignored)."""
    if overrides or keep_float or rotate:
        raise EdgekitError("--tensor-type, --keep-float and --rotate do not apply to --method qat",
                           fix="drop them, or quantize with --method gptq/rtn/absmean")
    try:
        from edgekit.quantize.qat import QATConfig
    except ImportError as exc:
        raise EdgekitError(f"QAT needs torch ({exc})", fix='pip install "edgekit[reference]"') from None
    return QATConfig(format=fmt, group_size=group_size, embedding_format=embedding_format,
                     output_format=output_format, act_quant=act_quant or "none", steps=steps, lr=lr,
                     batch_size=batch_size, seq_len=seq_len, first_document=first_document, **grid_options)


export_app = typer.Typer(no_args_is_help=True, help="Export a model to another runtime's file format.")
app.add_typer(export_app, name="export")


@export_app.command("gguf")
def export_gguf_cmd(model: Path = MODEL_ARG,
                    output: Path = typer.Option(..., "--output", "-o", help="Output .gguf file."),
                    float_type: str = typer.Option("F32", "--float-type", help="Type of unpacked float matrices: "
                                                   "F32 or F16."),
                    requantize: Optional[str] = typer.Option(None, "--requantize", help="Requantize tensors GGUF "
                                                             "cannot hold exactly to Q8_0, Q4_0, F16 or F32."),
                    architecture: str = typer.Option("auto", "--architecture", help="llama, bitnet (llama.cpp's "
                                                     "BitNet: sub-norms, bitllama2.c) or auto."),
                    linear_type: Optional[str] = typer.Option(None, "--linear-type", help="Type of every linear "
                                                              "layer: TQ2_0, TQ1_0, Q8_0, Q4_0, F16, F32."),
                    embedding_type: Optional[str] = typer.Option(None, "--embedding-type", help="Type of the "
                                                                 "token embedding (same choices)."),
                    output_type: Optional[str] = typer.Option(None, "--output-type", help="Type of an untied "
                                                              "output layer (same choices)."),
                    embedding_output_types: str = typer.Option(
                        "edgekit", "--embedding-output-types", help="Who picks the token embedding / output "
                        "types: edgekit (Q8_0-or-float, the default) or llama.cpp (its own quantizer's choice, "
                        "e.g. Q6_K / Q4_K, written by llama.cpp from an F32 copy; every other tensor unchanged)."),
                    tokenizer: Optional[Path] = TOKENIZER_OPT, bit_order: Optional[str] = BIT_ORDER_OPT) -> None:
    """Write a GGUF that llama.cpp runs on its own (packed formats map without requantizing)."""
    from edgekit.export.gguf_writer import export_gguf

    report = export_gguf(_load(model, tokenizer, bit_order), output, float_type=float_type, requantize=requantize,
                         architecture=architecture, linear_type=linear_type, embedding_type=embedding_type,
                         output_type=output_type, embedding_output_types=embedding_output_types)
    table = Table(title=f"{output}: {len(report.tensors)} tensors")
    for column in ("GGUF type", "tensors", "exact", "max abs error"):
        table.add_column(column, justify="right" if column != "GGUF type" else "left")
    for gguf_type in sorted({t.gguf_type for t in report.tensors}):
        group = [t for t in report.tensors if t.gguf_type == gguf_type]
        table.add_row(gguf_type, str(len(group)), f"{sum(t.exact for t in group)}/{len(group)}",
                      f"{max(t.max_abs_error for t in group):.3g}")
    console.print(table)
    for t in report.fallbacks:
        console.print(f"[yellow]{t.name}[/yellow]: {t.source_format} -> {t.gguf_type} ({t.note})", highlight=False)
    for note in report.notes:
        console.print(f"{report.architecture}: {note}", highlight=False)


@export_app.command("onnx")
def export_onnx_cmd(model: Path = MODEL_ARG,
                    output: Path = typer.Option(..., "--output", "-o", help="Output directory (model.onnx, "
                                                "genai_config.json, tokenizer)."),
                    accuracy_level: int = typer.Option(4, "--accuracy-level", help="MatMulNBits accuracy_level: 4 "
                                                       "= int8 activations (fast), 0 = float activations."),
                    block_size: int = typer.Option(128, "--block-size", help="MatMulNBits block for per-channel "
                                                   "and per-tensor scales (16-256)."),
                    float_type: str = typer.Option("f32", "--float-type", help="Storage of float matrices: "
                                                   "f32 or f16."),
                    ternary_zero_point: int = typer.Option(1, "--ternary-zero-point", help="1: keep ek_t2 bytes "
                                                           "with explicit zero points; 2: recode trits to +2."),
                    activation_passes: int = typer.Option(2, "--activation-passes", help="Float activations into "
                                                          "int MatMulNBits at level 4: 2 adds the int8 rounding "
                                                          "residual as a second pass (native parity), 1 = one pass."),
                    external_data_mb: int = typer.Option(2048, "--external-data-mb", help="Write the weights to "
                                                         "model.onnx.data above this many MiB."),
                    ort_format: bool = typer.Option(False, "--ort-format", help="Also save model.ort "
                                                    "(onnxruntime Mobile)."),
                    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing directory."),
                    tokenizer: Optional[Path] = TOKENIZER_OPT, bit_order: Optional[str] = BIT_ORDER_OPT) -> None:
    """Write an onnxruntime decoder (KV cache, MatMulNBits weights without requantizing) into a directory."""
    from edgekit.export.onnx_graph import OnnxGraphConfig
    from edgekit.export.onnx_writer import export_onnx

    config = OnnxGraphConfig(accuracy_level=accuracy_level, block_size=block_size, float_type=float_type,
                             ternary_zero_point=ternary_zero_point, activation_passes=activation_passes)
    report = export_onnx(_load(model, tokenizer, bit_order), output, config, overwrite=overwrite,
                         external_data_threshold=external_data_mb << 20, ort_format=ort_format)
    table = Table(title=f"{output}: {', '.join(report.files)}")
    for column in ("ONNX form", "weights", "bytes kept"):
        table.add_column(column, justify="right" if column != "ONNX form" else "left")
    for form in sorted({w.onnx_form for w in report.weights}):
        group = [w for w in report.weights if w.onnx_form == form]
        table.add_row(form, str(len(group)), f"{sum(w.exact_bytes for w in group)}/{len(group)}")
    console.print(table)


app.command()(bench)
app.add_typer(bridge_app, name="bridge")
app.add_typer(hls_app, name="hls")
app.add_typer(fpga_app, name="fpga")


def main(argv: list[str] | None = None) -> int:
    """Entry point with the single error boundary; click itself handles --help and usage errors (exit 2)."""
    try:
        app(args=argv)
    except EdgekitError as exc:
        if os.environ.get("EDGEKIT_DEBUG") == "1":
            raise
        err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False)
        if exc.fix:
            err_console.print(f"[yellow]fix:[/yellow] {escape(exc.fix)}", highlight=False)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
