"""A plain-data description of a loaded model, for `edgekit inspect` and for tests."""

from __future__ import annotations

from edgekit.formats import QuantizedTensor
from edgekit.model.model import LINEAR_NAMES, Model


def describe_tensor(name: str, tensor) -> dict:
    if isinstance(tensor, QuantizedTensor):
        return {"name": name, "shape": list(tensor.shape), "dtype": tensor.format, "group_size": tensor.group_size,
                "bytes": tensor.nbytes, "bits_per_weight": round(tensor.bits_per_weight, 4)}
    return {"name": name, "shape": list(tensor.shape), "dtype": str(tensor.dtype), "group_size": None,
            "bytes": int(tensor.nbytes), "bits_per_weight": 8.0 * tensor.itemsize}


def describe_model(model: Model) -> dict:
    tensors = [describe_tensor(name, t) for name, t in model.tensors.items() if not name.endswith(".scale")]
    linear = [t for t in tensors if t["name"].rsplit(".", 1)[-1] in LINEAR_NAMES]
    linear_weights = sum(t["shape"][0] * t["shape"][1] for t in linear)
    return {
        "format": model.source_format,
        "architecture": model.config.architecture,
        "parameters": model.n_params,
        "bytes": model.nbytes,
        "bits_per_weight": round(8.0 * model.nbytes / max(model.n_params, 1), 4),
        "linear_bits_per_weight": round(8.0 * sum(t["bytes"] for t in linear) / max(linear_weights, 1), 4),
        "packed": model.is_packed,
        "tokenizer": repr(model.tokenizer),
        "config": model.config.to_dict(),
        "metadata": dict(model.metadata),
        "tensors": tensors,
    }
