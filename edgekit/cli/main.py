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

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="edgekit: ternary and low-bit LLM inference for CPUs, phones, FPGAs and cloud-edge serving.")
console = Console()
err_console = Console(stderr=True)

MODEL_ARG = typer.Argument(..., metavar="MODEL", help="Checkpoint: HF directory, .gguf file, or llama2.c / bitllama2.c .bin file.")
TOKENIZER_OPT = typer.Option(None, "--tokenizer", help="llama2.c tokenizer.bin (default: tok<vocab>.bin or "
                                                       "tokenizer.bin next to the checkpoint or one folder up).")
BIT_ORDER_OPT = typer.Option(None, "--bit-order", help="bitllama2.c weight order in each byte: lsbfirst or "
                                                       "msbfirst (default: from the file name).")


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
    for key in ("format", "parameters", "bytes", "tokenizer"):
        summary.add_row(key, str(info[key]))
    for key, value in info["config"].items():
        summary.add_row(key, str(value))
    console.print(summary)
    tensors = Table(title="tensors")
    for column in ("name", "shape", "dtype", "bytes"):
        tensors.add_column(column, justify="right" if column == "bytes" else "left")
    for t in info["tensors"]:
        tensors.add_row(t["name"], "x".join(map(str, t["shape"])) or "scalar", t["dtype"], f"{t['bytes']:,}")
    console.print(tensors)


@app.command()
def run(model: Path = MODEL_ARG,
        prompt: str = typer.Option("", "--prompt", "-p", help="Prompt text (empty: start from BOS)."),
        max_tokens: int = typer.Option(128, "--max-tokens", "-n", help="Tokens to generate at most."),
        temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 is greedy."),
        top_k: int = typer.Option(0, "--top-k", help="Keep the k most likely tokens (0: off)."),
        top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (1.0: off)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Random seed for sampling."),
        backend: str = typer.Option("reference", "--backend", help="Runtime back end."),
        tokenizer: Optional[Path] = TOKENIZER_OPT, bit_order: Optional[str] = BIT_ORDER_OPT) -> None:
    """Generate text from a prompt, streaming it, then report prefill and decode speed."""
    from edgekit.model.sampling import SamplingConfig
    from edgekit.runtime import GenerationStats, TextStream, generate_tokens, open_backend

    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    loaded = _load(model, tokenizer, bit_order)
    engine = open_backend(loaded, backend)
    prompt_ids = loaded.tokenizer.encode(prompt)
    if not prompt_ids:
        raise EdgekitError("the prompt encodes to no tokens and the tokenizer adds no BOS",
                           fix="pass --prompt with some text")
    stats = GenerationStats()
    stream = TextStream(loaded.tokenizer, prompt_ids)
    console.print(stream.emitted, end="", style="bold", highlight=False, markup=False)
    for token in generate_tokens(engine, prompt_ids, max_tokens, sampling, stats):
        console.print(stream.push(token), end="", highlight=False, markup=False)
    console.print()
    engine.close()
    err_console.print(
        f"[dim]{backend}: prefill {stats.prompt_tokens} tokens at {stats.prefill_tokens_per_second:.1f} tok/s, "
        f"decode {stats.generated_tokens} tokens at {stats.decode_tokens_per_second:.1f} tok/s "
        f"(stop: {stats.stop_reason})[/dim]")


@app.command(name="eval")
def eval_(model: Path = MODEL_ARG,
          text: Path = typer.Option(..., "--text", help="UTF-8 text; documents separated by <|endoftext|>."),
          context: Optional[int] = typer.Option(None, "--context", help="Tokens per document at most "
                                                                        "(default: the model's context)."),
          max_documents: Optional[int] = typer.Option(None, "--max-documents", help="Score only the first N."),
          backend: str = typer.Option("reference", "--backend", help="Runtime back end."),
          json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
          tokenizer: Optional[Path] = TOKENIZER_OPT, bit_order: Optional[str] = BIT_ORDER_OPT) -> None:
    """Perplexity of a model on a text file."""
    from edgekit.quantize.evaluate import evaluate_perplexity
    from edgekit.runtime import open_backend

    engine = open_backend(_load(model, tokenizer, bit_order), backend, context)
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
