"""The typed errors edgekit raises.

Every error a user can cause (a missing file, a corrupted checkpoint, an unknown architecture, a
mismatch between weights, config and tokenizer) is an `EdgekitError` subclass whose message names the
file, field or value at fault and says how to fix it. The CLI's single error boundary prints
`str(error)` without a traceback and exits 1 (`EDGEKIT_DEBUG=1` shows the traceback).
"""

from __future__ import annotations

from pathlib import Path


class EdgekitError(Exception):
    """Base class of every error edgekit raises on purpose.

    `fix` is a one-line hint the CLI prints under the message.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        self.path = Path(path) if path is not None else None
        self.fix = fix
        text = f"{self.path}: {message}" if self.path is not None else message
        super().__init__(text)


class ModelNotFoundError(EdgekitError):
    """A checkpoint path, or a file a checkpoint needs, does not exist."""


class UnknownFormatError(EdgekitError):
    """A path exists but is not a checkpoint format edgekit can detect."""


class CorruptCheckpointError(EdgekitError):
    """A checkpoint file is truncated, damaged, or internally inconsistent."""


class UnsupportedModelError(EdgekitError):
    """A well-formed checkpoint uses an architecture, option or tensor type edgekit does not support."""


class ConfigError(EdgekitError):
    """A configuration value is missing, has the wrong type, or is out of range."""


class ShapeMismatchError(EdgekitError):
    """A tensor's shape disagrees with the model config (or the tokenizer's vocabulary)."""


class TokenizerError(EdgekitError):
    """A tokenizer file is missing, damaged, or disagrees with the model."""


class GenerationError(EdgekitError):
    """Bad arguments to generation or evaluation (empty prompt, context overflow, bad sampling values)."""


class QuantizationError(EdgekitError):
    """A tensor cannot be quantized as asked (NaN/Inf weights, a format that cannot hold it, too little
    calibration text)."""
