"""Build the ONNX decoder graph of a `Model`: one forward step with past/present KV per layer.

The graph computes exactly what `edgekit.model.reference.ReferenceForward` computes, op for op:

    inputs   input_ids       int64 [batch, seq]
             attention_mask  int64 [batch, past + seq]      (0 marks padding)
             position_ids    int64 [batch, seq]
             past_key_values.{i}.key / .value   float32 [batch, n_kv_heads, past, head_dim]
    outputs  logits          float32 [batch, seq, vocab]
             present.{i}.key / .value           float32 [batch, n_kv_heads, past + seq, head_dim]

(the input and output names of onnxruntime-genai's llama decoder). Linear layers are com.microsoft
MatMulNBits nodes over the packed codes (`onnx_weights.py`), float weights are MatMul initializers.
Grouped-query attention folds the G = n_heads / n_kv_heads query heads of each KV head into the row axis
([B, KV, G*T, hd] against [B, KV, S, hd]), so keys and values are never repeated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekit.errors import ConfigError
from edgekit.export.onnx_weights import OnnxFormatError, check_onnx_format, to_matmul_nbits
from edgekit.formats import PER_TENSOR, QuantizedTensor, pack_values
from edgekit.model.lazy import materialize
from edgekit.model.model import LINEAR_NAMES, Model
from edgekit.model.reference import rope_inv_freq

OPSET = 17              # ai.onnx; ReduceMean still takes `axes` as an attribute here
MS_DOMAIN = "com.microsoft"
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
FLOAT_TYPES = ("f32", "f16")
NEG_LIMIT = float(np.finfo(np.float32).min)   # masked score: exp(NEG_LIMIT - max) is 0, never NaN


@dataclass(frozen=True)
class OnnxGraphConfig:
    """How the graph is built. `accuracy_level` 4 lets MatMulNBits quantize activations to int8 per block
    (fast; 2-bit is 50-300x slower without it); 0 keeps float activations (exact integer sums)."""

    accuracy_level: int = 4
    # MatMulNBits block for per-channel / per-tensor scales. onnxruntime 1.32's int8 2-bit path takes blocks up to
    # 128 (128 ran 2x faster than 32 here); 256 falls back to a ~200x slower kernel and 2-bit refuses > 256.
    block_size: int = 128
    float_type: str = "f32"           # storage of unpacked float matrices (f16 is cast back to f32 on load)
    ternary_zero_point: int = 1       # 1: ek_t2 bytes kept, explicit zero points; 2: codes trit + 2, default zp
    # Float activations into integer MatMulNBits at accuracy_level 4: 2 feeds x and its int8 rounding residual
    # (as MLAS rounds it per block) as one call of two rows and adds the halves, the native runtime's act_passes
    # rule (runtime/native_weights.split_rows); 1 leaves MLAS's one int8 pass. See `activation_passes_input`.
    activation_passes: int = 2

    def __post_init__(self) -> None:
        if self.accuracy_level not in ACCURACY_LEVELS:
            raise ConfigError(f"accuracy_level {self.accuracy_level!r} must be one of {ACCURACY_LEVELS}")
        if self.block_size not in (16, 32, 64, 128, 256):
            raise ConfigError(f"block_size {self.block_size!r} must be 16, 32, 64, 128 or 256")
        if self.float_type not in FLOAT_TYPES:
            raise ConfigError(f"float_type {self.float_type!r} must be one of {FLOAT_TYPES}")
        if self.ternary_zero_point not in (1, 2):
            raise ConfigError(f"ternary_zero_point {self.ternary_zero_point!r} must be 1 or 2")
        if self.activation_passes not in (1, 2):
            raise ConfigError(f"activation_passes {self.activation_passes!r} must be 1 or 2")


@dataclass
class WeightSummary:
    name: str
    source_format: str
    onnx_form: str            # "MatMulNBits 2-bit b32", "MatMul f32", ...
    exact_bytes: bool = False


class GraphBuilder:
    """Collects nodes and initializers; every helper returns the name of the value it made."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0
        self._consts: dict[tuple, str] = {}

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int | list[str] = 1,
           domain: str = "", **attrs) -> str | list[str]:
        names = outputs if isinstance(outputs, list) else [self.fresh(hint or op_type) for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, inputs, names, name=self.fresh("n_" + op_type),
                                                domain=domain or None, **attrs))
        return names[0] if len(names) == 1 else names

    def initializer(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, values, dtype=np.int64) -> str:
        """A small constant initializer, shared between uses of the same value."""
        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.initializer(self.fresh("const"), array)
        return self._consts[key]


@dataclass
class DecoderContext:
    model: Model
    config: OnnxGraphConfig
    b: GraphBuilder
    summary: list[WeightSummary] = field(default_factory=list)
    cos: str = ""
    sin: str = ""
    mask: str = ""
    vectors: dict[str, str] = field(default_factory=dict)
    embedding_table: str = ""

    @property
    def c(self):
        return self.model.config


# -- norms and activations --------------------------------------------------------------------------------

def rms_norm(ctx: DecoderContext, x: str, weight: str | None, eps: float) -> str:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (reference.rms_norm)."""
    b = ctx.b
    mean = b.op("ReduceMean", [b.op("Mul", [x, x])], axes=[-1], keepdims=1)
    y = b.op("Div", [x, b.op("Sqrt", [b.op("Add", [mean, b.const(eps, np.float32)])])])
    return y if weight is None else b.op("Mul", [y, weight])


def bitlinear_norm(ctx: DecoderContext, x: str, n: int) -> str:
    """x / (n * rms(x)), zero rows kept zero (reference.bitlinear_norm)."""
    b = ctx.b
    rms = b.op("Sqrt", [b.op("ReduceMean", [b.op("Mul", [x, x])], axes=[-1], keepdims=1)])
    positive = b.op("Greater", [rms, b.const(0.0, np.float32)])
    denom = b.op("Where", [positive, b.op("Mul", [rms, b.const(float(n), np.float32)]), b.const(1.0, np.float32)])
    return b.op("Div", [x, denom])


def quantize_absmax_int8(ctx: DecoderContext, x: str) -> tuple[str, str]:
    """Per-token absmax int8 as floats: (q [..., n] integers in [-127, 127], scale [..., 1]); C roundf
    (ties away from zero) written as sign(v) * floor(|v| + 0.5), as reference.round_half_away."""
    b = ctx.b
    scale = b.op("Div", [b.op("ReduceMax", [b.op("Abs", [x])], axes=[-1], keepdims=1), b.const(127.0, np.float32)])
    safe = b.op("Where", [b.op("Greater", [scale, b.const(0.0, np.float32)]), scale, b.const(1.0, np.float32)])
    v = b.op("Div", [x, safe])
    rounded = b.op("Floor", [b.op("Add", [b.op("Abs", [v]), b.const(0.5, np.float32)])])
    return b.op("Mul", [b.op("Sign", [v]), rounded]), scale


# -- weights ----------------------------------------------------------------------------------------------

def float_matrix(ctx: DecoderContext, name: str, array: np.ndarray, transpose: bool) -> str:
    """A float initializer (transposed to [in, out] for MatMul when asked), f16 storage cast back to f32."""
    data = np.ascontiguousarray(array.T if transpose else array)
    if ctx.config.float_type == "f16" or data.dtype == np.float16:
        stored = ctx.b.initializer(name, data.astype(np.float16))
        return ctx.b.op("Cast", [stored], to=1)
    return ctx.b.initializer(name, data.astype(np.float32))


def linear_weight(ctx: DecoderContext, name: str):
    """("nbits", NBitsWeight, post_scale) or ("float", float32 [out, in], post_scale) for one matrix."""
    tensor = ctx.model.tensors[name]
    if isinstance(tensor, QuantizedTensor):
        check_onnx_format(tensor, name)
        if tensor.format in ("f16", "f32"):
            return "float", tensor.dequantize() if tensor.format == "f32" else _f16_values(tensor), 1.0
        if tensor.format.startswith("ek_t") and tensor.group_size == PER_TENSOR:
            # one scale: trits with unit scales in MatMulNBits and the scale applied after, so that with
            # int8 activations and float accumulation the sums are exact integers, as in the reference
            unit = pack_values("ek_t2", tensor.values()[:, : tensor.cols], np.ones((1, 1), np.float32), PER_TENSOR)
            weight = to_matmul_nbits(unit, name, ctx.config.block_size)
            weight.exact_bytes = tensor.format == "ek_t2" and np.array_equal(unit.data, tensor.data)
            return "nbits", weight, float(tensor.scales[0, 0])
        return "nbits", to_matmul_nbits(tensor, name, ctx.config.block_size), 1.0
    array = np.asarray(materialize(tensor), np.float32)
    scale_name = name + ".scale"
    if ctx.c.ternary_weights and scale_name in ctx.model.tensors and name.rsplit(".", 1)[-1] in LINEAR_NAMES:
        trits = pack_values("ek_t2", array.astype(np.int8), np.ones((1, 1), np.float32), PER_TENSOR)
        return "nbits", to_matmul_nbits(trits, name, ctx.config.block_size), float(ctx.model.tensors[scale_name])
    return "float", array, 1.0


def _f16_values(tensor: QuantizedTensor) -> np.ndarray:
    return tensor.dequantize().astype(np.float16)


def matmul(ctx: DecoderContext, x: str, name: str, float_input: bool = True) -> str:
    """x [B, T, in] @ W^T -> [B, T, out] (without the post scale); `float_input` False when x already holds
    int8 values (act_quant), which need no second activation pass."""
    kind, weight, post = linear_weight(ctx, name)
    b = ctx.b
    if kind == "float":
        form = f"MatMul {'f16' if ctx.config.float_type == 'f16' or weight.dtype == np.float16 else 'f32'}"
        ctx.summary.append(WeightSummary(name, _source_format(ctx, name), form))
        y = b.op("MatMul", [x, float_matrix(ctx, name, weight, transpose=True)])
    else:
        y = matmul_nbits(ctx, x, name, weight, float_input)
    return y if post == 1.0 else b.op("Mul", [y, b.const(post, np.float32)])


def matmul_nbits(ctx: DecoderContext, x: str, name: str, weight, float_input: bool = True) -> str:
    b = ctx.b
    weight = _recode_ternary(weight, ctx.config.ternary_zero_point, name, ctx.model)
    two_pass = float_input and ctx.config.activation_passes == 2 and ctx.config.accuracy_level == 4
    a = activation_passes_input(ctx, x, weight.k, weight.block_size) if two_pass else x
    inputs = [a, b.initializer(name + ".qweight", weight.blob), b.initializer(name + ".scales", weight.scales)]
    if weight.zero_points is not None:
        inputs.append(b.initializer(name + ".qzeros", weight.zero_points))
    ctx.summary.append(WeightSummary(name, _source_format(ctx, name), f"MatMulNBits {weight.bits}-bit "
                                     f"b{weight.block_size}{' x2 passes' if two_pass else ''}", weight.exact_bytes))
    y = b.op("MatMulNBits", inputs, domain=MS_DOMAIN, K=weight.k, N=weight.n, bits=weight.bits,
             block_size=weight.block_size, accuracy_level=ctx.config.accuracy_level)
    if not two_pass:
        return y
    first, second = b.op("Split", [y], outputs=2, axis=1)                # [B, T, N] each: W x and W r
    return b.op("Add", [first, second])


def activation_passes_input(ctx: DecoderContext, x: str, k: int, block: int) -> str:
    """x [B, T, K] -> [B, 2T, K]: x, then x minus the int8 rounding MatMulNBits' accuracy_level 4 applies to it.

    MLAS's CompInt8 kernels (QuantizeARow_CompInt8) quantize each block of `block` activations along K with
    scale = amax / 127 and q = round_half_even(a * (127 / amax)) (0 for an all-zero block). The residual row is
    what that rounding loses; MLAS rounds it again with its own ~127x smaller scale, so the two halves of the
    output add up to x @ W^T with ~15-bit activations instead of 8. K is zero-padded to whole blocks (zeros do
    not change a block's amax). This is the native runtime's rule for float activations on integer weights
    (runtime/native_weights.split_rows, there per token): decode stays one pass over the weights, for 2 rows.
    """
    b = ctx.b
    n_blocks = -(-k // block)
    pad = n_blocks * block - k
    padded = b.op("Pad", [x, b.const([0, 0, 0, 0, 0, pad])]) if pad else x
    blocks = b.op("Reshape", [padded, b.const([0, 0, n_blocks, block])])               # [B, T, blocks, block]
    amax = b.op("ReduceMax", [b.op("Abs", [blocks])], axes=[-1], keepdims=1)
    zero = b.const(0.0, np.float32)
    inverse = b.op("Where", [b.op("Greater", [amax, zero]), b.op("Div", [b.const(127.0, np.float32), amax]), zero])
    scale = b.op("Div", [amax, b.const(127.0, np.float32)])
    rounded = b.op("Mul", [b.op("Round", [b.op("Mul", [blocks, inverse])]), scale])
    rounded = b.op("Reshape", [rounded, b.const([0, 0, n_blocks * block])])            # [B, T, padded K]
    if pad:
        rounded = b.op("Slice", [rounded, b.const([0]), b.const([k]), b.const([-1])])
    return b.op("Concat", [x, b.op("Sub", [x, rounded])], axis=1)


def _recode_ternary(weight, zero_point: int, name: str, model: Model):
    """ternary_zero_point=2: codes trit + 2 in {1, 2, 3} with MatMulNBits' default zero point 2 (no
    zero-point input); the values are unchanged, the bytes are no longer ek_t2's."""
    tensor = model.tensors[name]
    ternary = (isinstance(tensor, QuantizedTensor) and tensor.format.startswith("ek_t")) or \
        (not isinstance(tensor, QuantizedTensor) and model.config.ternary_weights)
    if zero_point == 1 or not ternary or weight.bits != 2:
        return weight
    from edgekit.formats.base import pack_bitstream, unpack_bitstream

    n, n_blocks, blob_size = weight.blob.shape
    codes = unpack_bitstream(weight.blob.reshape(n, -1), n_blocks * weight.block_size, 2) + 1
    weight.blob = pack_bitstream(codes, 2).reshape(n, n_blocks, blob_size)
    weight.zero_points, weight.exact_bytes = None, False
    return weight


def _source_format(ctx: DecoderContext, name: str) -> str:
    tensor = ctx.model.tensors[name]
    if isinstance(tensor, QuantizedTensor):
        return f"{tensor.format} g{tensor.group_size}"
    return "f32 trits" if ctx.c.ternary_weights and name + ".scale" in ctx.model.tensors else "f32"


def linear(ctx: DecoderContext, x: str, name: str, bias: str | None = None) -> str:
    """reference.ReferenceForward.linear: optional BitLinear input norm and int8 activations, then x @ W^T."""
    c, b = ctx.c, ctx.b
    if c.linear_input_norm:
        x = bitlinear_norm(ctx, x, _in_features(ctx, name))
    if c.act_quant == "int8_absmax":
        q, a_scale = quantize_absmax_int8(ctx, x)
        y = b.op("Mul", [matmul(ctx, q, name, float_input=False), a_scale])
    else:
        y = matmul(ctx, x, name)
    if bias is not None:
        y = b.op("Add", [y, vector(ctx, bias)])
    return y


def _in_features(ctx: DecoderContext, name: str) -> int:
    return int(ctx.model.tensors[name].shape[1])


def vector(ctx: DecoderContext, name: str) -> str:
    """A 1-D float tensor (norm weight, bias) as an f32 initializer named after it."""
    if name not in ctx.vectors:
        ctx.vectors[name] = ctx.b.initializer(name, np.asarray(materialize(ctx.model.tensors[name]), np.float32))
    return ctx.vectors[name]


# -- blocks -----------------------------------------------------------------------------------------------

def build_rope_tables(ctx: DecoderContext, position_ids: str) -> None:
    """cos, sin [B, T, 1, hd/2] of position * inv_freq (reference.apply_rope), shared by all layers."""
    b = ctx.b
    inv = rope_inv_freq(ctx.c, _optional(ctx, "rope_freqs"))
    angles = b.op("Mul", [b.op("Unsqueeze", [b.op("Cast", [position_ids], to=1), b.const([-1])]),
                          b.initializer("rope_inv_freq", inv)])                        # [B, T, hd/2]
    ctx.cos = b.op("Unsqueeze", [b.op("Cos", [angles]), b.const([2])])
    ctx.sin = b.op("Unsqueeze", [b.op("Sin", [angles]), b.const([2])])


def _optional(ctx: DecoderContext, name: str):
    tensor = ctx.model.tensors.get(name)
    return None if tensor is None else np.asarray(materialize(tensor), np.float32)


def apply_rope(ctx: DecoderContext, x: str) -> str:
    """Rotate-half RoPE on x [B, T, heads, hd]: pairs (i, i + hd/2), as HF Llama and reference.apply_rope."""
    b, half = ctx.b, ctx.c.head_dim // 2
    x1, x2 = b.op("Split", [x, b.const([half, half])], axis=-1, outputs=2)
    first = b.op("Sub", [b.op("Mul", [x1, ctx.cos]), b.op("Mul", [x2, ctx.sin])])
    second = b.op("Add", [b.op("Mul", [x2, ctx.cos]), b.op("Mul", [x1, ctx.sin])])
    return b.op("Concat", [first, second], axis=-1)


def build_causal_mask(ctx: DecoderContext, input_ids: str, attention_mask: str, past_key: str) -> None:
    """Boolean mask [B, 1, G*T, S] (True = masked): key position > query position, or padding.

    Query rows are ordered (g, t) to match the folded query heads of `attention`."""
    b, c = ctx.b, ctx.c
    past = b.op("Squeeze", [b.op("Shape", [past_key], start=2, end=3)])                 # scalar P
    seq = b.op("Squeeze", [b.op("Shape", [input_ids], start=1, end=2)])                 # scalar T
    total = b.op("Add", [past, seq])
    one, zero = b.const(1), b.const(0)
    q_pos = b.op("Unsqueeze", [b.op("Range", [past, total, one]), b.const([1])])         # [T, 1]
    k_pos = b.op("Unsqueeze", [b.op("Range", [zero, total, one]), b.const([0])])         # [1, S]
    causal = b.op("Greater", [k_pos, q_pos])                                             # [T, S]
    group = c.n_heads // c.n_kv_heads
    folded = b.op("Tile", [causal, b.const([group, 1])]) if group > 1 else causal       # [G*T, S]
    padding = b.op("Unsqueeze", [b.op("Equal", [attention_mask, zero]), b.const([1, 2])])  # [B, 1, 1, S]
    ctx.mask = b.op("Or", [folded, padding])


def attention(ctx: DecoderContext, x: str, layer: int, past_k: str, past_v: str, present_k: str,
              present_v: str) -> str:
    c, b, p = ctx.c, ctx.b, f"layers.{layer}."
    bias = c.qkv_bias
    q = b.op("Reshape", [linear(ctx, x, p + "wq", p + "bq" if bias else None), b.const([0, 0, c.n_heads, c.head_dim])])
    k = b.op("Reshape", [linear(ctx, x, p + "wk", p + "bk" if bias else None), b.const([0, 0, c.n_kv_heads, c.head_dim])])
    v = b.op("Reshape", [linear(ctx, x, p + "wv", p + "bv" if bias else None), b.const([0, 0, c.n_kv_heads, c.head_dim])])
    if c.qk_norm:
        q = rms_norm(ctx, q, vector(ctx, p + "q_norm"), c.norm_eps)
        k = rms_norm(ctx, k, vector(ctx, p + "k_norm"), c.norm_eps)
    q, k = apply_rope(ctx, q), apply_rope(ctx, k)                                        # [B, T, heads, hd]
    b.op("Concat", [past_k, b.op("Transpose", [k], perm=[0, 2, 1, 3])], axis=2, outputs=[present_k])
    b.op("Concat", [past_v, b.op("Transpose", [v], perm=[0, 2, 1, 3])], axis=2, outputs=[present_v])
    q = b.op("Reshape", [b.op("Transpose", [q], perm=[0, 2, 1, 3]), b.const([0, c.n_kv_heads, -1, c.head_dim])])
    keys_t = b.op("Transpose", [present_k], perm=[0, 1, 3, 2])                            # [B, KV, hd, S]
    scores = b.op("Div", [b.op("MatMul", [q, keys_t]), b.const(np.sqrt(c.head_dim), np.float32)])  # [B, KV, G*T, S]
    scores = b.op("Where", [ctx.mask, b.const(NEG_LIMIT, np.float32), scores])
    probs = b.op("Softmax", [scores], axis=-1)
    out = b.op("MatMul", [probs, present_v])                                              # [B, KV, G*T, hd]
    out = b.op("Transpose", [b.op("Reshape", [out, b.const([0, c.n_heads, -1, c.head_dim])])], perm=[0, 2, 1, 3])
    out = b.op("Reshape", [out, b.const([0, 0, c.q_dim])])                               # [B, T, heads*hd]
    if c.sub_norms:
        out = rms_norm(ctx, out, vector(ctx, p + "attn_sub_norm"), c.norm_eps)
    return linear(ctx, out, p + "wo", p + "bo" if c.o_bias else None)


def feed_forward(ctx: DecoderContext, x: str, layer: int) -> str:
    c, b, p = ctx.c, ctx.b, f"layers.{layer}."
    gate, up = linear(ctx, x, p + "w1"), linear(ctx, x, p + "w3")
    if c.activation == "silu":
        hidden = b.op("Mul", [b.op("Mul", [gate, b.op("Sigmoid", [gate])]), up])
    else:                                                                                  # relu2
        relu = b.op("Relu", [gate])
        hidden = b.op("Mul", [b.op("Mul", [relu, relu]), up])
    if c.sub_norms:
        hidden = rms_norm(ctx, hidden, vector(ctx, p + "ffn_sub_norm"), c.norm_eps)
    return linear(ctx, hidden, p + "w2")


def embed(ctx: DecoderContext, input_ids: str) -> str:
    """Gather rows of the embedding table [vocab, dim] (packed tables dequantized exactly to f32)."""
    tensor = ctx.model.tensors["tok_embeddings"]
    if isinstance(tensor, QuantizedTensor):
        check_onnx_format(tensor, "tok_embeddings")
        table = _f16_values(tensor) if tensor.format == "f16" else tensor.dequantize()
    else:
        table = np.asarray(materialize(tensor), np.float32)
    stored = float_matrix(ctx, "tok_embeddings", table, transpose=False)
    ctx.summary.append(WeightSummary("tok_embeddings", _source_format(ctx, "tok_embeddings"),
                                     f"Gather {'f16' if table.dtype == np.float16 or ctx.config.float_type == 'f16' else 'f32'}"))
    ctx.embedding_table = stored
    return ctx.b.op("Gather", [stored, input_ids], axis=0)


def output_logits(ctx: DecoderContext, hidden: str) -> str:
    """reference.logits: hidden @ W^T * post_scale (no activation quantization on the output layer)."""
    name = ctx.model.output_name
    tensor = ctx.model.tensors[name]
    if name == "tok_embeddings" and not (isinstance(tensor, QuantizedTensor) and tensor.format not in ("f16", "f32")):
        b = ctx.b                                              # tied float table: Gemm with transB on [B*T, dim]
        flat = b.op("Reshape", [hidden, b.const([-1, ctx.c.dim])])
        logits = b.op("Gemm", [flat, ctx.embedding_table], transB=1)
        shape = b.op("Concat", [b.op("Shape", [hidden], start=0, end=2), b.const([ctx.c.vocab_size])], axis=0)
        ctx.summary.append(WeightSummary("output", "tied", "Gemm (tied embedding)"))
        return b.op("Reshape", [logits, shape], outputs=["logits"])
    return ctx.b.op("Identity", [matmul(ctx, hidden, name)], outputs=["logits"])


def check_graph_exportable(model: Model) -> None:
    for name, tensor in model.tensors.items():
        if isinstance(tensor, QuantizedTensor):
            check_onnx_format(tensor, name)
    if model.config.n_heads % model.config.n_kv_heads:
        raise OnnxFormatError("n_heads must be a multiple of n_kv_heads")


def build_decoder(model: Model, config: OnnxGraphConfig, name: str = "edgekit"):
    """(onnx.ModelProto, [WeightSummary]) for one decoder step of `model`."""
    from onnx import TensorProto, helper

    check_graph_exportable(model)
    c = model.config
    ctx = DecoderContext(model, config, GraphBuilder())
    past = [(f"past_key_values.{i}.key", f"past_key_values.{i}.value") for i in range(c.n_layers)]
    present = [(f"present.{i}.key", f"present.{i}.value") for i in range(c.n_layers)]
    build_rope_tables(ctx, "position_ids")
    build_causal_mask(ctx, "input_ids", "attention_mask", past[0][0])
    h = embed(ctx, "input_ids")                                                            # [B, T, dim]
    for layer in range(c.n_layers):
        p = f"layers.{layer}."
        a_in = h if c.linear_input_norm else rms_norm(ctx, h, vector(ctx, p + "attn_norm"), c.norm_eps)
        h = ctx.b.op("Add", [h, attention(ctx, a_in, layer, *past[layer], *present[layer])])
        f_in = h if c.linear_input_norm else rms_norm(ctx, h, vector(ctx, p + "ffn_norm"), c.norm_eps)
        h = ctx.b.op("Add", [h, feed_forward(ctx, f_in, layer)])
    output_logits(ctx, rms_norm(ctx, h, vector(ctx, "norm"), c.norm_eps))
    kv_shape = ["batch_size", c.n_kv_heads, "past_sequence_length", c.head_dim]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", c.vocab_size])]
    for (pk, pv), (qk, qv) in zip(past, present):
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, kv_shape) for n in (pk, pv)]
        total = ["batch_size", c.n_kv_heads, "total_sequence_length", c.head_dim]
        outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, total) for n in (qk, qv)]
    graph = helper.make_graph(ctx.b.nodes, name, inputs, outputs, ctx.b.initializers)
    proto = helper.make_model(graph, producer_name="edgekit", ir_version=8,
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)])
    return proto, ctx.summary
