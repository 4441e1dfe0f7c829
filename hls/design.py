"""The parameters of one generated accelerator: model dimensions plus the engine's knobs (`HlsConfig`),
checked against what the engine can take. The writer, the integer reference, the driver and the cycle
model all read the same `Design`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgekit.errors import ConfigError, UnsupportedModelError
from edgekit.hls.packing import MATRICES, TritCode, ceil_div, matrix_words
from edgekit.model.config import ModelConfig

HEAD_BITS = (8, 4, 2)
TRIT_PACKS = ("code", "base3")   # DDR words of [sign | index] codes, or of 5-trit base-3 bytes (1.6 bits a trit)
KV_BITS = (32, 8)         # float32 KV cache, or int8 with one float32 scale per (token, kv head): ek_kvcache.h


@dataclass(frozen=True)
class HlsConfig:
    """Engine knobs. `group` trits per table index (G), `half_table` sign bit + (3^G+1)/2 entries,
    `lanes` parallel lookups (rows a cycle), `tile_tokens` prefill tile, `key_block` attention block,
    `attn_macs` float multiply-adds a cycle in attention (the unroll of its head_dim loops), `max_seq` KV
    cache length on the device (0: the model's).

    The on-chip LM head (ek_lmhead.h): `head_bits` per weight (symmetric codes, 8, 4 or 2), one uint8
    sub-scale per `head_group` weights of a row and a float32 scale per row; `head_lanes` rows a cycle,
    each lane one 64-bit word (64 / head_bits MACs) a cycle; `top_k` (index, logit) pairs per token
    return to the host (fused argmax / top-k).

    `trit_pack`: how ternary words sit in DDR: "code" (per_word codes of the group's bits) or "base3" (5 trits
    a byte, 1.6 bits a trit as TQ1_0; ek_tlmm.h decodes each word into the same group codes as it loads a
    row block, so the tables and lookups stay those of G: G=3 keeps 14-entry tables at 418 MB for 2B4T).

    `head_screen`: 0 for the full head on every row; C > 0 screens every row with a 2-bit copy of the head and
    rescores only the C best with the full `head_bits` codes (the decode step's top-k; a `write_logits` call
    still runs the full head). Exact whenever the full head's top-k are among the C: measured, not proven.

    `ew_lanes`: elements a cycle in the element-wise passes (norms, quantization, RoPE, activation, residual):
    the unroll of their loops; sums of squares keep `ew_lanes` partial sums (element i in lane i % ew_lanes,
    added in lane order at the end), so the twin does the same float operations.

    `kv_bits`: the DDR KV cache in float32 (32) or int8 with a float32 scale per (token, kv head) (8), the
    native engine's int8 KV numerics (ek_kvcache.h).

    `attn_int` (int8 cache only): attention on the int8 KV codes: int8 queries x int8 keys -> int32 with the
    scales applied after, float softmax, 16-bit fixed-point value weights x int8 values -> 48-bit
    (ek_attention.h; hls/reference.py attend_int). `attn_macs` then counts integer MACs (one DSP48E2 each)."""

    group: int = 3
    half_table: bool = True
    lanes: int = 16
    tile_tokens: int = 8
    key_block: int = 16
    attn_macs: int = 16
    max_seq: int = 0
    head_bits: int = 4
    head_group: int = 64
    head_lanes: int = 8
    top_k: int = 8
    kv_bits: int = 32
    trit_pack: str = "code"
    head_screen: int = 0
    ew_lanes: int = 1
    attn_int: bool = False
    version: int = 1

    def __post_init__(self) -> None:
        limits = {"group": (1, 6), "lanes": (1, 256), "tile_tokens": (1, 128), "key_block": (1, 1024),
                  "attn_macs": (1, 256), "ew_lanes": (1, 16), "head_group": (8, 4096), "head_lanes": (1, 64), "top_k": (1, 64)}
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"HlsConfig.{name} must be an integer in [{lo}, {hi}], got {value!r}",
                                  fix=f"pass --{name.replace('_', '-')} within the range")
        if self.head_bits not in HEAD_BITS:
            raise ConfigError(f"HlsConfig.head_bits must be one of {HEAD_BITS}, got {self.head_bits!r}",
                              fix="pass --head-bits 8, 4 or 2")
        if self.head_group % (64 // self.head_bits):
            raise ConfigError(f"HlsConfig.head_group {self.head_group} must be a multiple of "
                              f"{64 // self.head_bits} (the {self.head_bits}-bit codes in one 64-bit word)",
                              fix="pass --head-group 64 or 128")
        if self.head_screen and not (self.top_k <= self.head_screen <= 256 and self.head_bits != 2
                                     and self.head_group % 32 == 0):
            raise ConfigError(f"HlsConfig.head_screen {self.head_screen} needs top_k ({self.top_k}) <= C <= 256, "
                              f"head_bits 8 or 4 (got {self.head_bits}) and head_group a multiple of 32 "
                              f"(got {self.head_group})", fix="pass --head-screen 0, or 64 with --head-bits 4")
        if self.trit_pack not in TRIT_PACKS:
            raise ConfigError(f"HlsConfig.trit_pack must be one of {TRIT_PACKS}, got {self.trit_pack!r}",
                              fix="pass --trit-pack code or base3")
        if self.kv_bits not in KV_BITS:
            raise ConfigError(f"HlsConfig.kv_bits must be one of {KV_BITS}, got {self.kv_bits!r}",
                              fix="pass --kv-bits 32 or 8")
        if not isinstance(self.attn_int, bool) or (self.attn_int and self.kv_bits != 8):
            raise ConfigError(f"HlsConfig.attn_int {self.attn_int!r} needs the int8 KV cache (kv_bits 8, got "
                              f"{self.kv_bits})", fix="pass --kv-bits 8 with --attn-int, or --no-attn-int")
        if self.max_seq < 0:
            raise ConfigError(f"HlsConfig.max_seq must be >= 0, got {self.max_seq}")
        if self.version != 1:
            raise ConfigError(f"HlsConfig version {self.version} is not supported (1)")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "HlsConfig":
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"HlsConfig: unknown fields {unknown}", fix="remove them")
        return cls(**data)


@dataclass(frozen=True)
class Design:
    """A model's shapes and the engine configuration the generated project is built for."""

    dim: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_seq: int
    norm_eps: float
    linear_input_norm: bool
    sub_norms: bool
    relu2: bool
    hls: HlsConfig

    @property
    def code(self) -> TritCode:
        return TritCode(self.hls.group, self.hls.half_table, self.hls.trit_pack == "base3")

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def matrix_shapes(self) -> dict[str, tuple[int, int]]:
        d, h, q, kv = self.dim, self.hidden, self.q_dim, self.kv_dim
        return {"wq": (q, d), "wk": (kv, d), "wv": (kv, d), "wo": (d, q), "w1": (h, d), "w2": (d, h), "w3": (h, d)}

    def matrix_offsets(self) -> dict[str, int]:
        """Word offset of each matrix inside a layer, and "layer" = words per layer (ek_layer.h Layout)."""
        offsets, at = {}, 0
        for name in MATRICES:
            offsets[name] = at
            at += matrix_words(*self.matrix_shapes()[name], self.code, self.hls.lanes)
        offsets["layer"] = at
        return offsets

    def param_offsets(self) -> dict[str, int]:
        d, q, h = self.dim, self.q_dim, self.hidden
        return {"scales": 0, "attn_norm": 8, "ffn_norm": 8 + d, "attn_sub_norm": 8 + 2 * d,
                "ffn_sub_norm": 8 + 2 * d + q, "layer": 8 + 2 * d + q + h}

    @property
    def entry_bits(self) -> int:
        """Bits of a lookup-table entry (ek_types.h EK_ENTRY_BITS): sign + magnitude up to 127 x G."""
        return (127 * self.hls.group).bit_length() + 1

    @property
    def acc_bits(self) -> int:
        """Bits of a lane's TLMM accumulator (ek_tlmm.h): sign + magnitude up to 127 x the widest input."""
        return (127 * max(self.dim, self.q_dim, self.hidden)).bit_length() + 1

    @property
    def attn_heads_parallel(self) -> int:
        """Query heads of one kv group scored in the same cycle (EK_ATTN_HEADS): attn_macs / head_dim, at least 1."""
        return max(1, min(self.heads // self.kv_heads, self.hls.attn_macs // self.head_dim))

    @property
    def attn_macs_per_cycle(self) -> int:
        """Attention MACs the code really issues a cycle: the head_dim loop unrolled by attn_macs, times the
        EK_ATTN_HEADS query heads of a group scored together (attn_macs beyond what that covers are idle)."""
        return min(self.hls.attn_macs, self.head_dim * self.attn_heads_parallel)

    @property
    def max_groups(self) -> int:
        return ceil_div(max(self.dim, self.q_dim, self.hidden), self.hls.group)

    @property
    def head_codes_per_word(self) -> int:
        return 64 // self.hls.head_bits

    @property
    def head_groups(self) -> int:
        """Sub-scale groups of a head row (the row is padded with zero weights to whole groups)."""
        return ceil_div(self.dim, self.hls.head_group)

    @property
    def head_row_words(self) -> int:
        """64-bit words of one head row: uint8 sub-scales (8 a word), then the codes (ek_lmhead.h)."""
        return ceil_div(self.head_groups, 8) + self.head_groups * self.hls.head_group // self.head_codes_per_word

    @property
    def head_rows(self) -> int:
        """Vocabulary rows padded to whole lane blocks."""
        return ceil_div(self.vocab, self.hls.head_lanes) * self.hls.head_lanes

    @property
    def head_words(self) -> int:
        return self.head_rows * self.head_row_words

    @property
    def screen_row_words(self) -> int:
        """64-bit words of one row of the 2-bit screening copy (0 without screening)."""
        if not self.hls.head_screen:
            return 0
        return ceil_div(self.head_groups, 8) + self.head_groups * self.hls.head_group // 32

    @property
    def head_device_words(self) -> int:
        """The head buffer: the full head's words, then the screening copy's."""
        return self.head_words + self.head_rows * self.screen_row_words

    @property
    def kv_position_bytes(self) -> int:
        """DDR bytes one cached position takes in one layer (K and V): ek_kvcache.h."""
        if self.hls.kv_bits == 32:
            return 2 * 4 * self.kv_dim
        return 2 * (self.kv_dim + 4 * self.kv_heads)

    @property
    def kv_layer_bytes(self) -> int:
        return self.max_seq * self.kv_position_bytes

    @property
    def inv_sqrt_head_dim(self) -> np.float32:
        return np.float32(1.0) / np.sqrt(np.float32(self.head_dim))

    def to_json(self) -> dict:
        return asdict(self)


def design_for(config: ModelConfig, hls: HlsConfig) -> Design:
    """The design for a model; refuses what the engine cannot run, naming the limit."""
    check_model(config)
    max_seq = hls.max_seq or config.max_seq_len
    if config.vocab_size < hls.top_k:
        raise ConfigError(f"top_k {hls.top_k} exceeds the vocabulary of {config.vocab_size}",
                          fix=f"pass --top-k <= {config.vocab_size}")
    if max_seq > config.max_seq_len:
        raise ConfigError(f"max_seq {max_seq} exceeds the model's context of {config.max_seq_len}",
                          fix=f"pass --max-seq <= {config.max_seq_len}")
    return Design(dim=config.dim, hidden=config.hidden_dim, layers=config.n_layers, heads=config.n_heads,
                  kv_heads=config.n_kv_heads, head_dim=config.head_dim, vocab=config.vocab_size,
                  max_seq=max_seq, norm_eps=float(config.norm_eps), linear_input_norm=config.linear_input_norm,
                  sub_norms=config.sub_norms, relu2=config.activation == "relu2", hls=hls)


def check_model(config: ModelConfig) -> None:
    # Ternary weights are checked matrix by matrix when they are read (float trits + scale, or packed
    # ek_t* with one scale: model_data.ternary_matrix); the config fixes the rest of W1.58A8.
    needs = {"act_quant": (config.act_quant, "int8_absmax"),
             "qkv_bias": (config.qkv_bias, False), "qk_norm": (config.qk_norm, False),
             "o_bias": (getattr(config, "o_bias", False), False)}
    for field, (value, wanted) in needs.items():
        if value != wanted:
            raise UnsupportedModelError(
                f"the TLMM accelerator needs ModelConfig.{field} = {wanted!r}, this model has {value!r}",
                fix="quantize to a W1.58A8 ternary model first (edgekit quantize --format ek_t1 --method qat)")
    if config.activation not in ("silu", "relu2"):
        raise UnsupportedModelError(f"activation {config.activation!r} has no HLS kernel (silu, relu2)")
    if config.head_dim % 2 or config.n_heads % config.n_kv_heads:
        raise UnsupportedModelError(f"head_dim {config.head_dim} must be even and n_heads {config.n_heads} a "
                                    f"multiple of n_kv_heads {config.n_kv_heads}")
