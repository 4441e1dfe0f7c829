"""Quantize a loaded model tensor by tensor into a packed `Model`.

Linear weights, the token embedding and an untied output matrix are packed; norms, biases and RoPE
factors stay float32. Natively ternary models (bitllama2.c, BitNet checkpoints) are packed losslessly:
their trits and per-tensor scales go into the ternary format unchanged.

Order of work (`quantize_model`): the optional Hadamard rotation (`rotate.py`) first, on the float model;
then every tensor that RTN/absmean (or a float format) packs; then, with method "gptq", the block linears
of `config.format`, block by block on calibration activations of the model quantized so far
(`calibration.py`, `gptq.py`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import numpy as np

from edgekit.errors import QuantizationError
from edgekit.formats import PER_TENSOR, QuantizedTensor, get_format, pack_values
from edgekit.model.lazy import materialize
from edgekit.model.model import LINEAR_NAMES, Model
from edgekit.quantize import gptq as _gptq  # noqa: F401  (registers the "gptq" quantizer)
from edgekit.quantize.calibration import (calibration_sequences, check_calibration_tokens,
                                          quantize_sequentially, read_calibration_text)
from edgekit.quantize.config import QuantizeConfig
from edgekit.quantize.methods import get_quantizer, pack_float
from edgekit.quantize.rotate import check_rotatable, rotate_model

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


def packable_names(model: Model) -> list[str]:
    """Tensors the pipeline packs, in file order: embeddings, each layer's linears, the output matrix."""
    names = [n for n in model.tensors if n == "tok_embeddings" or n == "output"
             or n.rsplit(".", 1)[-1] in LINEAR_NAMES]
    return names


def is_block_linear(name: str) -> bool:
    """wq ... w3 of a block (not the embeddings or the output matrix)."""
    return name.startswith("layers.") and name.rsplit(".", 1)[-1] in LINEAR_NAMES


def read_weight(model: Model, name: str) -> np.ndarray:
    """The float32 weight of `name` (dequantized if packed), refusing NaN/Inf."""
    weight = model.tensors[name]
    if isinstance(weight, QuantizedTensor):
        weight_f = weight.dequantize()
    else:
        weight_f = np.asarray(materialize(weight), dtype=np.float32)
    if not np.isfinite(weight_f).all():
        bad = int((~np.isfinite(weight_f)).sum())
        raise QuantizationError(f"tensor {name!r} has {bad} NaN/Inf weights", path=model.source,
                                fix="repair or re-export the checkpoint; quantizing would spread them")
    return weight_f


def is_native_ternary(model: Model, name: str, config: QuantizeConfig) -> bool:
    """A natively ternary weight headed for a per-tensor ternary format: packed losslessly, as it is."""
    fmt_name = config.format_for(name)
    return (name + ".scale" in model.tensors and get_format(fmt_name).kind == "ternary"
            and config.default_group_size(fmt_name) == PER_TENSOR)


def method_for(name: str, config: QuantizeConfig) -> str:
    """The quantizer of `name`: the config's method for tensors in `config.format`, else RTN (ints) or
    absmean (ternary). GPTQ needs observed inputs, so the embeddings and output matrix fall back too."""
    fmt_name = config.format_for(name)
    fallback = "absmean" if get_format(fmt_name).kind == "ternary" else "rtn"
    if fmt_name != config.format or (config.method == "gptq" and not is_block_linear(name)):
        return fallback
    return config.method


def gptq_names(model: Model, config: QuantizeConfig) -> list[str]:
    """The tensors GPTQ quantizes: block linears in `config.format` that are not natively ternary."""
    return [name for name in packable_names(model) if is_block_linear(name) and method_for(name, config) == "gptq"
            and get_format(config.format_for(name)).kind != "float" and not is_native_ternary(model, name, config)]


def quantize_tensor(model: Model, name: str, config: QuantizeConfig,
                    hessian: np.ndarray | None = None) -> QuantizedTensor:
    """Pack one tensor as `config` says; GPTQ tensors need the `hessian` X^T X of their calibration inputs."""
    fmt_name = config.format_for(name)
    fmt = get_format(fmt_name)
    group = config.default_group_size(fmt_name)
    weight_f = read_weight(model, name)
    scale = model.tensors.get(name + ".scale")
    if is_native_ternary(model, name, config):  # keep the trits and the scale exactly
        return pack_values(fmt_name, weight_f.astype(np.int16), np.asarray(scale, np.float32).reshape(1, 1),
                           PER_TENSOR)
    if scale is not None:
        weight_f = weight_f * np.float32(scale)
    if fmt.kind == "float":
        return pack_float(weight_f, fmt_name)
    method = method_for(name, config)
    search = config.scale_search if fmt_name == config.format and is_block_linear(name) else "none"
    if method == "gptq":
        return get_quantizer(method)(weight_f, fmt_name, group, hessian=hessian, block_size=config.gptq_block_size,
                                     damp=config.gptq_damp, act_order=config.act_order, name=name,
                                     scale_search=search)
    if search != "none":
        return get_quantizer(method)(weight_f, fmt_name, group, scale_search=search)
    return get_quantizer(method)(weight_f, fmt_name, group)


def load_calibration(model: Model, config: QuantizeConfig, calib_text: str | None) -> list[np.ndarray]:
    """Calibration token sequences from `calib_text` or `config.calib_path`; too few raise `QuantizationError`."""
    if calib_text is None:
        if config.calib_path is None:
            raise QuantizationError("method 'gptq' needs calibration text",
                                    fix="set calib_path in the quantize config or pass calib_text")
        calib_text = read_calibration_text(config.calib_path)
    seq_len = min(config.calib_seq_len or model.config.max_seq_len, model.config.max_seq_len)
    sequences = calibration_sequences(model.tokenizer, calib_text, seq_len=seq_len, max_tokens=config.calib_tokens,
                                      first_document=config.calib_first_document)
    total = check_calibration_tokens(sequences, model.config, config.calib_tokens)
    log.info("GPTQ calibration: %d sequences, %d tokens", len(sequences), total)
    return sequences


def assemble_tensors(model: Model, packed: dict[str, QuantizedTensor]) -> dict:
    """Packed tensors in file order, then the source's other tensors (norms, biases, RoPE factors); the
    `.scale` companion of a packed weight is dropped (the packed tensor carries its scales)."""
    tensors: dict = {name: packed[name] for name in packable_names(model) if name in packed}
    for name, value in model.tensors.items():
        if name in packed or (name.endswith(".scale") and name[: -len(".scale")] in packed):
            continue
        tensors[name] = value
    return tensors


def packed_model(model: Model, config: QuantizeConfig, tensors: dict) -> Model:
    """A `Model` of `tensors` with the source's tokenizer, the config's act_quant and the recipe in metadata."""
    act_quant = config.act_quant or model.config.act_quant
    new_config = dataclasses.replace(model.config, act_quant=act_quant)
    metadata = {**model.metadata, "quantize_config": config.to_json()}
    return Model(config=new_config, tensors=tensors, tokenizer=model.tokenizer, source=model.source,
                 source_format=model.source_format, metadata=metadata)


def prepare_source(model: Model, config: QuantizeConfig, calib_text: str | None) -> tuple[Model, list | None]:
    """What must hold before any work (rotation is exact, enough calibration text), then the rotation:
    (the model to quantize, the calibration token sequences or None when nothing uses GPTQ)."""
    if config.rotate:
        check_rotatable(model)
    sequences = load_calibration(model, config, calib_text) if gptq_names(model, config) else None
    if config.rotate:
        model = rotate_model(model, config.rotate_seed)
    return model, sequences


def run_gptq(model: Model, config: QuantizeConfig, packed: dict[str, QuantizedTensor], sequences: list[np.ndarray],
             store: Callable[[str, QuantizedTensor], None]) -> None:
    """Sequential GPTQ of the block linears `gptq_names` picks, calibrated on the model with every other
    tensor already packed (`packed`); each result goes to `store`."""
    working = packed_model(model, config, assemble_tensors(model, packed))

    def quantize_stage(stage: list[str], hessian: np.ndarray) -> dict[str, QuantizedTensor]:
        done = {name: quantize_tensor(model, name, config, hessian=hessian) for name in stage}
        for name, tensor in done.items():
            store(name, tensor)
        return done

    quantize_sequentially(working, sequences, set(gptq_names(model, config)), quantize_stage)


def quantize_model(model: Model, config: QuantizeConfig, progress: Progress | None = None,
                   calib_text: str | None = None) -> Model:
    """Return a new `Model` whose weights are packed as `config` says (the source is not modified).

    With `config.rotate` the float model is rotated first; with method "gptq" the calibration text
    (`calib_text`, else the file `config.calib_path`) is read and checked before any work is done, the
    other tensors are packed next, and the GPTQ tensors last, block by block.
    """
    model, sequences = prepare_source(model, config, calib_text)
    names, targets = packable_names(model), set(gptq_names(model, config))
    packed: dict[str, QuantizedTensor] = {}

    def store(name: str, tensor: QuantizedTensor) -> None:
        packed[name] = tensor
        if progress:
            progress(name, len(packed), len(names))

    for name in names:
        if name not in targets:
            store(name, quantize_tensor(model, name, config))
    if targets:
        run_gptq(model, config, packed, sequences, store)
    return packed_model(model, config, assemble_tensors(model, packed))


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
