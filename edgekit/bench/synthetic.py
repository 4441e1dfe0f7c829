"""Synthetic models at real shapes: random packed codes written straight into `QuantizedTensor`s.

Speed depends on shapes and formats, not on trained values, so benchmarks use random weights (never for
quality). Codes are drawn per tensor as small integers and packed at once: the largest temporary is one
int16 matrix ([rows, cols], e.g. 6912 x 2560 = 35 MB), never a float copy of the model.

Files are cached in the work dir under a name carrying the recipe hash (shape, format, seed, generator
version) and reused when it matches; `.edgekit` and GGUF writes are atomic (temporary file + rename), so
an interrupted build leaves nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from edgekit.bench.config import WEIGHT_FORMATS, ShapeSpec
from edgekit.formats import QuantizedTensor, get_format, pack_values
from edgekit.model.model import LINEAR_NAMES, Model, expected_shapes
from edgekit.model.tokenizer import (
    TOKEN_BYTE,
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    TOKEN_UNKNOWN,
    build_spm_bpe_tokenizer,
)

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
EMBEDDING_FORMAT = ("ek_i8", 32)     # tied/untied embedding and output: int8 blocks of 32 (GGUF Q8_0)
GGUF_TYPES = {"t2": "TQ2_0", "t1": "TQ1_0", "i4": "Q4_0", "i8": "Q8_0"}


def recipe(shape: ShapeSpec, weights: str, seed: int) -> dict:
    return {"shape": asdict(shape), "weights": weights, "formats": WEIGHT_FORMATS[weights],
            "embedding": EMBEDDING_FORMAT, "seed": seed, "generator": GENERATOR_VERSION}


def recipe_hash(shape: ShapeSpec, weights: str, seed: int) -> str:
    return hashlib.sha256(json.dumps(recipe(shape, weights, seed), sort_keys=True).encode()).hexdigest()[:16]


def synthetic_tokenizer(vocab_size: int):
    """A sentencepiece-style vocabulary of exactly `vocab_size` pieces (<unk>, <s>, </s>, 256 byte pieces,
    then filler pieces), so GGUF export and llama.cpp accept the model; benchmarks feed token ids directly."""
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL] + [TOKEN_BYTE] * 256
    if vocab_size < len(pieces) + 1:
        raise ValueError(f"vocab_size {vocab_size} is too small for a synthetic vocabulary")
    fillers = vocab_size - len(pieces)
    pieces += [f"▁w{i}" for i in range(fillers)]
    types += [TOKEN_NORMAL] * fillers
    scores = [0.0] * 259 + [-float(i) for i in range(fillers)]
    return build_spm_bpe_tokenizer(pieces, scores, types, bos_id=1, eos_ids=[2], unk_id=0,
                                   source=f"synthetic vocabulary of {vocab_size}")


def random_quantized(rng: np.random.Generator, fmt_name: str, group_size: int, shape: tuple[int, int],
                     scale: float) -> QuantizedTensor:
    """Random codes of `fmt_name` packed into [rows, cols]; values * scales have an RMS near `scale`."""
    fmt = get_format(fmt_name)
    rows, cols = shape
    if fmt.kind == "ternary":
        values = rng.integers(-1, 2, size=shape, dtype=np.int8)
        scales = np.full((1, 1), scale / math.sqrt(2 / 3), np.float32)        # E[trit^2] = 2/3
        return pack_values(fmt_name, values, scales, group_size)
    low, high = fmt.code_range()
    values = rng.integers(low, high + 1, size=shape, dtype=np.int16)
    groups = cols // group_size if group_size > 0 else 1
    rms = math.sqrt((high - low) * (high - low + 2) / 12)                     # RMS of a uniform integer range
    scales = np.full((rows, groups), scale / rms, np.float16)
    return pack_values(fmt_name, values, scales, group_size)


def build_model(shape: ShapeSpec, weights: str, seed: int = 0) -> Model:
    """A packed `Model` with random weights: linear layers in `weights`' format, embeddings int8 g32.

    Scales keep activations near unit RMS (1/sqrt(fan_in) per linear), so no path runs into inf/NaN
    or denormals, which would change speed."""
    fmt_name, group_size = WEIGHT_FORMATS[weights]
    config = shape.model_config(ternary=weights in ("t2", "t1"))
    tensors: dict = {}
    for index, (name, dims) in enumerate(expected_shapes(config).items()):
        if name.endswith(".scale"):
            continue  # packed ternary tensors carry their scale inside
        rng = np.random.default_rng([seed, index])
        kind = name.rsplit(".", 1)[-1]
        if kind in LINEAR_NAMES:
            tensors[name] = random_quantized(rng, fmt_name, group_size, dims, 1.0 / math.sqrt(dims[1]))
        elif name in ("tok_embeddings", "output"):
            tensors[name] = random_quantized(rng, *EMBEDDING_FORMAT, dims, 1.0 if name == "tok_embeddings"
                                             else 1.0 / math.sqrt(dims[1]))
        else:
            tensors[name] = np.ones(dims, np.float32)                          # norms
    return Model(config=config, tensors=tensors, tokenizer=synthetic_tokenizer(config.vocab_size),
                 source=Path(f"synthetic:{shape.name}-{weights}"), source_format="synthetic",
                 metadata={"synthetic": "random weights for speed measurements only"})


def llama_architecture_view(model: Model) -> Model:
    """The same packed weights under llama.cpp's `llama` architecture: BitNet's sub-norms, squared ReLU and
    int8 activations dropped (the GGUF writer cannot express them). They are O(dim) element-wise work per
    token, so the bytes read and the matmul work per token are unchanged."""
    config = replace(model.config, sub_norms=False, activation="silu", act_quant="none", architecture="llama")
    tensors = {k: v for k, v in model.tensors.items() if not k.endswith(("attn_sub_norm", "ffn_sub_norm"))}
    return Model(config=config, tensors=tensors, tokenizer=model.tokenizer, source=model.source,
                 source_format=model.source_format, metadata=model.metadata)


def synthetic_paths(work_dir: Path, shape: ShapeSpec, weights: str, seed: int) -> tuple[Path, Path]:
    stem = f"{shape.name}-{weights}-{recipe_hash(shape, weights, seed)}"
    return Path(work_dir) / f"{stem}.edgekit", Path(work_dir) / f"{stem}.gguf"


ONNX_EXPORT_VERSION = 2     # bump when the ONNX graph or its options change, so cached exports are rebuilt


def ensure_onnx(edgekit_path: Path) -> Path:
    """The cached ONNX export (MatMulNBits, accuracy_level 4) of a synthetic `.edgekit` file, built if missing.

    The export directory is written atomically, so an interrupted build leaves nothing that looks finished."""
    from edgekit.export.onnx_graph import OnnxGraphConfig
    from edgekit.export.onnx_writer import export_onnx
    from edgekit.model.loaders.edgekit_file import load_edgekit

    from edgekit.runtime.native import resolve_act_passes

    # The export's int8 activation passes follow the native engine's ($EDGEKIT_ACT_PASSES), so both back ends do
    # the same integer work on float-activation models in one bench run; one pass keeps the old directory name.
    passes = resolve_act_passes(None)
    suffix = "" if passes == 1 else f"-{passes}pass"
    path = edgekit_path.with_name(f"{edgekit_path.stem}-onnx{ONNX_EXPORT_VERSION}{suffix}")
    if not path.exists():
        log.info("exporting %s to ONNX", edgekit_path.name)
        config = OnnxGraphConfig(accuracy_level=4, activation_passes=passes)
        export_onnx(load_edgekit(edgekit_path), path, config, name=edgekit_path.stem)
    return path


def ensure_synthetic(work_dir: Path, shape: ShapeSpec, weights: str, seed: int = 0, gguf: bool = False) -> dict:
    """Paths of the cached `.edgekit` (and, with `gguf`, `.gguf`) files for this recipe, built if missing."""
    from edgekit.export.gguf_writer import export_gguf
    from edgekit.model.loaders.edgekit_file import save_model

    edgekit_path, gguf_path = synthetic_paths(work_dir, shape, weights, seed)
    need_gguf = gguf and not gguf_path.exists()
    model = None
    if not edgekit_path.exists() or need_gguf:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        log.info("building synthetic %s %s weights in %s", shape.name, weights, work_dir)
        model = build_model(shape, weights, seed)
    if not edgekit_path.exists():
        save_model(model, edgekit_path, recipe=recipe(shape, weights, seed))
    if need_gguf:
        export_gguf(llama_architecture_view(model), gguf_path, name=f"synthetic-{shape.name}-{weights}")
    return {"edgekit": edgekit_path, "gguf": gguf_path if gguf else None}
