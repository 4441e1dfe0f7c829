"""Quantize a loaded model tensor by tensor into a packed `Model`.

Linear weights, the token embedding and an untied output matrix are packed; norms, biases and RoPE
factors stay float32. Natively ternary models (bitllama2.c, BitNet checkpoints) are packed losslessly:
their trits and per-tensor scales go into the ternary format unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import numpy as np

from edgekit.errors import QuantizationError
from edgekit.formats import PER_TENSOR, QuantizedTensor, get_format, pack_values
from edgekit.model.model import LINEAR_NAMES, Model
from edgekit.quantize.config import QuantizeConfig
from edgekit.quantize.methods import get_quantizer, pack_float

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


def packable_names(model: Model) -> list[str]:
    """Tensors the pipeline packs, in file order: embeddings, each layer's linears, the output matrix."""
    names = [n for n in model.tensors if n == "tok_embeddings" or n == "output"
             or n.rsplit(".", 1)[-1] in LINEAR_NAMES]
    return names


def quantize_tensor(model: Model, name: str, config: QuantizeConfig) -> QuantizedTensor:
    fmt_name = config.format_for(name)
    fmt = get_format(fmt_name)
    group = config.default_group_size(fmt_name)
    weight = model.tensors[name]
    if isinstance(weight, QuantizedTensor):
        weight_f = weight.dequantize()
    else:
        weight_f = np.asarray(weight, dtype=np.float32)
    if not np.isfinite(weight_f).all():
        bad = int((~np.isfinite(weight_f)).sum())
        raise QuantizationError(f"tensor {name!r} has {bad} NaN/Inf weights", path=model.source,
                                fix="repair or re-export the checkpoint; quantizing would spread them")
    scale = model.tensors.get(name + ".scale")
    if scale is not None and fmt.kind == "ternary" and group == PER_TENSOR:
        # Natively ternary: keep the trits and the scale exactly.
        return pack_values(fmt_name, weight_f.astype(np.int16), np.asarray(scale, np.float32).reshape(1, 1),
                           PER_TENSOR)
    if scale is not None:
        weight_f = weight_f * np.float32(scale)
    if fmt.kind == "float":
        return pack_float(weight_f, fmt_name)
    method = config.method if fmt_name == config.format else ("absmean" if fmt.kind == "ternary" else "rtn")
    return get_quantizer(method)(weight_f, fmt_name, group)


def quantize_model(model: Model, config: QuantizeConfig, progress: Progress | None = None) -> Model:
    """Return a new `Model` whose weights are packed as `config` says (the source is not modified)."""
    names = packable_names(model)
    tensors: dict = {}
    packed = set(names)
    for i, name in enumerate(names):
        tensors[name] = quantize_tensor(model, name, config)
        if progress:
            progress(name, i + 1, len(names))
    for name, value in model.tensors.items():
        if name in packed or (name.endswith(".scale") and name[: -len(".scale")] in packed):
            continue
        tensors[name] = value
    act_quant = config.act_quant or model.config.act_quant
    new_config = dataclasses.replace(model.config, act_quant=act_quant)
    metadata = {**model.metadata, "quantize_config": config.to_json()}
    return Model(config=new_config, tensors=tensors, tokenizer=model.tokenizer, source=model.source,
                 source_format=model.source_format, metadata=metadata)


def bits_report(model: Model) -> list[dict]:
    """Per tensor: name, format, shape, bytes and bits per weight (float tensors count as f32)."""
    rows = []
    for name, t in model.tensors.items():
        if isinstance(t, QuantizedTensor):
            rows.append({"name": name, "format": t.format, "group_size": t.group_size, "shape": list(t.shape),
                         "bytes": t.nbytes, "bits_per_weight": t.bits_per_weight})
        else:
            rows.append({"name": name, "format": str(t.dtype), "group_size": None, "shape": list(t.shape),
                         "bytes": int(t.nbytes), "bits_per_weight": 8.0 * t.itemsize})
    return rows
