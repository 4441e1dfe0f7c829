"""The `edgekit quantize` workflow: load a checkpoint, quantize it, write an .edgekit file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import ConfigError
from edgekit.model import load
from edgekit.model.loaders.edgekit_file import checkpoint_sha256, save_model
from edgekit.model.model import Model
from edgekit.quantize.config import QuantizeConfig
from edgekit.quantize.pipeline import Progress, quantize_model


@dataclass(frozen=True)
class QuantizeResult:
    output: Path
    model: Model
    source_bytes: int
    packed_bytes: int


def quantize_checkpoint(source: str | Path, output: str | Path, config: QuantizeConfig,
                        progress: Progress | None = None, **load_options) -> QuantizeResult:
    """Quantize `source` to `output` (written atomically: nothing appears unless every tensor succeeded)."""
    source, output = Path(source), Path(output)
    if output.suffix != ".edgekit":
        raise ConfigError(f"output {output} should end in .edgekit", fix=f"use -o {output.with_suffix('.edgekit')}")
    if output.resolve() == source.resolve():
        raise ConfigError(f"output {output} would overwrite the source checkpoint")
    model = load(source, **load_options)
    packed = quantize_model(model, config, progress=progress)
    save_model(packed, output, recipe=config.to_dict(), source_sha256=checkpoint_sha256(source))
    return QuantizeResult(output=output, model=packed, source_bytes=model.nbytes, packed_bytes=packed.nbytes)
