"""`edgekit hls generate` and `edgekit hls csim`: thin over edgekit.hls (registered in edgekit.cli.main)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

hls_app = typer.Typer(no_args_is_help=True, help="TeLLMe-style HLS accelerator: generate a project, C-simulate it.")
console = Console()

MODEL_ARG = typer.Argument(..., metavar="MODEL", help="Ternary checkpoint (bitllama2.c .bin, .edgekit, ...).")


def hls_config(group: int, full_table: bool, lanes: int, tile_tokens: int, key_block: int, attn_macs: int,
               max_seq: int, **head):
    from edgekit.hls.design import HlsConfig

    return HlsConfig(group=group, half_table=not full_table, lanes=lanes, tile_tokens=tile_tokens,
                     key_block=key_block, attn_macs=attn_macs, max_seq=max_seq, **head)


@hls_app.command()
def generate(model: Path = MODEL_ARG,
             board: str = typer.Option("kv260", "--board", help="Board file name (edgekit.boards)."),
             out: Path = typer.Option(..., "-o", "--out", help="New project folder (must not exist or be empty)."),
             group: int = typer.Option(3, "--group", help="Trits per table index (G)."),
             full_table: bool = typer.Option(False, "--full-table", help="3^G-entry tables instead of sign bit + (3^G+1)/2."),
             lanes: int = typer.Option(16, "--lanes", help="Parallel table lookups (rows a cycle)."),
             tile_tokens: int = typer.Option(8, "--tile-tokens", help="Prefill tile (tokens sharing each weight word)."),
             key_block: int = typer.Option(16, "--key-block", help="Attention key block (positions)."),
             attn_macs: int = typer.Option(16, "--attn-macs", help="Attention float multiply-adds a cycle."),
             max_seq: int = typer.Option(0, "--max-seq", help="Device KV cache length (0: the model's context)."),
             head_bits: int = typer.Option(4, "--head-bits", help="LM head weight bits on the fabric (8, 4 or 2)."),
             head_group: int = typer.Option(64, "--head-group", help="LM head weights per uint8 sub-scale."),
             head_lanes: int = typer.Option(8, "--head-lanes", help="LM head rows a cycle (one 64-bit word each)."),
             top_k: int = typer.Option(8, "--top-k", help="(id, logit) pairs the head returns per token."),
             trit_pack: str = typer.Option("base3", "--trit-pack", help="Ternary words in DDR: base3 (5 trits a byte, 1.6 bits) or code (one [sign|index] code per group)."),
             head_screen: int = typer.Option(0, "--head-screen", help="Decode head: 0 the full head; C screens with a 2-bit copy and rescores the C best."),
             ew_lanes: int = typer.Option(1, "--ew-lanes", help="Element-wise elements a cycle (norms, quantization, residual)."),
             kv_bits: int = typer.Option(8, "--kv-bits", help="KV cache in DDR: 8 (int8 + a scale per token and kv head) or 32 (float32)."),
             attn_int: Optional[bool] = typer.Option(None, "--attn-int/--float-attn", help="Attention on the int8 KV codes (default with --kv-bits 8) or in float."),
             tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="llama2.c tokenizer.bin."),
             bit_order: Optional[str] = typer.Option(None, "--bit-order", help="bitllama2.c lsbfirst|msbfirst.")) -> None:
    """Write an HLS project (config header, packed weights, golden vectors, testbench, tcl, README)."""
    from edgekit.boards import load_board
    from edgekit.hls.writer import generate_project
    from edgekit.model import load

    config = hls_config(group, full_table, lanes, tile_tokens, key_block, attn_macs, max_seq, head_bits=head_bits,
                        head_group=head_group, head_lanes=head_lanes, top_k=top_k, kv_bits=kv_bits,
                        trit_pack=trit_pack, head_screen=head_screen, ew_lanes=ew_lanes,
                        attn_int=kv_bits == 8 if attn_int is None else attn_int)
    project = generate_project(load(model, tokenizer=tokenizer, bit_order=bit_order), load_board(board), out, config)
    console.print(f"wrote {project} for {board}: run [bold]edgekit hls csim {project}[/bold]")


@hls_app.command()
def csim(project: Path = typer.Argument(..., help="A folder written by edgekit hls generate.")) -> None:
    """Compile the design and testbench with g++ and run them: each kernel and the top, bit-exact."""
    from edgekit.hls.csim import CsimError, run_csim

    result = run_csim(project)
    table = Table(title=f"C simulation of {project}")
    table.add_column("check")
    table.add_column("result")
    for name, ok in result.checks.items():
        table.add_row(name, "[green]bit-exact[/green]" if ok else "[red]MISMATCH[/red]")
    console.print(table)
    if not result.passed:
        raise CsimError("C simulation failed:\n" + result.output[-2000:], path=project,
                        fix="compare the failing kernel's golden vectors with hls/reference.py")
