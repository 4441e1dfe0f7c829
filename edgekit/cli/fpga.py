"""`edgekit fpga estimate`: the cycle/resource model of the generated design (registered in edgekit.cli.main)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

fpga_app = typer.Typer(no_args_is_help=True, help="FPGA deploy: cycle/resource estimate (the driver runs via --backend fpga).")
console = Console()


def model_config(model: str):
    from edgekit.fpga.estimate import PRESETS
    from edgekit.model import load

    if model in PRESETS:
        return PRESETS[model]()
    return load(Path(model)).config


def render(estimate, rows) -> None:
    design = estimate.design
    knobs = {k: design["hls"][k] for k in ("group", "half_table", "lanes", "tile_tokens", "attn_macs", "key_block",
                                           "head_bits", "head_lanes", "top_k", "kv_bits", "attn_int", "trit_pack", "head_screen", "ew_lanes")}
    console.print(f"[bold]{estimate.board}[/bold]: {knobs}; ternary weights {estimate.weight_bytes / 1e9:.3f} GB, "
                  f"DDR roofline {estimate.roofline_tok_s:.1f} tok/s (ternary weights alone); LM head on the "
                  f"{estimate.lm_head}: {estimate.head_bytes / 1e6:.0f} MB a token")
    table = Table(title="resources (model, not synthesis)")
    for column in ("resource", "used", "of the part"):
        table.add_column(column)
    for name, used in estimate.resources.items():
        table.add_row(name, str(used), f"{estimate.utilization[name]:.0%}")
    console.print(table)
    table = Table(title="decode")
    for column in ("context", "tok/s", "FPGA-only tok/s", "DDR MB/token", "TLMM ms", "attention ms",
                   "element-wise ms", "LM head ms", "host ms"):
        table.add_column(column)
    for r in estimate.decode:
        table.add_row(str(r["context"]), f"{r['tok_s']:.1f}", f"{r['fpga_only_tok_s']:.1f}", f"{r['ddr_bytes'] / 1e6:.0f}",
                      f"{r['linear_s'] * 1e3:.1f}", f"{r['attention_s'] * 1e3:.1f}", f"{r['elementwise_s'] * 1e3:.2f}",
                      f"{r['head_s'] * 1e3:.1f}", f"{r['host_s'] * 1e3:.1f}")
    console.print(table)
    console.print("TTFT: " + ", ".join(f"{p['prompt']} tokens {p['ttft_s']:.2f} s" for p in estimate.prefill))
    if rows:
        table = Table(title="against TeLLMe's published KV260 figures",
                      caption="TeLLMe's abstracts do not state the model: compare like shapes (bitnet-b1.58-large is ~0.7B)")
        for column in ("paper", "metric", "this model", "published", "error"):
            table.add_column(column)
        for r in rows:
            table.add_row(r["version"], r["metric"], f"{r['ours']:.2f}", f"{r['theirs']:.2f}", f"{r['error']:+.0%}")
        console.print(table)


@fpga_app.command("check-hwh")
def check_hwh(hwh: Path = typer.Argument(..., help="The .hwh Vivado wrote beside the bitstream.")) -> None:
    """Check that a bitstream's hardware handoff holds the ek_top IP under edgekit's VLNV."""
    from edgekit.fpga.hwh import find_ek_top
    from edgekit.hls.ip import IP_VLNV

    console.print(f"{hwh}: instance [bold]{find_ek_top(hwh)}[/bold] is {IP_VLNV}")


@fpga_app.command()
def estimate(model: str = typer.Argument(..., metavar="MODEL", help="A checkpoint path or a preset shape: "
                                          "bitnet-b1.58-2b4t, bitnet-b1.58-large."),
             board: str = typer.Option("kv260", "--board", help="Board file name (edgekit.boards)."),
             group: Optional[int] = typer.Option(None, "--group", help="Trits per table index (default: searched)."),
             lanes: Optional[int] = typer.Option(None, "--lanes", help="Parallel lookups (default: searched)."),
             tile_tokens: Optional[int] = typer.Option(None, "--tile-tokens", help="Prefill tile (default: searched)."),
             attn_macs: Optional[int] = typer.Option(None, "--attn-macs", help="Attention MACs a cycle (default: searched)."),
             max_seq: int = typer.Option(2048, "--max-seq", help="Device KV cache length (capped at the model's)."),
             lm_head: str = typer.Option("fpga", "--lm-head", help="Where the LM head runs: fpga (ek_lmhead.h) or host."),
             head_bits: int = typer.Option(4, "--head-bits", help="Fabric LM head weight bits (8, 4 or 2)."),
             head_lanes: Optional[int] = typer.Option(None, "--head-lanes", help="Fabric LM head rows a cycle (default: searched)."),
             lm_head_bits: int = typer.Option(8, "--lm-head-bits", help="Host LM head weight bits (8 or 4; --lm-head host)."),
             trit_pack: Optional[str] = typer.Option(None, "--trit-pack", help="Ternary words in DDR: code or base3 (5 trits a byte; default: searched)."),
             head_screen: Optional[int] = typer.Option(None, "--head-screen", help="Rows the decode head rescores after a 2-bit screen (0: full head; default: searched)."),
             ew_lanes: Optional[int] = typer.Option(None, "--ew-lanes", help="Element-wise elements a cycle (default: searched)."),
             kv_bits: int = typer.Option(8, "--kv-bits", help="KV cache in DDR: 8 (int8 + a scale per token and kv head) or 32 (float32)."),
             attn_int: Optional[bool] = typer.Option(None, "--attn-int/--float-attn", help="Attention on the int8 KV codes (default with --kv-bits 8) or in float."),
             json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Predict decode tok/s per context, TTFT per prompt, DDR traffic and LUT/FF/DSP/BRAM/URAM use."""
    from dataclasses import replace

    from edgekit.boards import load_board
    from edgekit.fpga.estimate import compare_with_tellme, estimate_config, recommend_hls

    config, target = model_config(model), load_board(board)
    max_seq = min(max_seq, config.max_seq_len)
    attn_int = kv_bits == 8 if attn_int is None else attn_int
    hls = recommend_hls(config, target, max_seq=max_seq, head_bits=head_bits, kv_bits=kv_bits, attn_int=attn_int)
    given = {k: v for k, v in dict(group=group, lanes=lanes, tile_tokens=tile_tokens, attn_macs=attn_macs,
                                   head_lanes=head_lanes, trit_pack=trit_pack, head_screen=head_screen, ew_lanes=ew_lanes).items() if v is not None}
    hls = replace(hls, **given)
    if given:                                  # explicit knobs: refuse a design over the part, naming the knob
        from edgekit.hls.design import design_for
        from edgekit.hls.resources import check_fits

        check_fits(design_for(config, hls), target)
    result = estimate_config(config, target, hls, lm_head_bits=lm_head_bits, lm_head=lm_head)
    rows = compare_with_tellme(result) if target.name == "kv260" else []
    if json_out:
        console.print_json(json.dumps({**result.to_json(), "tellme": rows}))
    else:
        render(result, rows)
