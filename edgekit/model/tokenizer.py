"""Tokenizers: one small interface over the libraries that already do the work.

- `tokenizer.json` (Hugging Face): loaded by `tokenizers`.
- `tokenizer.model` (sentencepiece): loaded by `sentencepiece`.
- Vocabularies that arrive as piece lists with scores (llama2.c `tokenizer.bin`, GGUF `llama` vocab) or
  with BPE merges (GGUF `gpt2` vocab) are turned into a `tokenizers` BPE model. For score-ranked
  sentencepiece BPE vocabularies the merges are derived from the scores exactly as transformers'
  `LlamaConverter` does (a pair merges with the rank of the piece it makes), which reproduces
  sentencepiece's and llama.cpp's SPM segmentation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from edgekit.errors import TokenizerError

# GGUF / llama.cpp token types (llama_token_type): 1 normal, 2 unknown, 3 control, 4 user defined,
# 5 unused, 6 byte.
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# Pre-tokenizer regexes for GGUF `gpt2` vocabularies, by `tokenizer.ggml.pre` (as in llama.cpp).
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_PRE_SPLITS = {"default": _GPT2_SPLIT, "gpt-2": _GPT2_SPLIT, "llama-bpe": _LLAMA3_SPLIT,
                   "llama3": _LLAMA3_SPLIT, "smollm": _GPT2_SPLIT, "qwen2": _QWEN2_SPLIT}


class Tokenizer:
    """Text <-> token ids, with the model's BOS/EOS ids.

    `encode(text)` prepends BOS when the tokenizer's convention does (`add_bos`); pass `add_bos`
    to override. `decode(ids)` drops BOS/EOS and other control tokens. `eos_ids` are all the ids that
    end generation (the first is the EOS proper).
    """

    def __init__(self, *, vocab_size: int, bos_id: int | None, eos_ids: Sequence[int], add_bos: bool,
                 source: str):
        self.vocab_size = vocab_size
        self.bos_id = bos_id
        self.eos_ids = tuple(eos_ids)
        self.add_bos = add_bos and bos_id is not None
        self.source = source

    @property
    def eos_id(self) -> int | None:
        return self.eos_ids[0] if self.eos_ids else None

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids = self._encode(text)
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._decode([int(i) for i in ids])

    def _encode(self, text: str) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode(self, ids: list[int]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
                f"eos_ids={self.eos_ids}, source={self.source!r})")


class HFTokenizer(Tokenizer):
    """A `tokenizers.Tokenizer` (from tokenizer.json or built from a GGUF/llama2.c vocabulary).

    `vocab` keeps the vocabulary it was built from, for exporters that need it again (GGUF): for
    sentencepiece-style vocabularies {"model": "llama", "tokens", "scores", "types", "add_space_prefix"},
    for byte-level BPE {"model": "gpt2", "tokens", "merges", "types", "pre"}; None for tokenizer.json.
    """

    def __init__(self, backend, *, bos_id: int | None, eos_ids: Sequence[int], add_bos: bool, source: str,
                 vocab: dict | None = None):
        super().__init__(vocab_size=backend.get_vocab_size(with_added_tokens=True), bos_id=bos_id,
                         eos_ids=eos_ids, add_bos=add_bos, source=source)
        self.backend = backend
        self.vocab = vocab

    def _encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def _decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=True)


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece `tokenizer.model`."""

    def __init__(self, path: Path | None, *, bos_id: int | None = None, eos_ids: Sequence[int] = (),
                 add_bos: bool = True, model_proto: bytes | None = None):
        import sentencepiece

        try:
            if model_proto is not None:
                self.sp = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
            else:
                self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        except Exception as exc:  # OSError, RuntimeError or UnicodeDecodeError, depending on the damage
            raise TokenizerError(f"not a readable sentencepiece model ({type(exc).__name__}: {exc})", path=path,
                                 fix="pass the tokenizer.model that came with the checkpoint") from None
        bos = bos_id if bos_id is not None else (self.sp.bos_id() if self.sp.bos_id() >= 0 else None)
        eos = tuple(eos_ids) or ((self.sp.eos_id(),) if self.sp.eos_id() >= 0 else ())
        super().__init__(vocab_size=self.sp.vocab_size(), bos_id=bos, eos_ids=eos, add_bos=add_bos,
                         source=str(path) if path is not None else "embedded sentencepiece model")

    def _encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text))

    def _decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if 0 <= i < self.vocab_size])


def load_tokenizer_json(path: Path, *, bos_id: int | None, eos_ids: Sequence[int],
                        add_bos: bool | None) -> HFTokenizer:
    """Load a Hugging Face tokenizer.json. `add_bos=None` infers it from the post-processor."""
    from tokenizers import Tokenizer as Backend

    try:
        backend = Backend.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for parse errors
        raise TokenizerError(f"not a readable tokenizer.json ({exc})", path=path,
                             fix="pass the tokenizer.json that came with the checkpoint") from None
    if add_bos is None:
        with_special = backend.encode("a", add_special_tokens=True).ids
        add_bos = bool(with_special) and bos_id is not None and with_special[0] == bos_id
    return HFTokenizer(backend, bos_id=bos_id, eos_ids=eos_ids, add_bos=add_bos, source=str(path))


def build_spm_bpe_tokenizer(pieces: Sequence[str], scores: Sequence[float], types: Sequence[int] | None,
                            *, bos_id: int | None, eos_ids: Sequence[int], unk_id: int | None,
                            add_bos: bool = True, add_space_prefix: bool = True,
                            source: str) -> HFTokenizer:
    """A sentencepiece-BPE vocabulary (pieces ranked by score, `▁` for space, `<0xXX>` byte fallback).

    `types` are GGUF token types; without them (llama2.c) control tokens are recognised as `<...>`
    pieces before the byte pieces and byte pieces by their `<0xXX>` spelling.
    """
    from tokenizers import AddedToken, Tokenizer as Backend, decoders, models, normalizers

    if len(pieces) != len(scores) or (types is not None and len(types) != len(pieces)):
        raise TokenizerError(f"vocabulary has {len(pieces)} pieces but {len(scores)} scores"
                             + (f" and {len(types)} token types" if types is not None else ""), path=source)
    types = list(types) if types is not None else [_guess_type(p, i) for i, p in enumerate(pieces)]
    vocab = {}
    for i, piece in enumerate(pieces):
        vocab.setdefault(piece, i)  # a duplicated piece keeps its first id, as sentencepiece does
    mergeable = {p: i for p, i in vocab.items() if types[i] in (TOKEN_NORMAL, TOKEN_USER)}
    merges = []
    for piece, pid in mergeable.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in mergeable and right in mergeable:
                merges.append((scores[pid], pid, vocab[left], vocab[right], left, right))
    # Highest score merges first; ties broken by the ids of the resulting and component pieces.
    merges.sort(key=lambda m: (-m[0], m[1], m[2], m[3]))
    unk = pieces[unk_id] if unk_id is not None and 0 <= unk_id < len(pieces) else None
    model = models.BPE(vocab=vocab, merges=[(m[4], m[5]) for m in merges], unk_token=unk,
                       fuse_unk=True, byte_fallback=True)
    backend = Backend(model)
    steps = [normalizers.Replace(" ", "▁")]
    if add_space_prefix:
        steps.insert(0, normalizers.Prepend("▁"))
    backend.normalizer = normalizers.Sequence(steps)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
                                        + ([decoders.Strip(" ", 1, 0)] if add_space_prefix else []))
    specials = [pieces[i] for i, t in enumerate(types) if t in (TOKEN_CONTROL, TOKEN_UNKNOWN)]
    backend.add_special_tokens([AddedToken(p, special=True, normalized=False) for p in specials])
    vocab_spec = {"model": "llama", "tokens": list(pieces), "scores": [float(x) for x in scores], "types": types,
                  "add_space_prefix": add_space_prefix, "unk_id": unk_id}
    return HFTokenizer(backend, bos_id=bos_id, eos_ids=eos_ids, add_bos=add_bos, source=source, vocab=vocab_spec)


def build_gpt2_bpe_tokenizer(tokens: Sequence[str], merges: Sequence[str], types: Sequence[int] | None, *,
                             pre: str, bos_id: int | None, eos_ids: Sequence[int], add_bos: bool,
                             source: str) -> HFTokenizer:
    """A byte-level BPE vocabulary with explicit merges (GGUF `tokenizer.ggml.model = gpt2`)."""
    from tokenizers import AddedToken, Regex, Tokenizer as Backend, decoders, models, pre_tokenizers

    if pre not in GPT2_PRE_SPLITS:
        raise TokenizerError(f"GGUF pre-tokenizer {pre!r} is not supported; supported: "
                             f"{sorted(GPT2_PRE_SPLITS)}", path=source)
    pairs = []
    for line in merges:
        left, sep, right = line.partition(" ")
        if not sep:
            raise TokenizerError(f"malformed BPE merge {line!r} (expected 'left right')", path=source)
        pairs.append((left, right))
    vocab = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)
    backend = Backend(models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre in ("llama-bpe", "llama3")))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT2_PRE_SPLITS[pre]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    types = list(types) if types is not None else [TOKEN_NORMAL] * len(tokens)
    specials = [tokens[i] for i, t in enumerate(types) if t in (TOKEN_CONTROL, TOKEN_USER)]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    vocab_spec = {"model": "gpt2", "tokens": list(tokens), "merges": list(merges), "types": types, "pre": pre}
    return HFTokenizer(backend, bos_id=bos_id, eos_ids=eos_ids, add_bos=add_bos, source=source, vocab=vocab_spec)


def _guess_type(piece: str, index: int) -> int:
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return TOKEN_BYTE
    if index < 3 and piece.startswith("<") and piece.endswith(">"):
        return TOKEN_UNKNOWN if piece == "<unk>" else TOKEN_CONTROL
    return TOKEN_NORMAL


def tokenizer_to_blob(tokenizer: Tokenizer) -> tuple[dict, bytes]:
    """(spec, bytes) that `tokenizer_from_blob` turns back into an equivalent tokenizer."""
    spec = {"bos_id": tokenizer.bos_id, "eos_ids": list(tokenizer.eos_ids), "add_bos": tokenizer.add_bos,
            "source": tokenizer.source}
    if isinstance(tokenizer, HFTokenizer):
        return {**spec, "kind": "tokenizers", "vocab": tokenizer.vocab}, tokenizer.backend.to_str().encode("utf-8")
    if isinstance(tokenizer, SentencePieceTokenizer):
        return {**spec, "kind": "sentencepiece"}, tokenizer.sp.serialized_model_proto()
    raise TokenizerError(f"cannot serialise a {type(tokenizer).__name__}")


def tokenizer_from_blob(spec: dict, blob: bytes, source: str) -> Tokenizer:
    try:
        bos, eos, add_bos, kind = spec["bos_id"], [int(i) for i in spec["eos_ids"]], bool(spec["add_bos"]), spec["kind"]
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenizerError(f"bad tokenizer description {spec!r} ({exc})", path=source) from None
    if kind == "sentencepiece":
        return SentencePieceTokenizer(None, bos_id=bos, eos_ids=eos, add_bos=add_bos, model_proto=blob)
    if kind == "tokenizers":
        from tokenizers import Tokenizer as Backend

        try:
            backend = Backend.from_str(blob.decode("utf-8"))
        except Exception as exc:  # UnicodeDecodeError or the tokenizers parse error
            raise TokenizerError(f"embedded tokenizer is unreadable ({type(exc).__name__}: {exc})",
                                 path=source) from None
        vocab = spec.get("vocab")
        return HFTokenizer(backend, bos_id=bos, eos_ids=eos, add_bos=add_bos, source=source,
                           vocab=vocab if isinstance(vocab, dict) else None)
    raise TokenizerError(f"unknown embedded tokenizer kind {kind!r}", path=source)
