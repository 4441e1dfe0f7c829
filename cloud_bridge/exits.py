"""Split plan and early-exit heads (CE-CoLLM, arXiv 2411.02829, section 3: exits on the edge partition).

An exit head after block l (l blocks run) is an RMSNorm weight [dim] and an LM head [vocab, dim], both
initialised from the model's final norm and output head and trained by distillation (`train.py`). The
edge runs blocks [0, split) with heads at `exits`; the cloud runs [split, n_layers) and the final head.
CE-CoLLM places the boundary at the deepest exit, so `split == max(exits)`: when the cloud cannot be
reached, the deepest exit answers every token (standalone mode).

Heads are stored with the packed model in the same `.edgekit` file as auxiliary tensors:

    exits.<l>.norm     float32 [dim]
    exits.<l>.output   [vocab, dim] packed (ek_i8, group 32) for packed models, float32 otherwise

and, for heads trained with an adapter (`--adapter-hidden H`), a residual SiLU MLP before the head:

    exits.<l>.adapter_norm   float32 [dim]
    exits.<l>.adapter_up     [H, dim]    packed like the output head
    exits.<l>.adapter_down   [dim, H]

Each head's calibrated threshold (the lowest score at which the cascade keeps the target top-1
agreement on held-out text, `train.calibrate_thresholds`) and the exit rule the thresholds apply to
(`rules.py`: max-softmax, margin or a learned confidence predictor, with its parameters) are stored in
the metadata (`bridge_exits`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import ConfigError, ShapeMismatchError, UnsupportedModelError
from edgekit.formats import QuantizedTensor
from edgekit.kernels import PreparedLinear, prepare_linear
from edgekit.model.loaders.edgekit_file import read_aux_tensors, save_model
from edgekit.model.model import Model
from edgekit.model.reference import rms_norm

from edgekit.cloud_bridge.rules import ExitRule, MaxSoftmax, rule_from_json

EXIT_PREFIX = "exits."
HEADS_METADATA = "bridge_exits"


@dataclass(frozen=True)
class SplitPlan:
    """Edge blocks [0, split) with exit heads after the blocks in `exits`; cloud blocks [split, n_layers)."""

    exits: tuple[int, ...]
    n_layers: int

    def __post_init__(self) -> None:
        exits = tuple(self.exits)
        if not exits:
            raise ConfigError("no exit layers given", fix="pass --exits, e.g. --exits 2,4")
        if list(exits) != sorted(set(exits)):
            raise ConfigError(f"exit layers {list(exits)} must be distinct and ascending", fix="e.g. --exits 2,4")
        if exits[0] < 1 or exits[-1] >= self.n_layers:
            raise ConfigError(f"exit layers {list(exits)} must lie in [1, {self.n_layers - 1}] for a "
                              f"{self.n_layers}-layer model (the cloud keeps at least one layer)",
                              fix=f"choose exits between 1 and {self.n_layers - 1}")

    @property
    def split(self) -> int:
        return self.exits[-1]

    @classmethod
    def parse(cls, text: str, n_layers: int) -> "SplitPlan":
        try:
            exits = tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise ConfigError(f"--exits {text!r} is not a comma-separated list of layer numbers",
                              fix="e.g. --exits 2,4") from None
        return cls(exits, n_layers)


@dataclass
class Adapter:
    """h + down(silu(up(rms_norm(h) * norm))): norm [dim], up [H, dim], down [dim, H] (packed or float32)."""

    norm: np.ndarray
    up: QuantizedTensor | np.ndarray
    down: QuantizedTensor | np.ndarray


@dataclass
class ExitHead:
    """norm [dim] float32 and output [vocab, dim] (packed or float32); logits = output(rms_norm(h) * norm),
    with h first passed through the optional adapter. `threshold`: the calibrated exit threshold, if any."""

    layer: int
    norm: np.ndarray
    output: QuantizedTensor | np.ndarray
    eps: float
    adapter: Adapter | None = None
    threshold: float | None = None
    _kernels: dict = field(default_factory=dict)

    def _linear(self, name: str, weight, x: np.ndarray) -> np.ndarray:
        if name not in self._kernels:
            self._kernels[name] = prepare_linear(weight, "none")
        return self._kernels[name](np.ascontiguousarray(x, dtype=np.float32))

    def logits(self, h: np.ndarray) -> np.ndarray:
        """h [T, dim] residual stream after `layer` blocks -> logits [T, vocab] on edgekit's kernels."""
        if self.adapter is not None:
            a = self._linear("up", self.adapter.up, rms_norm(h, self.adapter.norm, self.eps))     # [T, H]
            h = h + self._linear("down", self.adapter.down, a / (1.0 + np.exp(-a)))             # silu, [T, dim]
        return self._linear("output", self.output, rms_norm(h, self.norm, self.eps))


def confidence(logits: np.ndarray) -> np.ndarray:
    """Max softmax probability per row: logits [T, vocab] -> [T] (the max-softmax rule's score)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return (1.0 / np.exp(z).sum(axis=-1)).astype(np.float32)


def heads_to_aux(heads: dict[int, ExitHead]) -> dict[str, np.ndarray | QuantizedTensor]:
    aux: dict[str, np.ndarray | QuantizedTensor] = {}
    for layer, head in sorted(heads.items()):
        aux[f"{EXIT_PREFIX}{layer}.norm"] = head.norm.astype(np.float32)
        aux[f"{EXIT_PREFIX}{layer}.output"] = head.output
        if head.adapter is not None:
            aux[f"{EXIT_PREFIX}{layer}.adapter_norm"] = head.adapter.norm.astype(np.float32)
            aux[f"{EXIT_PREFIX}{layer}.adapter_up"] = head.adapter.up
            aux[f"{EXIT_PREFIX}{layer}.adapter_down"] = head.adapter.down
    return aux


def save_with_exits(model: Model, heads: dict[int, ExitHead], path: str | Path, report: dict | None = None,
                    rule: ExitRule | None = None) -> Path:
    """The packed model plus its exit heads and exit rule (default: the one `train_exits` put in the report,
    else max-softmax), in one `.edgekit` file (written atomically)."""
    if rule is None and report is not None and report.get("rule") is not None:
        rule = rule_from_json(report["rule"])
    thresholds = {str(l): h.threshold for l, h in sorted(heads.items()) if h.threshold is not None}
    model.metadata[HEADS_METADATA] = json.dumps({"exits": sorted(heads), "thresholds": thresholds,
                                                 "rule": (rule or MaxSoftmax()).to_json(), "report": report})
    return save_model(model, path, recipe=_recipe(model), aux=heads_to_aux(heads))


def _recipe(model: Model) -> dict | None:
    raw = model.metadata.get("recipe")
    return json.loads(raw) if raw else None


def load_exit_heads(model: Model, path: str | Path | None = None) -> dict[int, ExitHead]:
    """The exit heads stored in `path` (default: the model's own .edgekit file), checked against the model."""
    path = Path(path or model.source)
    if model.source_format != "edgekit" and path == Path(model.source):
        raise UnsupportedModelError("this checkpoint has no early-exit heads (only .edgekit files store them)",
                                    path=path, fix="train them: edgekit bridge train-exits MODEL --text FILE "
                                                   "--exits 2,4 -o OUT.edgekit")
    aux = read_aux_tensors(path)
    layers = sorted({int(name.split(".")[1]) for name in aux if name.startswith(EXIT_PREFIX)})
    if not layers:
        raise UnsupportedModelError("the file has no early-exit heads", path=path,
                                    fix="train them: edgekit bridge train-exits MODEL --text FILE --exits 2,4 "
                                        "-o OUT.edgekit")
    raw = model.metadata.get(HEADS_METADATA) if path == Path(model.source) else None
    thresholds = json.loads(raw).get("thresholds", {}) if raw else {}
    heads = {layer: _checked_head(model, aux, layer, path) for layer in layers}
    for layer, head in heads.items():
        head.threshold = thresholds.get(str(layer))
    return heads


def load_exit_rule(model: Model) -> ExitRule:
    """The exit rule stored with the model's exit heads (max-softmax for files that store none)."""
    raw = model.metadata.get(HEADS_METADATA)
    return rule_from_json(json.loads(raw).get("rule") if raw else None)


def calibrated_thresholds(heads: dict[int, ExitHead]) -> dict[int, float] | None:
    """{layer: threshold} when every head has a calibrated threshold, else None."""
    if not heads or any(h.threshold is None for h in heads.values()):
        return None
    return {layer: float(h.threshold) for layer, h in heads.items()}


def _checked_head(model: Model, aux: dict, layer: int, path: Path) -> ExitHead:
    c = model.config
    norm, output = aux.get(f"{EXIT_PREFIX}{layer}.norm"), aux.get(f"{EXIT_PREFIX}{layer}.output")
    if norm is None or output is None:
        raise ShapeMismatchError(f"exit head {layer} lacks its norm or output tensor", path=path)
    if tuple(norm.shape) != (c.dim,) or tuple(output.shape) != (c.vocab_size, c.dim):
        raise ShapeMismatchError(f"exit head {layer}: norm {tuple(norm.shape)} / output {tuple(output.shape)} do "
                                 f"not fit dim {c.dim}, vocab {c.vocab_size}", path=path,
                                 fix="train the heads for this model")
    if not 1 <= layer < c.n_layers:
        raise ShapeMismatchError(f"exit head after layer {layer} is outside [1, {c.n_layers - 1}]", path=path)
    adapter = _checked_adapter(c, aux, layer, path)
    return ExitHead(layer, np.asarray(norm, dtype=np.float32), output, c.norm_eps, adapter)


def _checked_adapter(c, aux: dict, layer: int, path: Path) -> Adapter | None:
    names = [f"{EXIT_PREFIX}{layer}.adapter_{part}" for part in ("norm", "up", "down")]
    present = [aux.get(name) for name in names]
    if all(p is None for p in present):
        return None
    norm, up, down = present
    if norm is None or up is None or down is None or tuple(norm.shape) != (c.dim,) or up.shape[1] != c.dim \
            or tuple(down.shape) != (c.dim, up.shape[0]):
        raise ShapeMismatchError(f"exit head {layer}: the adapter tensors are missing or do not fit dim {c.dim}",
                                 path=path, fix="train the heads for this model")
    return Adapter(np.asarray(norm, dtype=np.float32), up, down)
