"""`edgekit bridge ...`: the CE-CoLLM cloud bridge (train exits, serve the cloud half, run the edge half).

Registered in `edgekit.cli.main` with `app.add_typer(bridge_app, name="bridge")`; errors reach main's
error boundary. Bearer tokens come from --token-file or EDGEKIT_BRIDGE_TOKEN, never from the command line
(argv is visible to every user of the machine).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from edgekit.errors import ConfigError

console = Console()
err_console = Console(stderr=True)

bridge_app = typer.Typer(no_args_is_help=True, help="CE-CoLLM cloud-edge collaboration: early exits on the edge, "
                                                     "hard tokens on the cloud.")

MODEL_ARG = typer.Argument(..., metavar="MODEL", help="Checkpoint (a packed .edgekit file, or any checkpoint "
                                                      "edgekit loads).")
TOKEN_FILE_OPT = typer.Option(None, "--token-file", help="File holding the bearer token (default: "
                                                         "$EDGEKIT_BRIDGE_TOKEN).")


def read_token(token_file: Optional[Path], required: bool) -> Optional[str]:
    if token_file is not None:
        from edgekit.fileio import read_utf8_text

        token = read_utf8_text(token_file, "token file", decode_error=ConfigError).strip()
    else:
        token = os.environ.get("EDGEKIT_BRIDGE_TOKEN", "").strip() or None
    if required and not token:
        raise ConfigError("no bearer token given", fix="pass --token-file FILE or set EDGEKIT_BRIDGE_TOKEN")
    return token


@bridge_app.command("train-exits")
def train_exits_cmd(model: Path = MODEL_ARG,
                    text: Path = typer.Option(..., "--text", help="UTF-8 training text (documents split at "
                                              "<|endoftext|>); its last documents (the --holdout share) are "
                                              "held out to calibrate the thresholds and for the report."),
                    exits: str = typer.Option(..., "--exits", help="Exit layers, ascending, e.g. 2,4; the deepest "
                                              "is the edge/cloud split."),
                    output: Path = typer.Option(..., "--output", "-o", help="Output .edgekit (model + heads)."),
                    max_tokens: int = typer.Option(12288, "--max-tokens", help="Tokens of text to use at most."),
                    steps: int = typer.Option(300, "--steps", help="Adam steps per head."),
                    lr: float = typer.Option(3e-3, "--lr", help="Learning rate."),
                    adapter_hidden: int = typer.Option(0, "--adapter-hidden", help="Hidden size of a residual MLP "
                                                       "adapter before each head (0: norm + LM head only)."),
                    target: float = typer.Option(0.99, "--target-agreement", help="Calibrate per-exit thresholds "
                                                 "on the held-out documents to this top-1 agreement."),
                    margin: float = typer.Option(0.002, "--calibration-margin", help="Calibrate to the target "
                                                 "plus this margin (ignored with --confidence)."),
                    confidence: Optional[float] = typer.Option(None, "--confidence", help="Instead of the margin: "
                                                               "the held-out agreement's one-sided Clopper-Pearson "
                                                               "lower bound at this confidence (e.g. 0.95) must "
                                                               "reach the target."),
                    curve: str = typer.Option("", "--curve", help="Also report the calibration trade-off for these "
                                              "settings, TARGET[@CONFIDENCE],... (e.g. 0.99,0.995,0.99@0.95): "
                                              "thresholds, held-out and test edge share and agreement."),
                    holdout: float = typer.Option(0.2, "--holdout", help="Share of the documents held out "
                                                  "(calibration, and the learned rule's fit)."),
                    test_text: Optional[Path] = typer.Option(None, "--test-text", help="Other text, only measured "
                                                             "with the calibrated thresholds."),
                    self_distill: int = typer.Option(0, "--self-distill", help="Train and calibrate on the full "
                                                     "model's own greedy continuations (this many tokens) of "
                                                     "prompts cut from the documents, the distribution the edge "
                                                     "decides on while generating (0: the text itself)."),
                    prompts_per_doc: int = typer.Option(4, "--prompts-per-doc", help="With --self-distill: "
                                                        "prompts per document (first 8 tokens, then every 32)."),
                    rule: str = typer.Option("max-softmax", "--rule", help="Exit rule the thresholds apply to: "
                                             "max-softmax, margin (p1 - p2), or learned (a per-exit confidence "
                                             "predictor fitted on half the held-out documents)."),
                    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Train early-exit heads by distillation (backbone frozen) and store them with the packed model."""
    from edgekit.cloud_bridge.exits import SplitPlan, save_with_exits
    from edgekit.cloud_bridge.train import ExitTrainConfig, train_exits
    from edgekit.fileio import read_utf8_text
    from edgekit.model import load

    loaded = load(model)
    plan = SplitPlan.parse(exits, loaded.config.n_layers)
    config = ExitTrainConfig(exits=plan.exits, max_tokens=max_tokens, steps=steps, lr=lr,
                             adapter_hidden=adapter_hidden, target_agreement=target, self_distill=self_distill,
                             prompts_per_document=prompts_per_doc, rule=rule, calibration_margin=margin,
                             calibration_confidence=confidence, curve=parse_curve(curve), holdout=holdout)
    test = read_utf8_text(test_text, "test text") if test_text is not None else None
    heads, report = train_exits(loaded, read_utf8_text(text, "training text"), config, test)
    save_with_exits(loaded, heads, output, report)
    if json_out:
        console.print_json(json.dumps(report))
        return
    _render_exit_report(report)
    console.print(f"wrote {output} (split after layer {plan.split} of {loaded.config.n_layers})")


@bridge_app.command("calibrate-exits")
def calibrate_exits_cmd(model: Path = typer.Argument(..., metavar="MODEL", help="A .edgekit file with exit heads "
                                                     "(edgekit bridge train-exits -o)."),
                        text: Path = typer.Option(..., "--text", help="The training text the heads were trained "
                                                  "with (its held-out documents are rebuilt from it)."),
                        output: Path = typer.Option(..., "--output", "-o", help="Output .edgekit (model + heads "
                                                    "with the new thresholds)."),
                        target: float = typer.Option(0.99, "--target-agreement", help="Held-out top-1 agreement to "
                                                     "calibrate to."),
                        margin: float = typer.Option(0.002, "--calibration-margin", help="Calibrate to the target "
                                                     "plus this margin (ignored with --confidence)."),
                        confidence: Optional[float] = typer.Option(None, "--confidence", help="The held-out "
                                                                   "agreement's Clopper-Pearson lower bound at this "
                                                                   "confidence must reach the target."),
                        curve: str = typer.Option("", "--curve", help="Also report these settings, "
                                                  "TARGET[@CONFIDENCE],..."),
                        test_text: Optional[Path] = typer.Option(None, "--test-text", help="Other text, only "
                                                                 "measured with the chosen thresholds."),
                        json_out: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Re-choose the exit thresholds of trained heads (no training): same held-out rows, a new target or bound."""
    from edgekit.cloud_bridge.exits import HEADS_METADATA, load_exit_heads, load_exit_rule, save_with_exits
    from edgekit.cloud_bridge.train import ExitTrainConfig, recalibrate_exits
    from edgekit.fileio import read_utf8_text
    from edgekit.model import load

    loaded = load(model)
    heads, rule = load_exit_heads(loaded), load_exit_rule(loaded)
    stored = (json.loads(loaded.metadata.get(HEADS_METADATA) or "{}").get("report") or {}).get("config")
    if stored is None:
        raise ConfigError(f"{model} does not record how its heads were trained (report.config)",
                          fix="retrain them with this edgekit version: edgekit bridge train-exits")
    config = ExitTrainConfig(exits=tuple(sorted(heads)), target_agreement=target, calibration_margin=margin,
                             calibration_confidence=confidence, curve=parse_curve(curve), rule=rule.name, **stored)
    test = read_utf8_text(test_text, "test text") if test_text is not None else None
    report = recalibrate_exits(loaded, heads, rule, read_utf8_text(text, "training text"), config, test)
    previous = json.loads(loaded.metadata[HEADS_METADATA])["report"]
    save_with_exits(loaded, heads, output, {**previous, **report, "recalibrated": True}, rule=rule)
    if json_out:
        console.print_json(json.dumps(report))
        return
    _render_exit_report({**previous, **report})
    console.print(f"wrote {output}")


def parse_curve(text: str) -> tuple[tuple[float, float | None], ...]:
    """'0.99,0.995,0.99@0.95' -> ((0.99, None), (0.995, None), (0.99, 0.95))."""
    settings = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        target, _, confidence = part.partition("@")
        try:
            settings.append((float(target), float(confidence) if confidence else None))
        except ValueError:
            raise ConfigError(f"--curve entry {part!r} is not TARGET[@CONFIDENCE]",
                              fix="e.g. --curve 0.99,0.99@0.95") from None
    return tuple(settings)


def _render_exit_report(report: dict) -> None:
    held = report["trained"]["tokens"]
    table = Table(title=f"exit heads on {held:,} held-out tokens (coverage / top-1 agreement with the full model)")
    for column in ("exit", "threshold", "coverage", "agreement", "untrained agreement"):
        table.add_column(column, justify="right")
    for row, before in zip(report["trained"]["per_exit"], report["untrained"]["per_exit"]):
        table.add_row(str(row["exit"]), f"{row['threshold']:.2f}", f"{100 * row['coverage']:.1f}%",
                      _percent(row["agreement"]), _percent(before["agreement"]))
    console.print(table)
    cascade = Table(title="edge cascade (first confident exit answers, the rest go to the cloud)")
    for column in ("threshold", "edge share", "agreement"):
        cascade.add_column(column, justify="right")
    for row in report["trained"]["cascade"]:
        cascade.add_row(f"{row['threshold']:.2f}", f"{100 * row['edge_share']:.1f}%", _percent(row["agreement"]))
    for name, part in (("held-out", report["trained"]), ("test text", report.get("test"))):
        if part is not None and "calibrated" in part:
            row = part["calibrated"]
            thresholds = ",".join(f"{layer}:{t:.3f}" for layer, t in row["threshold"].items())
            cascade.add_row(f"calibrated {thresholds} ({name})", f"{100 * row['edge_share']:.1f}%",
                            f"{100 * row['agreement']:.2f}%")
    console.print(cascade)
    if report.get("calibration_curve"):
        curve = Table(title="calibration trade-off (thresholds from the held-out rows; test only measured)")
        for column in ("target", "bound", "thresholds", "held-out share / agreement", "test share / agreement"):
            curve.add_column(column, justify="right")
        for row in report["calibration_curve"]:
            test = row.get("test")
            curve.add_row(f"{100 * row['target']:.2f}%", "-" if row["confidence"] is None else
                          f"CP {row['confidence']:g}", ",".join(f"{t:.4g}" for t in row["thresholds"].values()),
                          f"{100 * row['heldout']['edge_share']:.1f}% / {100 * row['heldout']['agreement']:.2f}%",
                          "-" if test is None else f"{100 * test['edge_share']:.1f}% / {100 * test['agreement']:.2f}%")
        console.print(curve)


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


@bridge_app.command("serve")
def serve_cmd(model: Path = MODEL_ARG,
              host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by default)."),
              port: int = typer.Option(8765, "--port", help="TCP port (0: any free port, printed)."),
              token_file: Optional[Path] = TOKEN_FILE_OPT,
              max_sessions: int = typer.Option(256, "--max-sessions", help="Concurrent sessions at most."),
              max_context: Optional[int] = typer.Option(None, "--max-context", help="Positions per session at most "
                                                        "(default: the model's context)."),
              rate: float = typer.Option(200.0, "--max-requests-per-second", help="Hard requests per session and "
                                         "second."),
              idle_timeout: float = typer.Option(300.0, "--idle-timeout", help="Close sessions idle this many "
                                                 "seconds."),
              resume_s: float = typer.Option(30.0, "--resume-s", help="Keep a session whose connection dropped "
                                             "(no close frame) this many seconds for the edge to resume (0: never)."),
              max_batch: int = typer.Option(16, "--max-batch", help="Hard requests answered together at most."),
              batch_window_ms: float = typer.Option(1.0, "--batch-window-ms", help="Wait this long for more "
                                                    "requests to batch."),
              kernels: str = typer.Option("auto", "--kernels", help="Linears on: auto (Triton when a CUDA device "
                                          "exists, or under TRITON_INTERPRET=1), cpu (LUT kernels), triton."),
              use_ray: bool = typer.Option(False, "--ray", help="Serve as a Ray Serve application (a local Ray "
                                           "cluster, or the one at $RAY_ADDRESS) with session affinity; needs "
                                           "edgekit[bridge-ray]."),
              replicas: int = typer.Option(2, "--replicas", help="Ray Serve replicas (with --ray).")) -> None:
    """Serve the cloud half (layers after the split and the final head) over WebSocket + HTTP."""
    from edgekit.cloud_bridge.server import ServerConfig
    from edgekit.cloud_bridge.serving import serve_forever
    from edgekit.model import load

    config = ServerConfig(token=read_token(token_file, required=True), max_sessions=max_sessions,
                          max_context=max_context, max_requests_per_second=rate, idle_timeout_s=idle_timeout,
                          resume_s=resume_s, max_batch=max_batch, batch_window_ms=batch_window_ms, kernels=kernels)
    if use_ray:
        from edgekit.cloud_bridge.ray_app import serve_ray_forever

        def announce(bound: int) -> None:
            err_console.print(f"edgekit bridge serving {model} with {replicas} Ray Serve replicas on "
                              f"ws://{host}:{bound}/v1/session", highlight=False)

        serve_ray_forever(model, config, replicas, host, port, on_ready=announce)
        return
    loaded = load(model)
    serve_forever(loaded, config, host, port,
                  on_ready=lambda bound: err_console.print(f"edgekit bridge serving {model} on "
                                                           f"ws://{host}:{bound}/v1/session", highlight=False))


@bridge_app.command("run")
def run_cmd(model: Path = MODEL_ARG,
            url: Optional[str] = typer.Option(None, "--url", help="Cloud session URL, ws://HOST:PORT/v1/session "
                                              "(none: standalone)."),
            token_file: Optional[Path] = TOKEN_FILE_OPT,
            prompt: str = typer.Option("", "--prompt", "-p", help="Prompt text (empty: start from BOS)."),
            max_tokens: int = typer.Option(64, "--max-tokens", "-n", help="Tokens to generate at most."),
            threshold: str = typer.Option("calibrated", "--threshold", help="Exit threshold: 'calibrated' (the "
                                          "per-exit thresholds stored with the heads, for their exit rule; 0.8 "
                                          "if they have none) or one number for every exit (above 1: every token "
                                          "goes to the cloud)."),
            latency_budget_ms: Optional[float] = typer.Option(None, "--latency-budget-ms", help="Lower the "
                                                              "threshold when cloud answers cost more than this."),
            encoding: str = typer.Option("f16", "--encoding", help="Boundary states on the wire: f32, f16, int8."),
            kv_fill: str = typer.Option("deferred", "--kv-fill", help="KV of layers above an exit: deferred "
                                        "(exact) or copy (state copy).")) -> None:
    """Run the edge half: exits answer easy tokens, the cloud the hard ones (greedy), standalone without it."""
    from edgekit.cloud_bridge.backend import open_bridge_edge
    from edgekit.cloud_bridge.session import BridgeConfig
    from edgekit.model import load
    from edgekit.runtime import TextStream

    loaded = load(model)
    calibrated = threshold.strip() == "calibrated"
    value = 1.0 if calibrated else (_floats(threshold, "--threshold") or (0.8,))[0]
    config = BridgeConfig(url=url, token=read_token(token_file, required=url is not None), threshold=value,
                          calibrated=calibrated,
                          latency_budget_ms=latency_budget_ms, encoding=encoding, kv_fill=kv_fill)
    edge = open_bridge_edge(loaded, config)
    chosen = edge.exit_thresholds
    err_console.print(f"[dim]exit rule {edge.runner.rule.name}, thresholds " + (
        "calibrated " + ", ".join(f"{l}: {t:g}" for l, t in sorted(chosen.items())) if chosen is not None
        else f"{config.threshold:g}") + "[/dim]", highlight=False)
    prompt_ids = loaded.tokenizer.encode(prompt)
    stream = TextStream(loaded.tokenizer, prompt_ids)
    console.print(stream.emitted, end="", style="bold", highlight=False, markup=False)
    try:
        for out in edge.generate(prompt_ids, max_tokens, set(loaded.tokenizer.eos_ids)):
            console.print(stream.push(out.token), end="", highlight=False, markup=False,
                          style=None if out.source == "edge" else "cyan" if out.source == "cloud" else "yellow")
    finally:
        edge.close()
    console.print()
    s = edge.stats
    rtt = sorted(s.rtt_ms)
    err_console.print(f"[dim]edge {s.edge}, cloud {s.cloud}, standalone {s.standalone} tokens "
                      f"(edge share {100 * s.edge_share:.1f}%); {s.requests} requests, {s.resyncs} resyncs, "
                      f"{s.reconnects} sessions; median RTT {rtt[len(rtt) // 2] if rtt else 0:.1f} ms[/dim]")


@bridge_app.command("bench")
def bench_cmd(model: Path = MODEL_ARG,
              text: Path = typer.Option(..., "--text", help="Text whose documents' first words are the prompts."),
              prompts: int = typer.Option(4, "--prompts", help="Number of prompts (documents)."),
              prompt_tokens: int = typer.Option(8, "--prompt-tokens", help="Tokens per prompt (BOS included)."),
              max_tokens: int = typer.Option(48, "--max-tokens", "-n", help="Tokens generated per prompt."),
              rtt: str = typer.Option("0,50", "--rtt-ms", help="Emulated round-trip times, comma-separated."),
              thresholds: str = typer.Option("calibrated,0.8,0.9", "--thresholds", help="CE-CoLLM exit thresholds; "
                                             "'calibrated': the per-exit thresholds stored with the heads."),
              bandwidth: Optional[float] = typer.Option(None, "--bandwidth-mbit", help="Emulated link bandwidth."),
              encoding: str = typer.Option("f16", "--encoding", help="Boundary states: f32, f16, int8."),
              output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the report as JSON."),
              json_out: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Cloud-only vs naive split vs CE-CoLLM through a latency/bandwidth-emulating proxy on loopback."""
    from edgekit.cloud_bridge.bench import BridgeBenchConfig, bench_thresholds, kv_fill_comparison, run_bridge_bench
    from edgekit.cloud_bridge.exits import load_exit_heads
    from edgekit.fileio import read_utf8_text, write_json_atomic
    from edgekit.model import load
    from edgekit.quantize.evaluate import split_documents

    loaded = load(model)
    heads = load_exit_heads(loaded)
    docs = split_documents(read_utf8_text(text, "prompt text"))[:prompts]
    prompt_ids = [loaded.tokenizer.encode(doc, add_bos=True)[:prompt_tokens] for doc in docs]
    names = [part.strip() for part in thresholds.split(",") if part.strip()]
    calibrated = "calibrated" in names
    config = BridgeBenchConfig(rtts_ms=_floats(rtt, "--rtt-ms"), calibrated=calibrated,
                               thresholds=_floats(",".join(n for n in names if n != "calibrated"), "--thresholds"),
                               bandwidth_mbit=bandwidth, max_tokens=max_tokens, encoding=encoding)
    report = run_bridge_bench(loaded, heads, prompt_ids, config)
    report["kv_fill"] = kv_fill_comparison(loaded, heads, prompt_ids, bench_thresholds(config, heads)[0][1],
                                           max_tokens)
    if output is not None:
        write_json_atomic(output, report)
    if json_out:
        console.print_json(json.dumps(report))
        return
    _render_bench(report)


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a comma-separated list of numbers",
                          fix=f"e.g. {option} 0,50") from None


def _render_bench(report: dict) -> None:
    table = Table(title=f"{report['model']}: split after {report['split']} of {report['n_layers']} layers, "
                        f"{report['prompts']} prompts x {report['config']['max_tokens']} tokens")
    columns = ("RTT ms", "mode", "edge share", "cloud layers", "cloud heads", "bytes/resp", "ms/token",
               "vs cloud-only", "top-1 (own prefix)", "= cloud-only text")
    for column in columns:
        table.add_column(column, justify="left" if column == "mode" else "right")
    for r in report["rows"]:
        table.add_row(f"{r['rtt_ms']:g}", r["mode"], f"{100 * r['edge_share']:.1f}%",
                      f"{100 * r['cloud_layer_share']:.0f}%", f"{100 * r['cloud_head_share']:.0f}%",
                      f"{r['bytes_per_response']:,.0f}", f"{r['ms_per_token']:.1f}",
                      f"{r['latency_vs_cloud_only']:.2f}x", f"{100 * r['top1_own_prefix']:.1f}%",
                      f"{100 * r['top1_vs_cloud_only']:.1f}%")
    console.print(table)
    kv = Table(title="KV of layers above an exit")
    for column in ("kv fill", "threshold", "edge share", "top-1 (own prefix)", "edge ms/token"):
        kv.add_column(column, justify="right")
    for r in report["kv_fill"]:
        kv.add_row(r["kv_fill"], r["threshold_name"], f"{100 * r['edge_share']:.1f}%",
                   f"{100 * r['top1_own_prefix']:.1f}%", f"{r['edge_ms_per_token']:.2f}")
    console.print(kv)


@bridge_app.command("soak")
def soak_cmd(model: Path = MODEL_ARG,
             sessions: int = typer.Option(100, "--sessions", help="Concurrent edge sessions."),
             minutes: float = typer.Option(10.0, "--minutes", help="Duration of the load."),
             url: Optional[str] = typer.Option(None, "--url", help="A running server's session URL (default: start "
                                               "`edgekit bridge serve` in a child process on a free port)."),
             token_file: Optional[Path] = TOKEN_FILE_OPT,
             tokens: int = typer.Option(24, "--tokens", help="Tokens per generated sequence."),
             threshold: float = typer.Option(0.8, "--threshold", help="Edge exit threshold."),
             output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the report as JSON."),
             json_out: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Many concurrent edge sessions against a real server; every sequence must match its run alone.

    Exit code 1 when any error occurred (exception, standalone token, resync, wrong/missing/duplicated token).
    """
    from edgekit.cloud_bridge.exits import load_exit_heads
    from edgekit.cloud_bridge.soak import ServerProcess, SoakConfig, run_soak, server_errors
    from edgekit.fileio import write_json_atomic
    from edgekit.model import load

    config = SoakConfig(sessions=sessions, seconds=60.0 * minutes, tokens_per_sequence=tokens, threshold=threshold)
    loaded = load(model)
    heads = load_exit_heads(loaded)
    if url is not None:
        report = run_soak(loaded, heads, url, read_token(token_file, required=True), config)
    else:
        with ServerProcess(model) as server:
            report = run_soak(loaded, heads, server.url, server.token, config)
            report["server_errors"] = server_errors(server.metrics())
    if output is not None:
        write_json_atomic(output, report)
    if json_out:
        console.print_json(json.dumps(report))
    else:
        _render_soak(report)
    if report["errors"]:
        raise typer.Exit(1)


def _render_soak(report: dict) -> None:
    c = report["config"]
    console.print(f"{c['sessions']} sessions for {report['elapsed_s']:.0f} s: {report['sequences']:,} sequences, "
                  f"{report['tokens']:,} tokens ({report['cloud_tokens']:,} cloud, {report['edge_tokens']:,} edge), "
                  f"{report['tokens_per_second']:.1f} tokens/s; errors: {report['errors']}", highlight=False)
    for name in ("token_ms", "cloud_rtt_ms"):
        p = report[name]
        if p["p50"] is not None:
            console.print(f"{name}: p50 {p['p50']:.1f}  p90 {p['p90']:.1f}  p99 {p['p99']:.1f}  max {p['max']:.1f}",
                          highlight=False)
    for sample in report["error_samples"]:
        err_console.print(f"[red]{sample}[/red]", highlight=False, markup=True)
    if report.get("server_errors"):
        console.print(f"server error counters: {report['server_errors']}", highlight=False)
