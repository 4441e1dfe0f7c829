"""File helpers every writer and reader shares: atomic output and checked UTF-8 text.

Every file edgekit writes (.edgekit, GGUF, QAT checkpoints, benchmark results, plots, BENCHMARKS.md) goes
through `atomic_path`, so an interrupted run leaves the old file or none, never a half-written one.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from edgekit.errors import EdgekitError, GenerationError, ModelNotFoundError


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".partial") -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; when the block ends without an error, fsync it and
    rename it over `path`, otherwise delete it. `suffix` matters to writers that pick a format from the
    name (matplotlib's savefig)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, data: Any, indent: int = 1) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=indent))


def read_utf8_text(path: str | Path, what: str = "text file", fix: str | None = None,
                   decode_error: type[EdgekitError] = GenerationError) -> str:
    """The UTF-8 text of `path`: `ModelNotFoundError` naming `what` when it is missing, `decode_error`
    with the byte offset when it is not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{what} not found", path=path, fix=fix)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise decode_error(f"{what} is not UTF-8 ({exc.reason} at byte {exc.start})", path=path) from None
