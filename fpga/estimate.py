"""Cycle and resource model of the generated accelerator (`edgekit fpga estimate`), from the same
`Design` the HLS writer uses, and its comparison with TeLLMe's published figures.

Model (first order; every constant below is an assumption, not a measurement):
- TLMM: a matrix [out, in] takes ceil(out / lanes) row blocks x (ceil(in / G) groups + pipeline depth)
  cycles; a prefill tile of `tile_tokens` tokens runs in the same cycles (one lookup unit per lane and
  token) and reads each weight word once. Weights stream from DDR double-buffered, so a matrix costs the
  larger of its compute and its DDR time. The DDR bandwidth is the smaller of `DDR_EFFICIENCY` of the board's
  peak and what the design's ports move: ek_axi.h stripes weights, head and KV cache over AXI_PORTS masters of
  AXI_PORT_BITS bits (hls/ip.py; on the PS's HP ports, fpga/flow.py), one 64-byte line a cycle at the fabric
  clock (`axi_line_reads` counts those lines exactly as the C-simulated loaders read them).
- Tables: one group a cycle per distinct input (q/k/v share theirs, w1/w3 too).
- Attention: 2 x heads x head_dim MACs per cached position (QK and PV) on `attn_macs` units (float, or
  with attn_int one DSP48E2 integer MAC each; each K/V row is read once for the kv group's query heads),
  against reading the K and V planes of the context from DDR (float32, or int8 codes plus a float32 scale
  per token and kv head: `Design.kv_position_bytes`, ek_kvcache.h).
- Element-wise passes (norms, quantization, RoPE, activation, residual) at `ew_lanes` elements a cycle.
- LM head on the fabric (ek_lmhead.h, the default): ceil(vocab / head_lanes) row blocks x (code words of
  a row + pipeline depth) cycles, against streaming its group-quantized words (codes, sub-scales, row
  scales) from DDR; plus the final norm and quantization (3 x dim cycles). Only the top-k come back.
  A screened head (head_screen C) streams the 2-bit copy the same way, then rescores C rows one code word
  a cycle each, plus RESCORE_LATENCY cycles a row (its words are kLanes apart: no burst).
- Host: a fixed call overhead; with `lm_head="host"` also the LM head as int8 (or int4) weights streamed
  by the ARM cores at the board's host bandwidth (the design before the head moved onto the fabric).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edgekit.boards import Board
from edgekit.fpga.flow import axi_read_bytes_per_s
from edgekit.hls import ip
from edgekit.hls.design import Design, HlsConfig, design_for
from edgekit.hls.packing import ceil_div, matrix_words
from edgekit.hls.resources import ResourceUse, estimate_resources
from edgekit.model.config import ModelConfig, RopeConfig

DDR_EFFICIENCY = 0.8
PIPE_DEPTH = 16
HOST_CALL_S = 100e-6
RESCORE_LATENCY = 100              # cycles of DDR latency per rescored head row (assumed, not measured)

# Published figures (arXiv 2504.16266 v1 and 2510.15926 v2 abstracts) for a KV260. The model they ran is
# taken here to be a ~0.7B BitNet b1.58 ("bitnet-b1.58-large" below): an assumption, not checked.
TELLME = {"v1": {"decode_tok_s": 9.0, "context": 1024, "prefill_s": {64: 0.55, 128: 1.15}, "watts": 7.0},
          "v2": {"decode_tok_s": 25.0, "context": 1024, "prefill_s": {64: 0.45, 128: 0.96}, "watts": 5.0}}


def bitnet_config(dim, hidden, layers, heads, kv_heads, vocab, seq, **extra) -> ModelConfig:
    return ModelConfig(architecture="bitnet", dim=dim, hidden_dim=hidden, n_layers=layers, n_heads=heads,
                       n_kv_heads=kv_heads, vocab_size=vocab, max_seq_len=seq, norm_eps=1e-5,
                       rope=RopeConfig(theta=500000.0), tie_embeddings=True, ternary_weights=True,
                       act_quant="int8_absmax", **extra)


# Shapes from the public model configs (no weights needed for an estimate).
PRESETS = {
    "bitnet-b1.58-2b4t": lambda: bitnet_config(2560, 6912, 30, 20, 5, 128256, 4096, sub_norms=True,
                                               activation="relu2"),
    "bitnet-b1.58-large": lambda: bitnet_config(1536, 4096, 24, 16, 16, 32002, 2048),
}


@dataclass
class Estimate:
    board: str
    design: dict
    weight_bytes: int
    lm_head: str                                         # "fpga" (ek_lmhead.h) or "host"
    head_bytes: int                                      # the LM head's weight bytes read per token
    roofline_tok_s: float
    decode: list[dict] = field(default_factory=list)     # per context: tok/s and the time split
    prefill: list[dict] = field(default_factory=list)    # per prompt length: TTFT
    resources: dict = field(default_factory=dict)
    utilization: dict = field(default_factory=dict)
    bandwidth: dict = field(default_factory=dict)        # GB/s: DDR at its efficiency, the AXI ports, the smaller

    def to_json(self) -> dict:
        return asdict(self)


LM_HEAD_PLACES = ("fpga", "host")


class CycleModel:
    def __init__(self, design: Design, board: Board, lm_head_bits: int = 8, lm_head: str = "fpga"):
        if lm_head not in LM_HEAD_PLACES:
            from edgekit.errors import ConfigError  # noqa: PLC0415

            raise ConfigError(f"lm_head {lm_head!r} is not one of {LM_HEAD_PLACES}")
        self.d, self.board, self.lm_head_bits, self.lm_head = design, board, lm_head_bits, lm_head
        self.f = board.fabric_clock_mhz * 1e6
        self.ddr_bw = board.ddr_bandwidth_gbs * 1e9 * DDR_EFFICIENCY
        self.port_bw = axi_read_bytes_per_s(board)        # 4 x 128 bits a cycle (ek_axi.h)
        self.bw = min(self.ddr_bw, self.port_bw)

    def tlmm_cycles(self, out: int, inp: int, pipeline_depth: int = PIPE_DEPTH) -> int:
        """Row blocks x (groups + depth): one group of every lane (and tile token) a cycle."""
        return ceil_div(out, self.d.hls.lanes) * (ceil_div(inp, self.d.hls.group) + pipeline_depth)

    def layer_tlmm_cycles(self, pipeline_depth: int = PIPE_DEPTH) -> int:
        return sum(self.tlmm_cycles(o, i, pipeline_depth) for o, i in self.d.matrix_shapes().values())

    def layer_table_cycles(self) -> int:
        """One group a cycle for each distinct TLMM input: attention in, wo in, FFN in, w2 in."""
        d = self.d
        return sum(ceil_div(n, d.hls.group) for n in (d.dim, d.q_dim, d.dim, d.hidden))

    def attention_macs(self, context: int, n_tok: int) -> int:
        return 2 * self.d.heads * self.d.head_dim * context * n_tok

    def matrix_s(self, out: int, inp: int) -> float:
        d = self.d
        return max(self.tlmm_cycles(out, inp) / self.f, 8 * matrix_words(out, inp, d.code, d.hls.lanes) / self.bw)

    def linear_s(self) -> float:
        """All seven matrices of a layer plus their table builds, for one token or one prefill tile."""
        tables = self.layer_table_cycles() / self.f
        return tables + sum(self.matrix_s(o, i) for o, i in self.d.matrix_shapes().values())

    def attention_s(self, context: int, n_tok: int) -> float:
        d = self.d
        kv_bytes = context * d.kv_position_bytes
        return max(self.attention_macs(context, n_tok) / d.attn_macs_per_cycle / self.f, kv_bytes / self.bw)

    def elementwise_s(self, n_tok: int) -> float:
        d = self.d
        kv_quant = 4 * d.kv_dim if d.hls.kv_bits == 8 else 0          # absmax + quantize of the new K/V rows
        return n_tok * ceil_div(8 * d.dim + 4 * d.hidden + 2 * d.q_dim + kv_quant, d.hls.ew_lanes) / self.f

    def host_head_s(self) -> float:
        """The host's LM head: int8/int4 weights streamed by the ARM cores (lm_head="host")."""
        return self.d.vocab * self.d.dim * self.lm_head_bits / 8 / (self.board.host_bandwidth_gbs * 1e9)

    def head_cycles(self, pipeline_depth: int = PIPE_DEPTH, bits: int | None = None) -> int:
        """The fabric head's MAC loop: row blocks x (code words a row + depth), one word of each lane a cycle."""
        d = self.d
        code_words = d.head_groups * d.hls.head_group * (bits or d.hls.head_bits) // 64
        return ceil_div(d.vocab, d.hls.head_lanes) * (code_words + pipeline_depth)

    def rescore_cycles(self, latency: int = RESCORE_LATENCY) -> int:
        """A screened head's second pass: C rows of the full head, one code word a cycle, each after a DDR latency."""
        d = self.d
        return d.hls.head_screen * (d.head_groups * d.hls.head_group // d.head_codes_per_word + latency)

    def fabric_head_s(self) -> float:
        """The decode step's head (the full head, or the 2-bit screen and the rescoring of its C best)."""
        d = self.d
        if not d.hls.head_screen:
            return max(self.head_cycles() / self.f, head_bytes(d) / self.bw) + self.head_norm_s()
        screen_bytes = 8 * d.head_rows * d.screen_row_words + 4 * d.head_rows
        scan = max(self.head_cycles(bits=2) / self.f, screen_bytes / self.bw)
        return scan + self.rescore_cycles() / self.f + self.head_norm_s()

    def head_norm_s(self) -> float:
        """The head's final RMSNorm and absmax quantization: 3 x dim elements at ew_lanes a cycle."""
        return ceil_div(3 * self.d.dim, self.d.hls.ew_lanes) / self.f

    def lm_head_s(self) -> float:
        return self.fabric_head_s() if self.lm_head == "fpga" else self.host_head_s()

    def decode_split(self, context: int) -> dict:
        layers, on_fabric = self.d.layers, self.lm_head == "fpga"
        split = {"linear_s": layers * self.linear_s(), "attention_s": layers * self.attention_s(context, 1),
                 "elementwise_s": layers * self.elementwise_s(1),
                 "head_s": self.fabric_head_s() if on_fabric else 0.0,
                 "host_s": HOST_CALL_S + (0.0 if on_fabric else self.host_head_s())}
        total = sum(split.values())
        fpga = total - split["host_s"]
        return {"context": context, "tok_s": 1 / total, "fpga_only_tok_s": 1 / fpga,
                "ddr_bytes": self.decode_ddr_bytes(context), **split}

    def decode_ddr_bytes(self, context: int) -> int:
        """DDR traffic of one decode step: every weight word, the K/V planes read, the new K/V row written,
        and the LM head's words when it runs on the fabric."""
        d = self.d
        head = head_bytes(d) if self.lm_head == "fpga" else 0
        return weight_bytes(d) + d.layers * (context + 1) * d.kv_position_bytes + head

    def weight_line_reads(self) -> int:
        """64-byte AXI lines the TLMM loaders read for one token or tile: every row block of every matrix of
        every layer, the lines covering its words (ek_tlmm.h load_code_block; an unaligned block costs one more)."""
        d, offsets = self.d, self.d.matrix_offsets()
        lines = 0
        for layer in range(d.layers):
            for name, (out, inp) in d.matrix_shapes().items():
                block = matrix_words(out, inp, d.code, d.hls.lanes) // ceil_div(out, d.hls.lanes)
                first = layer * offsets["layer"] + offsets[name]
                lines += sum(span_lines(8 * (first + rb * block), 8 * block) for rb in range(ceil_div(out, d.hls.lanes)))
        return lines

    def head_line_reads(self, bits: int | None = None) -> int:
        """Lines the head's scan reads (ek_lmhead.h load_row_block): the full head, or (bits=2) the screen copy."""
        d = self.d
        if bits == 2:
            base, block = d.head_words, d.screen_row_words * d.hls.head_lanes
        else:
            base, block = 0, d.head_row_words * d.hls.head_lanes
        return sum(span_lines(8 * (base + rb * block), 8 * block) for rb in range(ceil_div(d.vocab, d.hls.head_lanes)))

    def ttft_s(self, prompt: int) -> float:
        """Prefill of `prompt` tokens tile by tile (each tile attends to everything before it), then the LM head."""
        tt, total = self.d.hls.tile_tokens, 0.0
        for start in range(0, prompt, tt):
            n = min(tt, prompt - start)
            total += self.d.layers * (self.linear_s() + self.attention_s(start + n, n) + self.elementwise_s(n))
        return total + HOST_CALL_S + self.lm_head_s()


def span_lines(first_byte: int, n_bytes: int) -> int:
    """AXI lines covering bytes [first_byte, first_byte + n_bytes) (ek_axi.h read_span)."""
    return ceil_div(first_byte + n_bytes, ip.LINE_BYTES) - first_byte // ip.LINE_BYTES


def head_bytes(design: Design) -> int:
    """DDR bytes the fabric head streams per decode token: its words (codes + sub-scales) and the row scales;
    screened: the 2-bit copy's words and row scales, then the C rescored rows' words and scales."""
    if design.hls.head_screen:
        screen = 8 * design.head_rows * design.screen_row_words + 4 * design.head_rows
        return screen + design.hls.head_screen * (8 * design.head_row_words + 4)
    return 8 * design.head_words + 4 * design.head_rows


def weight_bytes(design: Design) -> int:
    per_layer = sum(matrix_words(o, i, design.code, design.hls.lanes) for o, i in design.matrix_shapes().values())
    return 8 * per_layer * design.layers


def estimate_design(design: Design, board: Board, contexts=(128, 512, 1024, 2048), prompts=(64, 128),
                    lm_head_bits: int = 8, lm_head: str = "fpga") -> Estimate:
    model = CycleModel(design, board, lm_head_bits, lm_head)
    use: ResourceUse = estimate_resources(design, board)
    have = {k: getattr(board, k) for k in use.to_json()}
    contexts = [c for c in contexts if c <= design.max_seq]
    return Estimate(board=board.name, design=design.to_json(), weight_bytes=weight_bytes(design), lm_head=lm_head,
                    head_bytes=head_bytes(design) if lm_head == "fpga" else design.vocab * design.dim * lm_head_bits // 8,
                    roofline_tok_s=board.ddr_bandwidth_gbs * 1e9 / weight_bytes(design),
                    decode=[model.decode_split(c) for c in contexts],
                    prefill=[{"prompt": p, "ttft_s": model.ttft_s(p)} for p in prompts if p <= design.max_seq],
                    resources=use.to_json(),
                    utilization={k: (v / have[k] if have[k] else float("inf") if v else 0.0)
                                 for k, v in use.to_json().items()},
                    bandwidth={"ddr_gbs": model.ddr_bw / 1e9, "ports_gbs": model.port_bw / 1e9,
                               "used_gbs": model.bw / 1e9})


def estimate_config(config: ModelConfig, board: Board, hls: HlsConfig, **kwargs) -> Estimate:
    """`estimate_design` for a model config (kwargs: contexts, prompts, lm_head, lm_head_bits)."""
    return estimate_design(design_for(config, hls), board, **kwargs)


def compare_with_tellme(estimate: Estimate) -> list[dict]:
    """Rows (metric, ours, theirs, relative error) against both TeLLMe versions' published figures."""
    rows = []
    decode = {row["context"]: row for row in estimate.decode}
    prefill = {row["prompt"]: row["ttft_s"] for row in estimate.prefill}
    for version, paper in TELLME.items():
        if paper["context"] in decode:
            ours = decode[paper["context"]]["tok_s"]
            rows.append({"version": version, "metric": f"decode tok/s @ {paper['context']}", "ours": ours,
                         "theirs": paper["decode_tok_s"], "error": ours / paper["decode_tok_s"] - 1})
        for prompt, seconds in paper["prefill_s"].items():
            if prompt in prefill:
                rows.append({"version": version, "metric": f"TTFT s @ {prompt} tokens", "ours": prefill[prompt],
                             "theirs": seconds, "error": prefill[prompt] / seconds - 1})
    return rows


SEARCH_GRID = {"group": (3, 4, 5), "lanes": (16, 32, 64, 96, 128, 192, 256), "tile_tokens": (4, 8),
               "attn_macs": (16, 64, 128, 256), "head_lanes": (4, 8, 16), "trit_pack": ("code", "base3"),
               "head_screen": (0, 64), "ew_lanes": (1, 2, 4)}


def recommend_hls(config: ModelConfig, board: Board, context: int = 1024, max_seq: int = 0,
                  head_bits: int = 4, kv_bits: int = 32, attn_int: bool = False) -> HlsConfig:
    """The knobs of SEARCH_GRID that fit the part and decode fastest at `context` (fewest LUTs on ties)."""
    from edgekit.errors import ConfigError  # noqa: PLC0415
    from edgekit.hls.resources import check_fits  # noqa: PLC0415

    import itertools  # noqa: PLC0415

    best, best_key = None, None
    names = tuple(SEARCH_GRID)
    for values in itertools.product(*SEARCH_GRID.values()):
        hls = HlsConfig(**dict(zip(names, values)), max_seq=max_seq, head_bits=head_bits, kv_bits=kv_bits,
                        attn_int=attn_int)
        design = design_for(config, hls)
        try:
            use = check_fits(design, board)
        except ConfigError:
            continue
        at = min(context, design.max_seq)
        key = (round(CycleModel(design, board).decode_split(at)["tok_s"], 2), -use.luts)
        if best_key is None or key > best_key:
            best, best_key = hls, key
    if best is None:
        raise ConfigError(f"no engine configuration of {SEARCH_GRID} fits {board.name} ({board.part})",
                          fix="choose a larger board or a smaller --max-seq")
    return best
