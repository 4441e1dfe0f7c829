"""Package data: the built-in default model (`default.edgekit`), built by
`python -m edgekit.quantize.default_model --out edgekit/data/default.edgekit`; see `edgekit.quantize.default_model`."""
