"""A torch mirror of the numpy reference forward, with fake quantization for quantization-aware training.

`TorchLlama` computes what `edgekit.model.reference.ReferenceForward` computes, step for step (RMSNorm,
rotate-half RoPE, GQA attention, SwiGLU or squared ReLU, tied or untied output, q/k norms, biases, BitNet
sub-norms, bitllama2.c's weightless linear input norm), on a batch of full sequences [B, T] instead of a
KV cache. Its parameters are the canonical tensors of a `Model`, kept in float32 (the latent weights).

With fake quantization (a per-tensor `formats` table, built from a `QuantizeConfig` so that training and
export read the same recipe) every forward rounds each weight exactly as the registered quantizer of its
format will when the model is packed, and passes gradients straight through the rounding (STE, Bengio et
al. 2013; BitNet b1.58, Ma et al. 2024, arXiv:2402.17764):

- ternary, per tensor: `edgekit.model.ternary.absmean_ternarize` itself (the code `quantize_absmean` runs),
  on the detached weights, so the trits and the float32 scale are bit-identical to the packed ones; the
  matmul uses the trits and applies the scale afterwards, as the reference does for packed trits;
- symmetric intN (ek_i2 ... ek_i8), per group: `fake_rtn`, a torch transcription of `quantize_rtn`
  (ggml's Q4_0/Q8_0 grid, scales rounded to float16) that a test holds bit-exact to it;
- f16 / f32 (embeddings): a round trip through float16, or nothing;
- activations (`act_quant="int8_absmax"`): per-token absmax int8 with C `roundf` rounding, STE.

torch belongs here (quantization), never to the edge runtime.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekit.errors import ConfigError
from edgekit.formats import PER_TENSOR, QuantizedTensor, get_format, padded_cols
from edgekit.model.config import ModelConfig
from edgekit.model.lazy import materialize
from edgekit.model.model import LINEAR_NAMES, Model
from edgekit.model.reference import rope_inv_freq
from edgekit.model.ternary import absmean_ternarize
from edgekit.quantize.methods import pack_on_grid, quantize_rtn
from edgekit.quantize.pipeline import is_block_linear

# tensor name -> (packed format, group size, scale search) of every tensor the student rounds while training
FormatTable = dict[str, tuple[str, int, str]]


# -- fake quantization --------------------------------------------------------------------------------------

def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C `roundf` (ties away from zero), as `quantize_rtn` and the reference's int8 activations round."""
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def straight_through(x: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    """`rounded` in the forward pass, identity gradient to `x` in the backward pass (STE)."""
    return x + (rounded - x).detach()


def reciprocal_or_zero(d: torch.Tensor) -> torch.Tensor:
    """1 / d where d != 0, else 0 (numpy's `np.divide(1.0, d, where=d != 0)` in `quantize_rtn`)."""
    safe = torch.where(d != 0, d, torch.ones_like(d))
    return torch.where(d != 0, torch.ones_like(d) / safe, torch.zeros_like(d))


def rtn_grid(groups: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`quantize_rtn`'s symmetric grid: groups [rows, n, G] -> (integer values [rows, n, G], d [rows, n] f32).

    8 bits: d = max|x| / 127, q = roundf(x / d). 2-7 bits: the value m of largest magnitude maps to the
    most negative code, d = m / -2^(b-1), q = min(floor(x / d + 2^(b-1) + 0.5), 2^b - 1) - 2^(b-1).
    """
    half = 1 << (bits - 1)
    if bits == 8:
        d = groups.abs().amax(dim=2) / 127.0
        return round_half_away(groups * reciprocal_or_zero(d)[..., None]), d
    index = groups.abs().argmax(dim=2, keepdim=True)             # first maximum on ties, as numpy's argmax
    d = torch.gather(groups, 2, index)[..., 0] / -float(half)
    q = torch.floor(groups * reciprocal_or_zero(d)[..., None] + half + 0.5)
    return torch.clamp(q, max=2 * half - 1) - half, d


def fake_rtn(weight: torch.Tensor, fmt_name: str, group_size: int) -> torch.Tensor:
    """`quantize_rtn(weight, fmt_name, group_size).dequantize()` for symmetric formats, with an STE gradient.

    [rows, cols] -> zero-padded [rows, padded] -> groups [rows, padded / G, G] -> rounded, times the
    float16-rounded scale -> [rows, cols].
    """
    rows, cols = weight.shape
    width = padded_cols(get_format(fmt_name), cols, group_size)
    group = group_size if group_size > 0 else width
    groups = F.pad(weight.detach(), (0, width - cols)).reshape(rows, width // group, group)
    q, d = rtn_grid(groups, get_format(fmt_name).bits)
    dequantized = (q * d.half().float()[..., None]).reshape(rows, width)[:, :cols]
    return straight_through(weight, dequantized)


def fake_absmean(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(trits with an STE gradient towards weight / scale, scale): BitNet b1.58 absmean per tensor.

    The trits and scale come from `absmean_ternarize`, the function the packer calls, so they are
    bit-identical to what is stored; y = (x @ trits^T) * scale has gradient dy/dW = dy/dy~ * x (STE).
    """
    trits, scale = absmean_ternarize(weight.detach().numpy())
    scale_t = torch.tensor(scale, dtype=torch.float32)
    return straight_through(weight / scale_t, torch.from_numpy(trits)), scale_t


def fake_packed_rtn(weight: torch.Tensor, fmt_name: str, group_size: int, scale_search: str) -> torch.Tensor:
    """`quantize_rtn(weight, fmt_name, group_size, scale_search=...).dequantize()` with an STE gradient: the
    packer itself runs on the detached weights (zero-point formats, searched scales), so the rounding is
    the stored one by construction."""
    packed = quantize_rtn(weight.detach().numpy(), fmt_name, group_size, scale_search=scale_search)
    return straight_through(weight, torch.from_numpy(packed.dequantize()))


def fake_on_grid(weight: torch.Tensor, fmt_name: str, group_size: int, scale: torch.Tensor,
                 zero: torch.Tensor | None) -> torch.Tensor:
    """`pack_on_grid(weight, fmt_name, group_size, scale, zero).dequantize()` in torch: a frozen or learned
    grid (scale float32 [rows, n_groups] holding float16 values; zero points float32 or None).

    The forward value is the packer's, bit for bit. Gradients: identity to the weight (STE, as `fake_rtn`);
    to the scale, LSQ's (Esser et al. 2020, arXiv:1902.08153): d(d q)/dd = q - w / d for weights inside the
    code range and the end code for clipped ones; the scale is rounded to float16 in the forward (STE), so
    the stored scale is the one trained.
    """
    fmt = get_format(fmt_name)
    rows, cols = weight.shape
    width = padded_cols(fmt, cols, group_size)
    group = group_size if group_size > 0 else width
    w = F.pad(weight.detach(), (0, width - cols)).reshape(rows, width // group, group)   # [rows, n, G]
    d16 = straight_through(scale, scale.detach().half().float())                          # [rows, n]
    inv = reciprocal_or_zero(d16.detach())[..., None]
    if fmt.symmetric and fmt.bits < 8:
        half = 1 << (fmt.bits - 1)
        q = torch.clamp(torch.floor(w * inv + half + 0.5), 0, 2 * half - 1) - half
        low, high = -half, half - 1
    elif fmt.symmetric:
        q, low, high = torch.clamp(round_half_away(w * inv), -127, 127), -127, 127
    else:
        levels = (1 << fmt.bits) - 1
        q = torch.clamp(round_half_away(w * inv) + zero[..., None], 0, levels) - zero[..., None]
        low, high = -zero[..., None], levels - zero[..., None]
    exact = (q * d16.detach()[..., None]).reshape(rows, width)[:, :cols]
    ratio = torch.clamp(w / d16[..., None], low, high)                  # LSQ surrogate, gradient to d only
    surrogate = (d16[..., None] * (ratio + (q - ratio).detach())).reshape(rows, width)[:, :cols]
    return exact + (surrogate - surrogate.detach()) + (weight - weight.detach())


def fake_quantize(weight: torch.Tensor, fmt_name: str, group_size: int,
                  scale_search: str = "none") -> tuple[torch.Tensor, torch.Tensor | None]:
    """(matrix to multiply with, post-scale or None): the weight as the packed model will hold it."""
    fmt = get_format(fmt_name)
    if fmt.kind == "ternary":
        return fake_absmean(weight)
    if fmt.kind == "float":
        return (weight if fmt.bits == 32 else straight_through(weight, weight.half().float())), None
    if scale_search != "none" or not fmt.symmetric:
        return fake_packed_rtn(weight, fmt_name, group_size, scale_search), None
    return fake_rtn(weight, fmt_name, group_size), None


def fake_absmax_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token absmax int8 (BitNet's A8, `reference.quantize_absmax_int8`): x [..., n] -> (integer-valued q
    with an STE gradient towards x / scale, scale [..., 1]); x ~= q * scale."""
    scale = x.detach().abs().amax(dim=-1, keepdim=True) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    scaled = x / safe
    return straight_through(scaled, round_half_away(scaled.detach())), scale


def check_fake_quantizable(fmt_name: str, group_size: int, field: str) -> None:
    """Raise `ConfigError` (naming `field`) for a format/group the fake quantizers cannot mirror exactly."""
    fmt = get_format(fmt_name)
    if fmt.kind == "ternary" and group_size != PER_TENSOR:
        raise ConfigError(f"{field}: QAT trains ternary weights with one absmean scale per tensor (BitNet "
                          f"b1.58), not group size {group_size}", fix="leave group_size unset (None) or -1")


# -- the model -----------------------------------------------------------------------------------------------

def float_tensors(model: Model) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """(config without ternary weights, float32 canonical tensors): packed tensors dequantized, lazy ones
    read, and a ternary weight's `.scale` folded into it (W = scale * trits)."""
    tensors: dict[str, np.ndarray] = {}
    for name, value in model.tensors.items():
        if name.endswith(".scale") and name[: -len(".scale")] in model.tensors:
            continue
        array = value.dequantize() if isinstance(value, QuantizedTensor) else np.asarray(materialize(value))
        scale = model.tensors.get(name + ".scale")
        if scale is not None and not isinstance(value, QuantizedTensor):
            array = array * np.float32(scale)
        tensors[name] = np.array(array, dtype=np.float32, copy=True)
    config = model.config
    if config.ternary_weights:
        config = dataclasses.replace(config, ternary_weights=False)
    return config, tensors


def parameter_key(name: str) -> str:
    """Canonical tensor name -> torch parameter key (torch forbids '.' in parameter names)."""
    return name.replace(".", "/")


class TorchLlama(nn.Module):
    """The reference forward in torch over canonical tensors; `forward(tokens [B, T]) -> logits [B, T, vocab]`.

    `formats` (tensor name -> (format, group size)) turns on fake quantization of those tensors; `act_quant`
    ("none" or "int8_absmax") applies to every block linear's input, as in the reference.
    """

    def __init__(self, config: ModelConfig, tensors: dict[str, np.ndarray], formats: FormatTable | None = None,
                 act_quant: str | None = None, grids: dict[str, QuantizedTensor] | None = None):
        super().__init__()
        self.config = config
        self.formats = dict(formats or {})
        self.act_quant = config.act_quant if act_quant is None else act_quant
        self.names = [name for name in tensors if name != "rope_freqs"]
        self.weights = nn.ParameterDict({parameter_key(n): nn.Parameter(torch.from_numpy(tensors[n].copy()))
                                         for n in self.names})
        self.add_grids(grids or {})
        inv_freq = rope_inv_freq(config, tensors.get("rope_freqs"))
        angles = np.arange(config.max_seq_len, dtype=np.float32)[:, None] * inv_freq[None, :]  # [S, hd/2]
        self.register_buffer("rope_cos", torch.from_numpy(np.cos(angles)), persistent=False)
        self.register_buffer("rope_sin", torch.from_numpy(np.sin(angles)), persistent=False)

    def add_grids(self, grids: dict[str, QuantizedTensor]) -> None:
        """Hold the grids (float16 scales as float32 parameters `grid_scales`, zero points as float32 buffers)
        of packed tensors: those tensors then round onto them (`fake_on_grid`) instead of refitting RTN."""
        self.grid_names = sorted(grids)
        self.grid_scales = nn.ParameterDict({parameter_key(n): nn.Parameter(torch.from_numpy(
            grids[n].scales.astype(np.float32))) for n in self.grid_names})
        for name in self.grid_names:
            zeros = grids[name].zeros
            self.register_buffer("grid_zero_" + parameter_key(name).replace("/", "_"),
                                 None if zeros is None else torch.from_numpy(zeros.astype(np.float32)))

    def grid_zero(self, name: str) -> torch.Tensor | None:
        return getattr(self, "grid_zero_" + parameter_key(name).replace("/", "_"))

    def pack_on_grid(self, name: str) -> QuantizedTensor:
        """The latent weight of `name` rounded onto its (trained) grid and packed, as the student holds it."""
        fmt_name, group, _ = self.formats[name]
        zero = self.grid_zero(name)
        return pack_on_grid(self.tensor(name).detach().numpy(), fmt_name, group,
                            self.grid_scales[parameter_key(name)].detach().numpy(),
                            None if zero is None else zero.numpy().astype(np.uint8))

    def tensor(self, name: str) -> torch.Tensor:
        return self.weights[parameter_key(name)]

    def float_tensors(self) -> dict[str, np.ndarray]:
        """The latent float32 weights by canonical name (copies)."""
        return {name: self.tensor(name).detach().numpy().copy() for name in self.names}

    def quantized(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight as the packed model holds it, post-scale or None); the float weight when not quantized."""
        if name not in self.formats:
            return self.tensor(name), None
        if parameter_key(name) in self.grid_scales:
            fmt_name, group, _ = self.formats[name]
            return fake_on_grid(self.tensor(name), fmt_name, group, self.grid_scales[parameter_key(name)],
                                self.grid_zero(name)), None
        return fake_quantize(self.tensor(name), *self.formats[name])

    def norm(self, x: torch.Tensor, name: str | None) -> torch.Tensor:
        """RMSNorm over the last axis (`reference.rms_norm`); `name` None: no learned weight."""
        y = x / torch.sqrt(torch.mean(x * x, dim=-1, keepdim=True) + self.config.norm_eps)
        return y if name is None else y * self.tensor(name)

    def linear(self, x: torch.Tensor, name: str, bias: str | None = None) -> torch.Tensor:
        """x [..., in] @ W^T with the reference's order of scaling: int8 activations, then the weight scale."""
        if self.config.linear_input_norm:  # bitllama2.c: x / (n * rms(x)), zeros stay zero
            rms = torch.sqrt(torch.mean(x * x, dim=-1, keepdim=True))
            x = x / torch.where(rms > 0, rms * x.shape[-1], torch.ones_like(rms))
        weight, post_scale = self.quantized(name)
        if self.act_quant == "int8_absmax":
            q, a_scale = fake_absmax_int8(x)
            y = F.linear(q, weight) * a_scale                       # integer sums, exact in float32
        else:
            y = F.linear(x, weight)
        if post_scale is not None:
            y = y * post_scale
        return y if bias is None else y + self.tensor(bias)

    def rope(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Rotate-half RoPE on x [B, T, heads, hd] at positions start .. start+T-1 (`reference.apply_rope`)."""
        T, half = x.shape[1], x.shape[-1] // 2
        cos, sin = self.rope_cos[start:start + T, None, :], self.rope_sin[start:start + T, None, :]  # [T, 1, hd/2]
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def attention(self, x: torch.Tensor, layer: int, cache: dict | None = None) -> torch.Tensor:
        """Causal self-attention of x [B, T, dim]; with `cache` (layer -> (keys, values) of the earlier
        positions, extended in place) x is the one next position [B, 1, dim]."""
        c, p = self.config, f"layers.{layer}."
        B, T, _ = x.shape
        bias = c.qkv_bias
        q = self.linear(x, p + "wq", p + "bq" if bias else None).view(B, T, c.n_heads, c.head_dim)
        k = self.linear(x, p + "wk", p + "bk" if bias else None).view(B, T, c.n_kv_heads, c.head_dim)
        v = self.linear(x, p + "wv", p + "bv" if bias else None).view(B, T, c.n_kv_heads, c.head_dim)
        if c.qk_norm:
            q, k = self.norm(q, p + "q_norm"), self.norm(k, p + "k_norm")
        start = 0
        if cache is not None:
            start = cache[layer][0].shape[1] if layer in cache else 0
        q, k = self.rope(q, start), self.rope(k, start)
        if cache is not None:
            if layer in cache:
                k, v = torch.cat([cache[layer][0], k], dim=1), torch.cat([cache[layer][1], v], dim=1)
            cache[layer] = (k, v)
        out = F.scaled_dot_product_attention(                               # [B, heads, T, hd], causal, GQA
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=cache is None,
            scale=1.0 / math.sqrt(c.head_dim), enable_gqa=c.n_heads != c.n_kv_heads)
        out = out.transpose(1, 2).reshape(B, T, c.q_dim)
        if c.sub_norms:
            out = self.norm(out, p + "attn_sub_norm")
        return self.linear(out, p + "wo", p + "bo" if c.o_bias else None)

    def feed_forward(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        c, p = self.config, f"layers.{layer}."
        gate, up = self.linear(x, p + "w1"), self.linear(x, p + "w3")
        hidden = F.silu(gate) * up if c.activation == "silu" else torch.square(torch.relu(gate)) * up
        if c.sub_norms:
            hidden = self.norm(hidden, p + "ffn_sub_norm")
        return self.linear(hidden, p + "w2")

    def forward(self, tokens: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """Logits [B, T, vocab] of token ids [B, T] at positions 0 .. T-1; with a `cache` (a dict, empty at
        the first position and kept between calls) one position at a time, tokens [B, 1], after the cached ones."""
        c = self.config
        if cache is not None and tokens.shape[1] != 1:
            raise ValueError(f"a cached forward takes one position at a time, got tokens of shape {tuple(tokens.shape)}")
        embeddings, scale = self.quantized("tok_embeddings")
        embeddings = embeddings if scale is None else embeddings * scale   # ternary: trits * scale
        h = F.embedding(tokens, embeddings)                                 # [B, T, dim]
        for layer in range(c.n_layers):
            p = f"layers.{layer}."
            h = h + self.attention(h if c.linear_input_norm else self.norm(h, p + "attn_norm"), layer, cache)
            h = h + self.feed_forward(h if c.linear_input_norm else self.norm(h, p + "ffn_norm"), layer)
        h = self.norm(h, "norm")
        if c.tie_embeddings:
            return F.linear(h, embeddings)
        output, post_scale = self.quantized("output")
        logits = F.linear(h, output)
        return logits if post_scale is None else logits * post_scale


def format_table(model: Model, quantize_config) -> FormatTable:
    """(format, group size) of every tensor `quantize_model(model, quantize_config)` packs, as the
    `QuantizeConfig` assigns them (the one source of truth for training and export)."""
    table: FormatTable = {}
    for name in model.tensors:
        if name in ("tok_embeddings", "output") or name.rsplit(".", 1)[-1] in LINEAR_NAMES:
            fmt_name = quantize_config.format_for(name)
            searched = fmt_name == quantize_config.format and is_block_linear(name)
            table[name] = (fmt_name, quantize_config.default_group_size(fmt_name),
                           quantize_config.scale_search if searched else "none")
    return table


def build_torch_model(model: Model, quantize_config=None, trainable: bool = True,
                      grids: dict[str, QuantizedTensor] | None = None, learn_grids: bool = False) -> TorchLlama:
    """A `TorchLlama` of `model`'s float weights: a student that fake-quantizes as `quantize_config`
    (a `QuantizeConfig`) says, or, with None, the float model (a teacher; `trainable=False` freezes it).
    `grids` (name -> packed tensor whose scales and zero points to keep) fixes those tensors' grids;
    `learn_grids` trains their scales too."""
    config, tensors = float_tensors(model)
    if quantize_config is None:
        net = TorchLlama(config, tensors)
    else:
        table = format_table(model, quantize_config)
        for name, (fmt_name, group, _) in table.items():
            check_fake_quantizable(fmt_name, group, name)
        net = TorchLlama(config, tensors, table, quantize_config.act_quant or config.act_quant, grids)
    net.requires_grad_(trainable)
    net.grid_scales.requires_grad_(trainable and learn_grids)
    return net
