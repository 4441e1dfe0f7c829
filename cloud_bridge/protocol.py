"""The bridge's wire protocol: msgpack maps in binary WebSocket frames, versioned.

Every frame is a msgpack map with "v" (PROTOCOL_VERSION) and "t" (the frame type):

edge -> cloud
    open    fingerprint (model identity), split (first cloud layer; 0: the edge sends embeddings, the
            cloud-only baseline), context (edge context length), encoding ("f32" | "f16" | "int8"),
            resume (optional: the id of this edge's session whose connection dropped)
    upload  start (first position), n (rows), data (rows [n, dim] in `encoding`), scales (int8 only:
            float32 [n], one per token)
    hard    id (request id), pos (the hard token's position == the edge's context length before it),
            data/scales (its boundary state, one row), top_k (0: token id only), edge_tokens (tokens the
            edge answered since its last request, for the metrics)
    close
cloud -> edge
    opened  session, max_context, replica (which server process or Ray replica holds the session), have
            (positions the cloud holds: > 0 only for a resumed session; the edge uploads from there)
    token   id, pos, token, top_ids/top_logits (when top_k > 0), queue (hard requests waiting)
    mismatch  id (or None for an upload), have: the cloud's context length; the edge re-uploads from it
    error   code, message; the cloud closes the session after it (except "rate_limited")

int8 rows: q = roundf(x / s), s = max|x| / 127 per token (the same absmax rule as BitNet's activations).
"""

from __future__ import annotations

import msgpack
import numpy as np

from edgekit.errors import EdgekitError
from edgekit.model.reference import quantize_absmax_int8

PROTOCOL_VERSION = 1
ENCODINGS = ("f32", "f16", "int8")
EDGE_FRAMES = {"open": ("fingerprint", "split", "context", "encoding"),
               "upload": ("start", "n", "data"),
               "hard": ("id", "pos", "data", "top_k"),
               "close": ()}
CLOUD_FRAMES = {"opened": ("session", "max_context"), "token": ("id", "pos", "token"),
                "mismatch": ("id", "have"), "error": ("code", "message")}

# WebSocket close codes (4000-4999 are the application's)
CLOSE_BAD_FRAME = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_MODEL_MISMATCH = 4409
CLOSE_IDLE = 4408
CLOSE_LIMIT = 4429
CLOSE_GOING_AWAY = 1001


class ProtocolError(EdgekitError):
    """A frame that does not follow the protocol (bad msgpack, version, type, field or payload size)."""


def pack_frame(kind: str, **fields) -> bytes:
    return msgpack.packb({"v": PROTOCOL_VERSION, "t": kind, **fields}, use_bin_type=True)


def unpack_frame(raw: bytes, frames: dict[str, tuple[str, ...]]) -> dict:
    """Decode and check one frame against `frames` (EDGE_FRAMES or CLOUD_FRAMES); ProtocolError if bad."""
    if not isinstance(raw, (bytes, bytearray)):
        raise ProtocolError("text frame received; the protocol uses binary msgpack frames",
                            fix="send msgpack bytes as a binary WebSocket frame")
    try:
        frame = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=64 << 20)
    except Exception as exc:
        raise ProtocolError(f"frame is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(frame, dict):
        raise ProtocolError(f"frame is a msgpack {type(frame).__name__}, expected a map")
    if frame.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {frame.get('v')!r} is not supported (this side speaks "
                            f"{PROTOCOL_VERSION})", fix="use matching edgekit versions on edge and cloud")
    kind = frame.get("t")
    if kind not in frames:
        raise ProtocolError(f"unknown frame type {kind!r}; expected one of {sorted(frames)}")
    missing = [name for name in frames[kind] if name not in frame]
    if missing:
        raise ProtocolError(f"{kind} frame lacks fields {missing}")
    return frame


def encode_rows(rows: np.ndarray, encoding: str) -> dict:
    """rows float32 [n, dim] -> {"data": bytes, "scales": bytes | None} in `encoding`."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if encoding == "f32":
        return {"data": rows.tobytes(), "scales": None}
    if encoding == "f16":
        return {"data": rows.astype(np.float16).tobytes(), "scales": None}
    if encoding == "int8":
        q, scale = quantize_absmax_int8(rows)                              # q [n, dim], scale [n, 1]
        return {"data": q.astype(np.int8).tobytes(), "scales": scale.reshape(-1).astype(np.float32).tobytes()}
    raise ProtocolError(f"encoding {encoding!r} is not one of {list(ENCODINGS)}")


def decode_rows(frame: dict, n: int, dim: int, encoding: str) -> np.ndarray:
    """The rows a frame carries as float32 [n, dim]; ProtocolError when sizes or values are wrong."""
    data = frame.get("data")
    if not isinstance(data, (bytes, bytearray)):
        raise ProtocolError(f"{frame.get('t')} frame: data must be bytes")
    width = {"f32": 4, "f16": 2, "int8": 1}[encoding]
    if not isinstance(n, int) or n < 1 or len(data) != n * dim * width:
        raise ProtocolError(f"{frame.get('t')} frame: {len(data)} bytes of data do not hold {n!r} rows of "
                            f"{dim} {encoding} values")
    dtype = {"f32": np.float32, "f16": np.float16, "int8": np.int8}[encoding]
    rows = np.frombuffer(data, dtype=dtype).reshape(n, dim).astype(np.float32)
    if encoding == "int8":
        scales = frame.get("scales")
        if not isinstance(scales, (bytes, bytearray)) or len(scales) != 4 * n:
            raise ProtocolError(f"{frame.get('t')} frame: int8 rows need {n} float32 scales")
        rows *= np.frombuffer(scales, dtype=np.float32)[:, None]
    if not np.isfinite(rows).all():
        raise ProtocolError(f"{frame.get('t')} frame: hidden states contain NaN or Inf")
    return rows


def model_fingerprint(model) -> str:
    """Identity of a model for the handshake: config, tensor names/shapes and the final norm's bytes."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name in sorted(model.tensors):
        digest.update(f"{name}:{tuple(model.tensors[name].shape)};".encode())
    digest.update(np.ascontiguousarray(model.tensors["norm"], dtype=np.float32).tobytes())
    return digest.hexdigest()[:32]
