"""Wire protocol: frames, versions, and the three encodings of boundary states."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from edgekit.cloud_bridge.protocol import (EDGE_FRAMES, PROTOCOL_VERSION, ProtocolError, decode_rows, encode_rows,
                                           pack_frame, unpack_frame)


def _frame(rows, encoding):
    return unpack_frame(pack_frame("upload", start=0, n=len(rows), **encode_rows(rows, encoding)), EDGE_FRAMES)


def test_encodings_round_trip_within_their_precision():
    rows = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32) * 3
    assert np.array_equal(decode_rows(_frame(rows, "f32"), 5, 64, "f32"), rows)
    assert np.array_equal(decode_rows(_frame(rows, "f16"), 5, 64, "f16"), rows.astype(np.float16).astype(np.float32))
    back = decode_rows(_frame(rows, "int8"), 5, 64, "int8")
    step = np.abs(rows).max(axis=1, keepdims=True) / 127
    assert (np.abs(back - rows) <= step / 2 + 1e-6).all()        # half a quantization step per token
    sizes = {e: len(encode_rows(rows, e)["data"]) + len(encode_rows(rows, e)["scales"] or b"") for e in
             ("f32", "f16", "int8")}
    assert sizes == {"f32": 5 * 64 * 4, "f16": 5 * 64 * 2, "int8": 5 * 64 + 5 * 4}


def test_zero_rows_encode_to_zero_in_int8():
    rows = np.zeros((2, 8), np.float32)
    assert not decode_rows(_frame(rows, "int8"), 2, 8, "int8").any()


@pytest.mark.parametrize("raw", [b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"v": 99, "t": "close"}),
                                 msgpack.packb({"v": PROTOCOL_VERSION, "t": "launch"}),
                                 msgpack.packb({"v": PROTOCOL_VERSION, "t": "hard", "id": 1}), "text frame"])
def test_bad_frames_raise_protocol_errors(raw):
    with pytest.raises(ProtocolError):
        unpack_frame(raw, EDGE_FRAMES)


def test_payload_sizes_and_values_are_checked():
    rows = np.ones((2, 8), np.float32)
    frame = _frame(rows, "f32")
    with pytest.raises(ProtocolError, match="do not hold"):
        decode_rows(frame, 3, 8, "f32")
    with pytest.raises(ProtocolError, match="scales"):
        decode_rows({**_frame(rows, "int8"), "scales": b"\0"}, 2, 8, "int8")
    with pytest.raises(ProtocolError, match="NaN"):
        decode_rows(_frame(np.full((1, 8), np.nan, np.float32), "f32"), 1, 8, "f32")
