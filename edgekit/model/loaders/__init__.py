"""Checkpoint format detection: one registry of loaders, tried in order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgekit.errors import EdgekitError, ModelNotFoundError, UnknownFormatError
from edgekit.model.loaders.edgekit_file import is_edgekit_file, load_edgekit
from edgekit.model.loaders.gguf_file import is_gguf, load_gguf
from edgekit.model.loaders.hf import is_hf_dir, load_hf
from edgekit.model.loaders.llama2c import is_llama2c, load_llama2c
from edgekit.model.model import Model


@dataclass(frozen=True)
class CheckpointFormat:
    name: str
    detect: Callable[[Path], bool]
    load: Callable[..., Model]
    describe: str


FORMATS: dict[str, CheckpointFormat] = {}


def register_format(fmt: CheckpointFormat) -> None:
    if fmt.name in FORMATS:
        raise ValueError(f"checkpoint format {fmt.name!r} is already registered")
    FORMATS[fmt.name] = fmt


register_format(CheckpointFormat("edgekit", is_edgekit_file, load_edgekit,
                                 ".edgekit packed model (safetensors + edgekit metadata)"))
register_format(CheckpointFormat("hf", is_hf_dir, load_hf, "Hugging Face directory (config.json + safetensors)"))
register_format(CheckpointFormat("gguf", is_gguf, load_gguf, "GGUF file (llama or bitnet architecture)"))
register_format(CheckpointFormat("llama2c", is_llama2c, load_llama2c,
                                 "llama2.c / bitllama2.c .bin (+ tokenizer.bin)"))


def detect_format(path: Path) -> str:
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError("no such file or directory", path=path,
                                 fix="check the path; edgekit reads HF directories, .gguf and llama2.c .bin files")
    for fmt in FORMATS.values():
        try:
            if fmt.detect(path):
                return fmt.name
        except OSError:
            continue
    kinds = "; ".join(f.describe for f in FORMATS.values())
    raise UnknownFormatError(f"not a checkpoint edgekit recognises (it reads: {kinds})", path=path)


def load(path: str | Path, *, tokenizer: str | Path | None = None, bit_order: str | None = None) -> Model:
    """Load any supported checkpoint into a `Model` (config, float32 tensors, tokenizer).

    `tokenizer` and `bit_order` only apply to llama2.c / bitllama2.c files.
    """
    path = Path(path)
    name = detect_format(path)
    if name == "llama2c":
        return load_llama2c(path, Path(tokenizer) if tokenizer else None, bit_order)
    if tokenizer is not None or bit_order is not None:
        raise EdgekitError(f"tokenizer= and bit_order= only apply to llama2.c checkpoints, not {name}", path=path)
    return FORMATS[name].load(path)
