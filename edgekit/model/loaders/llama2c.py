"""llama2.c checkpoints (`run.c`'s legacy `.bin`), bitllama2.c ternary checkpoints and `tokenizer.bin`.

Legacy llama2.c layout (little endian): int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads,
vocab_size (negative: an untied classifier follows), seq_len; then float32 token embedding [V, D],
attention norms [L, D], wq [L, D, D], wk [L, KV, D], wv [L, KV, D], wo [L, D, D], FFN norms [L, D],
w1 [L, H, D], w2 [L, D, H], w3 [L, H, D], final norm [D], two legacy RoPE tables [seq, hd/2] each,
and the classifier [V, D] when untied. q/k rows use adjacent-pair RoPE and are reordered to the
canonical rotate-half layout on load.

bitllama2.c layout: see `../shared/README.md`: a 256-byte header (magic 'ak42', version 1, the seven
ints above, uint8 shared_classifier), float32 final norm [D] and embedding [V, D], then for each of
wq, wk, wv, wo, w1, w2, w3 and each layer: float32 scale and the ternary matrix, 4 weights per byte
(00 -> 0, 01 -> +1, 11 -> -1), in one of two bit orders.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from edgekit.errors import CorruptCheckpointError, ModelNotFoundError, TokenizerError, UnsupportedModelError
from edgekit.model.config import ModelConfig, RopeConfig
from edgekit.model.lazy import LazyArray
from edgekit.model.loaders.common import interleaved_to_half
from edgekit.model.model import Model
from edgekit.model.ternary import unpack_bitllama2c
from edgekit.model.tokenizer import HFTokenizer, build_spm_bpe_tokenizer

MAGIC_AK42 = 0x616B3432
BITLLAMA_HEADER_BYTES = 256
BIT_ORDERS = ("lsbfirst", "msbfirst")
_MAX_DIM = 1 << 20
_PER_LAYER = ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3")


def is_llama2c(path: Path) -> bool:
    """A .bin file whose header describes a llama2.c or bitllama2.c model of exactly this size."""
    if path.suffix != ".bin" or not path.is_file() or path.stat().st_size < 28:
        return False
    with open(path, "rb") as f:
        head = f.read(28)
    return struct.unpack("<I", head[:4])[0] == MAGIC_AK42 or _legacy_header_ok(head)


def _legacy_header_ok(head: bytes) -> bool:
    dim, hidden, layers, heads, kv, vocab, seq = struct.unpack("<7i", head)
    return all(0 < v < _MAX_DIM for v in (dim, hidden, layers, heads, kv, abs(vocab), seq))


def _config(path: Path, dim: int, hidden: int, layers: int, heads: int, kv: int, vocab: int, seq: int,
            tied: bool, **extra) -> ModelConfig:
    values = (dim, hidden, layers, heads, kv, vocab, seq)
    if not all(0 < v < _MAX_DIM for v in values) or dim % heads or heads % kv or (dim // heads) % 2:
        raise CorruptCheckpointError(
            f"header values (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len) = "
            f"{values} do not describe a valid model", path=path)
    return ModelConfig(architecture=extra.pop("architecture", "llama"), dim=dim, hidden_dim=hidden,
                       n_layers=layers, n_heads=heads, n_kv_heads=kv, vocab_size=vocab, max_seq_len=seq,
                       norm_eps=1e-5, rope=RopeConfig(theta=10000.0), tie_embeddings=tied, **extra)


def _check_size(path: Path, expected: int, what: str) -> None:
    actual = path.stat().st_size
    if actual != expected:
        raise CorruptCheckpointError(
            f"{what} header implies {expected} bytes but the file has {actual} "
            f"({'truncated' if actual < expected else 'trailing data'})", path=path,
            fix="re-download or re-export the checkpoint")


def load_llama2c(path: Path, tokenizer_path: Path | None = None, bit_order: str | None = None) -> Model:
    with open(path, "rb") as f:
        head = f.read(BITLLAMA_HEADER_BYTES)
    if len(head) >= 8 and struct.unpack("<I", head[:4])[0] == MAGIC_AK42:
        version = struct.unpack("<i", head[4:8])[0]
        if version != 1 or len(head) < BITLLAMA_HEADER_BYTES:
            raise UnsupportedModelError(
                f"llama2.c 'ak42' export version {version} is not supported (only the bitllama2.c "
                "ternary version 1 and the legacy version-0 .bin)", path=path,
                fix="export with llama2.c's --version 0 (legacy) format")
        config, tensors = _read_bitllama(path, head, bit_order)
        fmt = "bitllama2c"
    else:
        config, tensors = _read_legacy(path, head[:28])
        fmt = "llama2c"
    tokenizer = load_llama2c_tokenizer(_find_tokenizer(path, tokenizer_path, config.vocab_size))
    if tokenizer.vocab_size != config.vocab_size:
        raise TokenizerError(f"tokenizer has {tokenizer.vocab_size} tokens but the checkpoint's vocab_size "
                             f"is {config.vocab_size}", path=tokenizer.source,
                             fix="pass the tokenizer.bin this checkpoint was trained with")
    return Model(config=config, tensors=tensors, tokenizer=tokenizer, source=path, source_format=fmt,
                 metadata={"bit_order": bit_order} if bit_order else {})


def _read_legacy(path: Path, head: bytes) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    if len(head) < 28:
        raise CorruptCheckpointError("file is shorter than the 28-byte llama2.c header", path=path)
    dim, hidden, layers, heads, kv, vocab, seq = struct.unpack("<7i", head)
    tied = vocab > 0
    config = _config(path, dim, hidden, layers, heads, kv, abs(vocab), seq, tied)
    c = config
    sizes = [("tok_embeddings", (c.vocab_size, dim)), ("attn_norm", (layers, dim)),
             ("wq", (layers, c.q_dim, dim)), ("wk", (layers, c.kv_dim, dim)), ("wv", (layers, c.kv_dim, dim)),
             ("wo", (layers, dim, c.q_dim)), ("ffn_norm", (layers, dim)), ("w1", (layers, hidden, dim)),
             ("w2", (layers, dim, hidden)), ("w3", (layers, hidden, dim)), ("norm", (dim,)),
             ("freq_cis", (2, seq, c.head_dim // 2))]
    if not tied:
        sizes.append(("output", (c.vocab_size, dim)))
    n_floats = sum(int(np.prod(shape)) for _, shape in sizes)
    _check_size(path, 28 + 4 * n_floats, "llama2.c")
    tensors: dict[str, np.ndarray | LazyArray] = {}
    offset = 28  # bytes
    for name, shape in sizes:
        if name in _PER_LAYER:
            per_layer = shape[1:]
            for i in range(layers):
                tensors[f"layers.{i}.{name}"] = _matrix(path, offset, per_layer, name, config, f"layers.{i}.{name}")
                offset += 4 * int(np.prod(per_layer))
            continue
        if name != "freq_cis":
            tensors[name] = _matrix(path, offset, shape, name, config, name)
        offset += 4 * int(np.prod(shape))
    return config, tensors


def _matrix(path: Path, offset: int, shape: tuple[int, ...], kind: str, config: ModelConfig,
            name: str) -> np.ndarray | LazyArray:
    """A float32 block at `offset`: matrices lazily (q/k reordered when read), vectors now."""
    def read() -> np.ndarray:
        block = np.fromfile(path, dtype="<f4", count=int(np.prod(shape)), offset=offset).reshape(shape)
        return _canonical(block, kind, config)

    return LazyArray(shape, read, path, name) if len(shape) == 2 else read()


def _canonical(weight: np.ndarray, name: str, config: ModelConfig) -> np.ndarray:
    if name == "wq":
        return interleaved_to_half(weight, config.n_heads)
    if name == "wk":
        return interleaved_to_half(weight, config.n_kv_heads)
    return weight


def _read_bitllama(path: Path, head: bytes, bit_order: str | None) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    order = _resolve_bit_order(path, bit_order)
    dim, hidden, layers, heads, kv, vocab, seq = struct.unpack("<7i", head[8:36])
    tied = head[36] != 0
    if not tied:
        raise UnsupportedModelError("bitllama2.c checkpoints with an untied classifier are not supported",
                                    path=path)
    config = _config(path, dim, hidden, layers, heads, kv, vocab, seq, tied, architecture="bitllama2c",
                     ternary_weights=True, act_quant="int8_absmax", linear_input_norm=True)
    c = config
    shapes = {"wq": (c.q_dim, dim), "wk": (c.kv_dim, dim), "wv": (c.kv_dim, dim), "wo": (dim, c.q_dim),
              "w1": (hidden, dim), "w2": (dim, hidden), "w3": (hidden, dim)}
    for name, (rows, cols) in shapes.items():
        if (rows * cols) % 4:
            raise CorruptCheckpointError(f"{name} has {rows}x{cols} weights, not a multiple of 4", path=path)
    packed_bytes = sum(layers * (4 + r * k // 4) for r, k in shapes.values())
    _check_size(path, BITLLAMA_HEADER_BYTES + 4 * (dim + vocab * dim) + packed_bytes, "bitllama2.c")
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=BITLLAMA_HEADER_BYTES)
    floats = np.frombuffer(raw[:4 * (dim + vocab * dim)].tobytes(), dtype="<f4")
    tensors = {"norm": floats[:dim].copy(), "tok_embeddings": floats[dim:].reshape(vocab, dim).copy()}
    offset = 4 * (dim + vocab * dim)
    for name, (rows, cols) in shapes.items():
        for i in range(layers):
            scale = np.frombuffer(raw[offset:offset + 4].tobytes(), dtype="<f4")[0]
            offset += 4
            nbytes = rows * cols // 4
            weight = unpack_bitllama2c(np.asarray(raw[offset:offset + nbytes]), order, path,
                                         f"layers.{i}.{name}").reshape(rows, cols)
            offset += nbytes
            tensors[f"layers.{i}.{name}"] = _canonical(weight, name, config)
            tensors[f"layers.{i}.{name}.scale"] = np.array(scale, dtype=np.float32)
    return config, tensors


def _resolve_bit_order(path: Path, bit_order: str | None) -> str:
    if bit_order is not None:
        if bit_order not in BIT_ORDERS:
            raise UnsupportedModelError(f"bit_order {bit_order!r} is not one of {BIT_ORDERS}", path=path)
        return bit_order
    hints = [order for order in BIT_ORDERS if order in path.name.lower()]
    if len(hints) != 1:
        raise UnsupportedModelError(
            "bitllama2.c files do not record the order of the four 2-bit weights in each byte, and the "
            "file name does not say it", path=path,
            fix="pass bit_order='lsbfirst' or 'msbfirst' (CLI: --bit-order)")
    return hints[0]


def _find_tokenizer(path: Path, explicit: Path | None, vocab_size: int) -> Path:
    if explicit is not None:
        if not Path(explicit).is_file():
            raise ModelNotFoundError("tokenizer file not found", path=explicit)
        return Path(explicit)
    names = (f"tok{vocab_size}.bin", "tokenizer.bin")
    for folder in (path.parent, path.parent.parent):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise ModelNotFoundError(
        f"no llama2.c tokenizer ({' or '.join(names)}) next to the checkpoint or in its parent folder",
        path=path, fix="pass tokenizer=PATH (CLI: --tokenizer PATH)")


_LLAMA2C_SPECIALS = {"\n<s>\n": "<s>", "\n</s>\n": "</s>"}


def load_llama2c_tokenizer(path: Path) -> HFTokenizer:
    """llama2.c `tokenizer.bin`: int32 max_token_length, then per token float32 score, int32 length, bytes.

    llama2.c writes sentencepiece's `▁` as a plain space; it is mapped back so the vocabulary is a
    sentencepiece BPE vocabulary again. BOS is 1 and EOS is 2 (llama2.c's fixed ids); llama2.c models
    end a story by emitting BOS, so generation stops at either (as llama2.c's run.c does).
    """
    data = path.read_bytes()
    if len(data) < 4:
        raise TokenizerError("file is too short to be a llama2.c tokenizer", path=path)
    pieces: list[str] = []
    scores: list[float] = []
    max_len = struct.unpack_from("<i", data, 0)[0]
    offset = 4
    while offset < len(data):
        if offset + 8 > len(data):
            raise TokenizerError(f"truncated entry for token {len(pieces)}", path=path)
        score, length = struct.unpack_from("<fi", data, offset)
        offset += 8
        if not (0 < length <= max(max_len, 1)) or offset + length > len(data) or not np.isfinite(score):
            raise TokenizerError(f"token {len(pieces)} has a bad length {length} or score {score} "
                                 f"(max_token_length {max_len})", path=path)
        try:
            piece = data[offset:offset + length].decode("utf-8")
        except UnicodeDecodeError:
            raise TokenizerError(f"token {len(pieces)} is not valid UTF-8", path=path) from None
        offset += length
        # llama2.c exports BOS/EOS as "\n<s>\n" / "\n</s>\n" and sentencepiece's "▁" as a space.
        pieces.append(_LLAMA2C_SPECIALS.get(piece, piece.replace(" ", "▁")))
        scores.append(score)
    if len(pieces) < 3:
        raise TokenizerError(f"only {len(pieces)} tokens; a llama2.c tokenizer has <unk>, <s>, </s> and more",
                             path=path)
    return build_spm_bpe_tokenizer(pieces, scores, None, bos_id=1, eos_ids=(2, 1), unk_id=0, source=str(path))
