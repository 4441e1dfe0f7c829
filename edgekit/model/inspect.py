"""A plain-data description of a loaded model, for `edgekit inspect` and for tests."""

from __future__ import annotations

from edgekit.model.model import Model


def describe_model(model: Model) -> dict:
    tensors = [{"name": name, "shape": list(array.shape), "dtype": str(array.dtype), "bytes": int(array.nbytes)}
               for name, array in model.tensors.items()]
    return {
        "format": model.source_format,
        "architecture": model.config.architecture,
        "parameters": model.n_params,
        "bytes": sum(t["bytes"] for t in tensors),
        "tokenizer": repr(model.tokenizer),
        "config": model.config.to_dict(),
        "tensors": tensors,
    }
