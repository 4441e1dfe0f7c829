"""Bit-exact packed weight formats with numpy reference pack/unpack (see `layouts.py` for the table)."""

from edgekit.formats import layouts  # noqa: F401  (registers the formats)
from edgekit.formats.base import (FORMATS, PER_CHANNEL, PER_TENSOR, PackedFormat, QuantizedTensor, get_format,
                                  pack_values, padded_cols)

__all__ = ["FORMATS", "PER_CHANNEL", "PER_TENSOR", "PackedFormat", "QuantizedTensor", "get_format", "pack_values",
           "padded_cols"]
