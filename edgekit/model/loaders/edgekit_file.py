"""The `.edgekit` file: a packed model in one safetensors file with JSON metadata.

Stored entries (safetensors names):

    <name>                 float32 tensors kept in float (norms, biases, rope factors)
    <name>::data           uint8 [rows, row_bytes]   packed codes of a QuantizedTensor
    <name>::scales         float16/float32 scales
    <name>::zeros          uint8 zero points (zero-point formats only)
    __tokenizer__          uint8 bytes: tokenizer.json text or a serialized sentencepiece model
    __aux__.<name>[::...]  auxiliary tensors stored with the model but not part of it (the cloud bridge's
                           early-exit heads); `load_edgekit` skips them, `read_aux_tensors` returns them

The `__metadata__` key "edgekit" holds JSON: format_version, the ModelConfig, the tokenizer spec, each
packed tensor's format / shape / group size, the sha256 of every stored entry, the quantization recipe
and the source checkpoint (path, format, sha256). Writes go to a temporary file in the target folder
and are renamed into place, so an interrupted write leaves no partial output; every entry's checksum is
verified on load and a mismatch names the tensor.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import CorruptCheckpointError, EdgekitError, UnsupportedModelError
from edgekit.fileio import atomic_path
from edgekit.formats import QuantizedTensor
from edgekit.formats.aligned import aligned, aligned_empty
from edgekit.model.config import ModelConfig
from edgekit.model.model import Model
from edgekit.model.tokenizer import tokenizer_from_blob, tokenizer_to_blob

FILE_FORMAT_VERSION = 1
SUFFIX = ".edgekit"
_SEP = "::"
_TOKENIZER = "__tokenizer__"
_AUX = "__aux__."
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
           "BOOL": np.bool_}


def sha256_bytes(array: np.ndarray) -> str:
    """sha256 of the array's bytes in C order (hashed through a buffer view: no copy of a contiguous array)."""
    return hashlib.sha256(np.ascontiguousarray(array).reshape(-1).view(np.uint8)).hexdigest()


def checkpoint_sha256(path: Path) -> str:
    """sha256 of a checkpoint file, or of a directory's files (relative names and contents, sorted)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def is_edgekit_file(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size < 16:
        return False
    with open(path, "rb") as f:
        head = f.read(4096)
    return head[8:9] == b"{" and b'"edgekit"' in head or path.suffix == SUFFIX


def _add_entries(entries: dict[str, np.ndarray], described: dict[str, Any], name: str, tensor) -> None:
    if isinstance(tensor, QuantizedTensor):
        entries[name + _SEP + "data"] = tensor.data
        entries[name + _SEP + "scales"] = tensor.scales
        if tensor.zeros is not None:
            entries[name + _SEP + "zeros"] = tensor.zeros
        described[name] = {"format": tensor.format, "shape": list(tensor.shape), "group_size": tensor.group_size}
    else:
        entries[name] = np.ascontiguousarray(tensor, dtype=np.float32)


def save_model(model: Model, path: str | Path, *, recipe: dict | None = None, source_sha256: str | None = None,
               aux: dict[str, np.ndarray | QuantizedTensor] | None = None) -> Path:
    """Write `model` (packed or float) to `path` atomically, with optional auxiliary tensors `aux`."""
    from safetensors.numpy import save_file

    path = Path(path)
    entries: dict[str, np.ndarray] = {}
    described: dict[str, Any] = {}
    for name, tensor in model.tensors.items():
        _add_entries(entries, described, name, tensor)
    for name, tensor in (aux or {}).items():
        _add_entries(entries, described, _AUX + name, tensor)
    spec, blob = tokenizer_to_blob(model.tokenizer)
    entries[_TOKENIZER] = np.frombuffer(blob, dtype=np.uint8)
    meta = {
        "format_version": FILE_FORMAT_VERSION,
        "config": model.config.to_dict(),
        "tokenizer": spec,
        "packed": described,
        "sha256": {key: sha256_bytes(value) for key, value in entries.items()},
        "recipe": recipe,
        "source": {"path": str(model.source), "format": model.source_format, "sha256": source_sha256},
        "metadata": model.metadata,
    }
    with atomic_path(path) as tmp:
        save_file(entries, str(tmp), metadata={"edgekit": json.dumps(meta)})
    return path


def read_metadata(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            raw = (handle.metadata() or {}).get("edgekit")
    except Exception as exc:
        raise CorruptCheckpointError(f"not a readable .edgekit file ({type(exc).__name__}: {exc})", path=path,
                                     fix="re-create it with `edgekit quantize`") from None
    if raw is None:
        raise CorruptCheckpointError("safetensors file without edgekit metadata", path=path)
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CorruptCheckpointError(f"edgekit metadata is not valid JSON ({exc})", path=path) from None
    if not isinstance(meta, dict):
        raise CorruptCheckpointError("edgekit metadata is not a JSON object", path=path)
    version = meta.get("format_version")
    if version != FILE_FORMAT_VERSION:
        raise UnsupportedModelError(f".edgekit format version {version!r} is not supported "
                                    f"(this edgekit reads version {FILE_FORMAT_VERSION})", path=path,
                                    fix="upgrade edgekit or re-quantize with this version")
    return meta


def read_entries(path: Path, keep=lambda name: True) -> dict[str, np.ndarray]:
    """The stored entries whose name passes `keep`, each read from the file straight into its own
    cache-line-aligned array (the kernels bind packed data as it is).

    safetensors' load_file copies every tensor out of a memory map of the whole file, and the mapped pages count
    in RSS until it returns: loading peaked at twice the file's size (a 512 MiB file: 1057 MiB of RSS), and its
    arrays are not cache-line aligned, so packed data were copied once more. Reading each entry with readinto into
    its final aligned buffer peaks at the file's size (548 MiB). The layout is the one
    safetensors documents (an 8-byte little-endian header length, a JSON header giving each entry's dtype, shape
    and [begin, end) byte offsets into the data that follows); `read_metadata` has already had safe_open
    validate the header."""
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
            base, size = 8 + header_len, path.stat().st_size
            entries = {}
            for name, info in header.items():
                if name == "__metadata__" or not keep(name):
                    continue
                dtype, shape = np.dtype(_DTYPES[info["dtype"]]), tuple(int(d) for d in info["shape"])
                begin, end = (int(o) for o in info["data_offsets"])
                if end - begin != int(np.prod(shape)) * dtype.itemsize or base + end > size:
                    raise ValueError(f"entry {name!r}: offsets {begin}..{end} do not hold {dtype} {shape}")
                buf = aligned_empty(end - begin)
                f.seek(base + begin)
                if f.readinto(memoryview(buf)) != end - begin:
                    raise ValueError(f"entry {name!r} is truncated")
                entries[name] = buf.view(dtype).reshape(shape)
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise CorruptCheckpointError(f"tensor data unreadable ({type(exc).__name__}: {exc})", path=path,
                                     fix="the file is damaged; re-create it with `edgekit quantize`") from None
    return entries


def load_edgekit(path: Path) -> Model:
    meta = read_metadata(path)
    entries = read_entries(path)
    try:
        return _build(path, meta, entries)
    except EdgekitError as exc:
        if exc.path is None:
            raise type(exc)(str(exc), path=path, fix=exc.fix) from None
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptCheckpointError(f"inconsistent metadata ({type(exc).__name__}: {exc})", path=path) from None


def _build(path: Path, meta: dict, entries: dict[str, np.ndarray]) -> Model:
    sums = meta["sha256"]
    if set(sums) != set(entries):
        raise CorruptCheckpointError(f"entries {sorted(set(sums) ^ set(entries))[:5]} are missing or unlisted",
                                     path=path)
    for key, array in entries.items():
        if sha256_bytes(array) != sums[key]:
            raise CorruptCheckpointError(f"checksum mismatch in tensor {key.split(_SEP)[0]!r} ({key})", path=path,
                                         fix="the file is damaged; re-create it with `edgekit quantize`")
    tensors = {name: t for name, t in _tensors(meta, entries).items() if not name.startswith(_AUX)}
    tokenizer = tokenizer_from_blob(meta["tokenizer"], entries[_TOKENIZER].tobytes(), str(path))
    metadata = {str(k): str(v) for k, v in (meta.get("metadata") or {}).items()}
    if meta.get("recipe") is not None:
        metadata["recipe"] = json.dumps(meta["recipe"])
    metadata["source"] = json.dumps(meta.get("source"))
    return Model(config=ModelConfig.from_dict(meta["config"]), tensors=tensors, tokenizer=tokenizer, source=path,
                 source_format="edgekit", metadata=metadata)


def _tensors(meta: dict, entries: dict[str, np.ndarray]) -> dict[str, np.ndarray | QuantizedTensor]:
    """Every stored tensor (model and auxiliary) by name, packed ones rebuilt as QuantizedTensors (their data
    moved out of `entries` into cache-line-aligned arrays one at a time, so the file's copy is freed as it goes)."""
    tensors: dict[str, np.ndarray | QuantizedTensor] = {}
    for name, info in meta["packed"].items():
        tensors[name] = QuantizedTensor(format=str(info["format"]), shape=tuple(int(d) for d in info["shape"]),
                                        group_size=int(info["group_size"]),
                                        data=aligned(entries.pop(name + _SEP + "data")),   # aligned as read
                                        scales=entries[name + _SEP + "scales"],
                                        zeros=entries.get(name + _SEP + "zeros"))
    for key, array in entries.items():
        if _SEP not in key and key != _TOKENIZER:
            tensors[key] = array
    return tensors


def read_aux_tensors(path: str | Path) -> dict[str, np.ndarray | QuantizedTensor]:
    """The auxiliary tensors saved with `save_model(..., aux=...)` (names without the prefix; checksums
    verified like the model's), or {} for a file without any."""
    path = Path(path)
    meta = read_metadata(path)
    aux = read_entries(path, keep=lambda name: name.startswith(_AUX))
    for key, array in aux.items():
        if sha256_bytes(array) != meta["sha256"].get(key):
            raise CorruptCheckpointError(f"checksum mismatch in auxiliary tensor {key!r}", path=path,
                                         fix="the file is damaged; re-create it")
    try:
        packed = {"packed": {k: v for k, v in meta["packed"].items() if k.startswith(_AUX)}}
        return {name[len(_AUX):]: t for name, t in _tensors(packed, aux).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptCheckpointError(f"inconsistent auxiliary metadata ({type(exc).__name__}: {exc})",
                                     path=path) from None
