"""The `edgekit quantize` workflow: load a checkpoint, quantize it, write an .edgekit file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.errors import ConfigError
from edgekit.model import load
from edgekit.model.loaders.edgekit_file import checkpoint_sha256, save_model
from edgekit.model.model import Model
from edgekit.quantize.config import QuantizeConfig
from edgekit.quantize.pipeline import Progress, quantize_model

if TYPE_CHECKING:
    from edgekit.quantize.qat import QATConfig


@dataclass(frozen=True)
class QuantizeResult:
    output: Path
    model: Model
    source_bytes: int
    packed_bytes: int


def quantize_checkpoint(source: str | Path, output: str | Path, config: "QuantizeConfig | QATConfig",
                        progress: Progress | None = None, *, text: str | Path | None = None,
                        checkpoint_dir: str | Path | None = None, **load_options) -> QuantizeResult:
    """Quantize `source` to `output` (written atomically: nothing appears unless every tensor succeeded).

    A `QATConfig` trains a fake-quantized student on `text` first (resumable through `checkpoint_dir`);
    the stored recipe is then the QAT config with `"method": "qat"`.
    """
    source, output = Path(source), Path(output)
    if output.suffix != ".edgekit":
        raise ConfigError(f"output {output} should end in .edgekit", fix=f"use -o {output.with_suffix('.edgekit')}")
    if output.resolve() == source.resolve():
        raise ConfigError(f"output {output} would overwrite the source checkpoint")
    model = load(source, **load_options)
    if isinstance(config, QuantizeConfig):
        packed, recipe = quantize_model(model, config, progress=progress), config.to_dict()
    else:
        if text is None:
            raise ConfigError("QAT needs training text", fix="pass --calib FILE (documents separated by "
                              "<|endoftext|>)")
        from edgekit.quantize.qat import quantize_qat  # torch: only imported for QAT

        packed = quantize_qat(model, text, config, checkpoint_dir=checkpoint_dir, progress=progress)
        recipe = {"method": "qat", **config.to_dict()}
    save_model(packed, output, recipe=recipe, source_sha256=checkpoint_sha256(source))
    return QuantizeResult(output=output, model=packed, source_bytes=model.nbytes, packed_bytes=packed.nbytes)
