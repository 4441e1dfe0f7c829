"""Activation-aware per-channel scaling (AWQ, Lin et al. 2024, arXiv:2306.00978), folded into the model.

For the linears that read one input x [T, in], y = x W^T = (x / s) (W diag(s))^T for any positive s [in]:
scaling the weight columns of channels with large activations up makes their rounding error relatively
smaller, and the inverse 1 / s is folded into whatever produces x, so the float model computes the same
function (a test holds it to the original within float32 rounding) and only the quantized one changes:

- q/k/v read attn_norm(h): s divides the attn_norm weight, multiplies the columns of wq, wk, wv;
- w1/w3 read ffn_norm(h): s divides the ffn_norm weight, multiplies the columns of w1, w3;
- w2 reads silu(w1 x) * (w3 x), linear in the rows of w3: s divides the rows of w3, multiplies w2's columns.

wo is left alone (its input is attention over v heads shared by several q heads; a fold into wv needs one
scale per kv channel). Per input group, s = rms(x)^alpha normalised to a geometric mean of 1 between its
extremes, with alpha from `ALPHAS` chosen to minimise the calibration output error of the quantized
linears, sum_k tr((W_k - Q(W_k diag(s)) diag(1/s)) H (.)^T), H = X^T X from the float model's activations
(`calibration.collect_hessian`), Q the format's round-to-nearest (or scale-searched) packer. alpha = 0
(no scaling) is a candidate, so the search never does worse than no AWQ on this error.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from edgekit.errors import UnsupportedModelError
from edgekit.model.lazy import materialize
from edgekit.model.model import Model
from edgekit.model.reference import KVCache
from edgekit.quantize.calibration import advance_states, collect_hessian, embed_sequences
from edgekit.quantize.methods import quantize_rtn

log = logging.getLogger(__name__)

ALPHAS = np.linspace(0.0, 1.0, 21)
# (input group, the half-block that computes it, the linears reading it, the tensor the inverse scale folds into)
FOLDS = (("attn_in", "attention", ("wq", "wk", "wv"), "attn_norm"),
         ("ffn_in", "ffn", ("w1", "w3"), "ffn_norm"),
         ("ffn_hidden", "ffn", ("w2",), "w3"))


def check_foldable(model: Model) -> None:
    """Raise `UnsupportedModelError` when the scales cannot be folded exactly into `model`."""
    c, reasons = model.config, []
    if model.is_packed:
        reasons.append("its weights are already packed (scale the float checkpoint, then quantize)")
    if c.linear_input_norm:
        reasons.append("it has bitllama2.c's weightless per-linear input norms, no norm weights to fold into")
    if c.ternary_weights:
        reasons.append("its weights are natively ternary")
    if c.act_quant != "none":
        reasons.append(f"its activations are quantized ({c.act_quant}); per-token absmax is not scale invariant")
    if c.sub_norms:
        reasons.append("a BitNet sub-norm sits between w3 and w2")
    if reasons:
        raise UnsupportedModelError("cannot fold AWQ scales into this model exactly: " + "; ".join(reasons),
                                    path=model.source, fix="quantize without awq")


def output_error(weights: list[np.ndarray], scale: np.ndarray, hessian: np.ndarray, fmt_name: str, group_size: int,
                 scale_search: str) -> float:
    """sum_k tr(D_k H D_k^T), D_k = W_k - Q(W_k diag(s)) diag(1/s): the calibration output error."""
    total = 0.0
    for weight in weights:
        effective = quantize_rtn(weight * scale, fmt_name, group_size, scale_search=scale_search).dequantize() / scale
        diff = (weight - effective).astype(np.float64)                        # [out, in]
        total += float(np.einsum("oi,ij,oj->", diff, hessian, diff))
    return total


def search_scale(weights: list[np.ndarray], hessian: np.ndarray, tokens: int, fmt_name: str, group_size: int,
                 scale_search: str) -> tuple[np.ndarray, float]:
    """(s [in] float32, alpha) minimising `output_error` over s = rms^alpha / sqrt(max * min)."""
    rms = np.sqrt(np.maximum(np.diag(hessian) / max(tokens, 1), 1e-12))
    best = (np.ones(len(rms), np.float32), 0.0, output_error(weights, np.float32(1.0), hessian, fmt_name, group_size,
                                                             scale_search))
    for alpha in ALPHAS[1:]:
        s = rms ** alpha
        s = (s / np.sqrt(s.max() * s.min())).astype(np.float32)
        err = output_error(weights, s, hessian, fmt_name, group_size, scale_search)
        if err < best[2]:
            best = (s, float(alpha), err)
    return best[0], best[1]


def fold_scale(tensors: dict, layer: int, linears: tuple[str, ...], target: str, scale: np.ndarray) -> None:
    """Multiply the columns of the `linears` of `layer` by s and divide `target` (a norm weight, or the rows
    of w3: the FFN has no bias) by s, in place on the `tensors` dict (new arrays, the source's are not touched)."""
    p = f"layers.{layer}."
    for linear in linears:
        tensors[p + linear] = (np.asarray(tensors[p + linear], np.float32) * scale[None, :]).astype(np.float32)
    if target == "w3":
        tensors[p + "w3"] = (np.asarray(tensors[p + "w3"], np.float32) / scale[:, None]).astype(np.float32)
    else:
        tensors[p + target] = (np.asarray(tensors[p + target], np.float32) / scale).astype(np.float32)


def awq_fold(model: Model, sequences: list[np.ndarray], fmt_name: str, group_size: int,
             scale_search: str = "none") -> tuple[Model, dict[str, float]]:
    """(the float model with AWQ scales folded in, {"layers.i.<group>": alpha}): the same function as
    `model`, calibrated on `sequences` (token arrays), for quantization into `fmt_name` with `group_size`."""
    check_foldable(model)
    tensors = {name: materialize(value) for name, value in model.tensors.items()}
    working = dataclasses.replace(model, tensors=tensors)
    cache = KVCache(model.config, max(len(s) for s in sequences))
    states, tokens, alphas = embed_sequences(working, sequences), int(sum(len(s) for s in sequences)), {}
    for layer in range(model.config.n_layers):
        for half in ("attention", "ffn"):
            for group, _, linears, target in (fold for fold in FOLDS if fold[1] == half):
                hessian = collect_hessian(working, states, f"layers.{layer}.{linears[0]}", half, cache)
                weights = [np.asarray(tensors[f"layers.{layer}.{name}"], np.float32) for name in linears]
                scale, alphas[f"layers.{layer}.{group}"] = search_scale(weights, hessian, tokens, fmt_name,
                                                                        group_size, scale_search)
                fold_scale(tensors, layer, linears, target, scale)
            states = advance_states(working, states, layer, half, cache)
    log.info("AWQ alphas: %s", alphas)
    return working, alphas
