"""Resource model of the generated design (LUT/FF/DSP/BRAM/URAM) from the generator's own parameters.

A first-order model, not a synthesis report: each on-chip buffer of ek_layer.h / ek_tlmm.h /
ek_attention.h is counted in bits and mapped to URAM (when the part has it and the buffer is large) or
36 Kb BRAM, the lookup tables to BRAM banks as ek_layer.h partitions them; lookup units, table builders and float pipelines carry per-unit LUT/FF/DSP costs. Vitis's
csynth report replaces these numbers where Vitis exists.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgekit.boards import Board
from edgekit.errors import ConfigError
from edgekit.hls.design import Design
from edgekit.hls.packing import ceil_div

BRAM_BITS, URAM_BITS = 36 * 1024, 288 * 1024
URAM_MIN_BITS = 64 * 1024          # smaller buffers stay in BRAM
BASE_LUTS, BASE_FFS = 14000, 18000  # AXI masters, AXI-lite, control, interconnect
FLOAT_MULS, FLOAT_ADDS = 24, 16     # dequant, norms, RoPE, softmax polynomial (attention MACs: attn_macs)
DSP_PER_FMUL, DSP_PER_FADD = 3, 2
# Each element-wise lane past the first (ew_lanes): its own float units for norms, quantization, RoPE,
# activation and residual (multipliers, adders, the two dividers of x / d and x / scale, a float-to-int).
EW_FMULS, EW_FADDS, EW_FDIV_LUTS, EW_FLOAT_LUTS = 8, 6, 2 * 800, 14 * 120
FIT_MARGIN = 0.9                    # leave 10% for routing
# Integer attention (attn_int): per-MAC operand muxing and the int-to-float conversions; per-position float
# units (score = dot * s_q * s_k / sqrt(hd), weight = e * s_v * r, output scaling).
ATTN_INT_MAC_LUTS, ATTN_INT_FMULS, ATTN_INT_FADDS = 8, 4, 2


@dataclass(frozen=True)
class ResourceUse:
    luts: int
    flip_flops: int
    dsps: int
    bram_36k: int
    uram: int

    def to_json(self) -> dict:
        return asdict(self)


def buffer_bits(design: Design) -> dict[str, int]:
    """Bits of each on-chip buffer, by name (the arrays of the headers)."""
    d, tt = design, design.hls.tile_tokens
    wpr = max(ceil_div(ceil_div(n, d.hls.group), d.code.per_word) for n in (d.dim, d.q_dim, d.hidden))
    floats = 4 * d.dim + 3 * d.q_dim + 2 * d.kv_dim + 4 * d.hidden        # ek_layer.h's float rows
    return {"weight_tiles": 2 * wpr * d.hls.lanes * d.code.tile_bits,      # decoded words (ek_tlmm.h tile_t)
            "activations": tt * 32 * floats,
            "int8_inputs": tt * 8 * (d.dim + d.q_dim + d.hidden),
            "accumulator_fifo": d.hls.lanes * tt * 32,
            "scores": tt * (d.heads // d.kv_heads) * d.max_seq * 32,   # a kv group's query heads at once
            "head_tiles": 2 * d.head_row_words * d.hls.head_lanes * 64,      # ek_lmhead.h ping-pong row blocks
            "screen_tiles": 2 * d.screen_row_words * d.hls.head_lanes * 64,  # the 2-bit copy's (head_screen)
            "head_norm_row": 32 * d.dim}


LUTRAM_MAX_BITS = 4096              # smaller banks are distributed RAM (a LUT6 is 64 x 1 bit)


def table_memory(design: Design) -> tuple[int, int]:
    """(BRAM36, LUTs) of the lookup tables. ek_layer.h partitions them by token and entry (every lane reads
    all entries of one group in a cycle): tile_tokens x entries banks of max_groups x 16 bits, each in
    18 Kb BRAM halves, or in LUTRAM when small (entries EK_ENTRY_BITS wide)."""
    banks, bank_bits = design.hls.tile_tokens * design.code.entries, design.max_groups * design.entry_bits
    if bank_bits <= LUTRAM_MAX_BITS:
        return 0, banks * ceil_div(design.max_groups, 64) * 16
    return ceil_div(banks * ceil_div(bank_bits, BRAM_BITS // 2), 2), 0


def mux_luts_per_bit(entries: int) -> int:
    """LUT6s for one bit of an entries-to-1 mux: a LUT6 is a 4:1 mux and the slice's MUXF7 / MUXF8 join two and
    four of them for free (16:1 in 4 LUTs, UltraScale+ and 7-series alike); wider muxes add a LUT level."""
    if entries <= 16:
        return ceil_div(entries, 4)
    return ceil_div(entries, 4) + ceil_div(entries, 16)


def lookup_unit_luts(design: Design) -> int:
    """One lane x token lookup (ek_tlmm.h): an entries-to-1 mux of EK_ENTRY_BITS-wide entries, then an
    add-or-subtract (the half table's sign bit) into an accumulator exactly as wide as the row sum can get,
    one carry-chain LUT a bit (the operand inversion sits in the same LUT). G = 3: 10 x 4 + 21 = 61 LUTs."""
    return design.entry_bits * mux_luts_per_bit(design.code.entries) + design.acc_bits


def head_units(design: Design) -> tuple[int, int, int]:
    """(LUTs, FFs, DSPs) of the LM head: head_lanes x 64/bits MACs of int8 activations by the codes (two per
    DSP48E2 sharing the activation operand, as AMD WP486 packs int8; 2-bit codes are +-1/0: LUT add/sub),
    a sub-scale multiply per lane, the 48-bit accumulators, the dequantization and K top-k cells."""
    lanes, macs = design.hls.head_lanes, design.hls.head_lanes * design.head_codes_per_word
    per_word = design.head_codes_per_word
    mac_dsps = 0 if design.hls.head_bits == 2 else ceil_div(macs, 2)
    adder_luts = macs * (12 if design.hls.head_bits == 2 else 20)
    activation_luts = per_word * ceil_div(ceil_div(design.head_groups * design.hls.head_group, per_word), 64) * 8
    luts = adder_luts + lanes * 48 + design.hls.top_k * 100 + activation_luts
    ffs = macs * 24 + lanes * 96 + design.hls.top_k * 64
    dsps = mac_dsps + lanes + 2 * DSP_PER_FMUL
    if design.hls.head_screen:      # 2-bit screening lanes (LUT add/sub, 32 codes a word) and the top-C register
        luts += lanes * 32 * 12 + design.hls.head_screen * 100
        ffs += lanes * 32 * 24 + design.hls.head_screen * 64
    return luts, ffs, dsps


BASE3_ROM_LUTS = 5                  # one output bit of a 243-entry byte -> digits ROM: 4 LUT6 + a mux


def base3_decoders(design: Design, board: Board) -> tuple[int, int]:
    """(LUTs, FFs) of the base-3 word decoders on the ternary load path (trit_pack "base3"): one per word of an
    AXI line (ek_axi.h: the loader decodes a whole line a cycle); each turns 8 bytes into 40 digits
    (8 ROMs of 10 bits) and the digits into per_word codes (a small map per code)."""
    from edgekit.hls.ip import LINE_BYTES  # noqa: PLC0415

    if not design.code.base3:
        return 0, 0
    decoders = LINE_BYTES // 8
    per = 8 * 10 * BASE3_ROM_LUTS + design.code.per_word * design.code.bits * 2
    return decoders * per, decoders * 2 * design.code.tile_bits


def estimate_resources(design: Design, board: Board) -> ResourceUse:
    bram, table_luts = table_memory(design)
    uram = 0
    for bits in buffer_bits(design).values():
        if board.uram and bits >= URAM_MIN_BITS:
            uram += ceil_div(bits, URAM_BITS)
        else:
            bram += ceil_div(bits, BRAM_BITS)
    units = design.hls.lanes * design.hls.tile_tokens
    builder = design.code.entries * max(1, design.hls.group - 1) * design.entry_bits
    luts = BASE_LUTS + units * lookup_unit_luts(design) + design.hls.tile_tokens * builder + table_luts
    ffs = BASE_FFS + units * 64 + design.hls.tile_tokens * design.code.entries * 16
    extra = design.hls.ew_lanes - 1
    float_macs, int_macs = (0, design.hls.attn_macs) if design.hls.attn_int else (design.hls.attn_macs, 0)
    dsps = ((FLOAT_MULS + extra * EW_FMULS + float_macs) * DSP_PER_FMUL
            + (FLOAT_ADDS + extra * EW_FADDS + float_macs) * DSP_PER_FADD)
    if design.hls.attn_int:     # one DSP48E2 per integer MAC (8 x 8 QK, 16 x 8 PV, accumulate in P / the cascade),
        # the per-position float work (score scaling, value weight) and the query quantization's divider
        dsps += int_macs + ATTN_INT_FMULS * DSP_PER_FMUL + ATTN_INT_FADDS * DSP_PER_FADD
        luts += int_macs * ATTN_INT_MAC_LUTS + EW_FDIV_LUTS // 2 + EW_FLOAT_LUTS
        ffs += int_macs * 48
    luts, ffs = luts + extra * (EW_FDIV_LUTS + EW_FLOAT_LUTS), ffs + extra * (EW_FDIV_LUTS + EW_FLOAT_LUTS)
    head_luts, head_ffs, head_dsps = head_units(design)
    decoder_luts, decoder_ffs = base3_decoders(design, board)
    luts, ffs = luts + decoder_luts, ffs + decoder_ffs
    return ResourceUse(luts=int(luts + head_luts), flip_flops=int(ffs + head_ffs), dsps=dsps + head_dsps,
                       bram_36k=bram, uram=uram)


DDR_SHARE = 0.75                    # leave a quarter of the board's DDR to Linux and the host program


HEAD_LOGIT_ROWS = 32                # logits rows one head call writes back (the host's logits buffer)


def device_bytes(design: Design) -> int:
    """DDR the accelerator's buffers take: packed weights, parameters, RoPE table, KV cache, hidden states,
    the LM head's words and parameters and its output buffers (top-k and HEAD_LOGIT_ROWS logits rows)."""
    from edgekit.hls.packing import matrix_words  # noqa: PLC0415

    words = sum(matrix_words(o, i, design.code, design.hls.lanes) for o, i in design.matrix_shapes().values())
    params = design.param_offsets()["layer"] * 4
    kv = design.kv_layer_bytes
    head = 8 * design.head_device_words + 4 * (design.dim + design.head_rows * (2 if design.hls.head_screen else 1))
    head_out = HEAD_LOGIT_ROWS * (8 * design.hls.top_k + 4 * design.vocab)
    return (design.layers * (8 * words + params + kv) + design.max_seq * (design.head_dim + design.dim) * 4
            + head + head_out)


def check_memory(design: Design, board: Board) -> None:
    need = device_bytes(design)
    if need > DDR_SHARE * board.ddr_bytes:
        raise ConfigError(f"the device buffers need {need / 2**20:.0f} MiB but {board.name} has "
                          f"{board.ddr_bytes / 2**20:.0f} MiB of DDR ({DDR_SHARE:.0%} usable)",
                          fix="lower --max-seq or choose a board with more DDR")


def check_fits(design: Design, board: Board) -> ResourceUse:
    """The estimate, or a ConfigError naming the resource that overflows and the knob to turn."""
    if not board.has_fabric:
        raise ConfigError(f"board {board.name!r} is a {board.kind} device without programmable logic",
                          fix="pass an FPGA board: kv260, zcu104, zcu102, ultra96v2 or pynq-z2")
    check_memory(design, board)
    use = estimate_resources(design, board)
    knobs = {"luts": "--lanes, --tile-tokens or --head-lanes", "flip_flops": "--lanes or --tile-tokens",
             "dsps": "--attn-macs or --head-lanes",
             "bram_36k": "--max-seq, --tile-tokens or --lanes", "uram": "--max-seq, --tile-tokens or --lanes"}
    for name, knob in knobs.items():
        used, have = getattr(use, name), getattr(board, name)
        if used > FIT_MARGIN * have:
            raise ConfigError(f"the design needs {used} {name} but {board.name} ({board.part}) has {have} "
                              f"(limit {FIT_MARGIN:.0%} for routing)", fix=f"lower {knob}")
    return use
