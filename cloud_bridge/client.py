"""The edge's link to the cloud: one WebSocket session, uploads sent asynchronously, hard requests answered.

A sender thread owns every send (uploads and hard requests leave in the order they were made, and the
edge's compute never waits on the network); a reader thread routes replies to the waiting request. Any
network failure turns into `CloudUnavailable`, which the edge answers by running standalone.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

import numpy as np

from edgekit.errors import EdgekitError

from edgekit.cloud_bridge.protocol import CLOUD_FRAMES, ProtocolError, encode_rows, pack_frame, unpack_frame

logger = logging.getLogger(__name__)

UPLOAD_ROWS_PER_FRAME = 256
SESSION_KEY_HEADER = "x-session-id"   # Ray Serve's default session header (RAY_SERVE_SESSION_ID_HEADER_KEY)


class CloudUnavailable(EdgekitError):
    """The cloud cannot be reached, refused the session, or went away."""


@dataclass
class LinkConfig:
    url: str                      # ws://host:port/v1/session
    token: str
    encoding: str = "f16"
    timeout_s: float = 5.0
    session_key: str | None = None   # sent as x-session-id: Ray Serve's ConsistentHashRouter routes on it

    def __repr__(self) -> str:  # the token never appears in logs or tracebacks
        return f"LinkConfig(url={self.url!r}, encoding={self.encoding!r}, timeout_s={self.timeout_s})"


class CloudLink:
    """One session with the cloud. `upload` returns at once; `ask` blocks until the reply (or a failure)."""

    def __init__(self, config: LinkConfig, fingerprint: str, split: int, context: int, resume: str | None = None):
        from websockets.sync.client import connect

        self.config = config
        self.bytes_sent = 0
        self.bytes_received = 0
        try:
            headers = {"Authorization": f"Bearer {config.token}"}
            if config.session_key:
                headers[SESSION_KEY_HEADER] = config.session_key
            self.ws = connect(config.url, additional_headers=headers,
                              open_timeout=config.timeout_s, close_timeout=1.0, max_size=64 << 20).__enter__()
        except Exception as exc:
            raise CloudUnavailable(f"cannot open a session at {config.url}: {type(exc).__name__}: {exc}",
                                   fix="start the server (edgekit bridge serve) or check --url and the token") from None
        try:
            self._send_now(pack_frame("open", fingerprint=fingerprint, split=split, context=context,
                                      encoding=config.encoding, resume=resume))
            opened = unpack_frame(self.ws.recv(timeout=config.timeout_s), CLOUD_FRAMES)
        except Exception as exc:
            self.ws.close()
            raise CloudUnavailable(f"session handshake failed: {type(exc).__name__}: {exc}") from None
        if opened["t"] != "opened":
            self.ws.close()
            raise CloudUnavailable(f"the cloud refused the session: {opened.get('code')}: {opened.get('message')}",
                                   fix="check that edge and cloud load the same model")
        self.session, self.max_context = opened["session"], int(opened["max_context"])
        self.replica = opened.get("replica")
        self.have = int(opened.get("have") or 0)     # positions the cloud already holds (a resumed session)
        self.alive = True
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._replies: dict[int, dict] = {}
        self._cond = threading.Condition()
        self._next_id = 0
        self.upload_have: int | None = None   # set when the cloud refused an upload (mismatch)
        self._threads = [threading.Thread(target=self._send_loop, daemon=True, name="bridge-send"),
                         threading.Thread(target=self._read_loop, daemon=True, name="bridge-read")]
        for thread in self._threads:
            thread.start()

    def _send_now(self, data: bytes) -> None:
        self.ws.send(data)
        self.bytes_sent += len(data)

    def _send_loop(self) -> None:
        while True:
            data = self._outbox.get()
            if data is None:
                return
            try:
                self._send_now(data)
            except Exception:
                self._fail()
                return

    def _read_loop(self) -> None:
        while True:
            try:
                raw = self.ws.recv()
                self.bytes_received += len(raw)
                frame = unpack_frame(raw, CLOUD_FRAMES)
            except (ProtocolError, Exception):
                self._fail()
                return
            if frame["t"] == "mismatch" and frame["id"] is None:
                self.upload_have = int(frame["have"])
                continue
            if frame.get("id") is None:          # a session-level error: the cloud closes after it
                logger.warning("cloud error: %s: %s", frame.get("code"), frame.get("message"))
                continue
            with self._cond:
                self._replies[frame["id"]] = frame
                self._cond.notify_all()

    def _fail(self) -> None:
        with self._cond:
            self.alive = False
            self._cond.notify_all()

    def upload(self, start: int, rows: np.ndarray) -> None:
        """Queue boundary states for positions [start, start + n) (split into frames of <= 256 rows)."""
        for offset in range(0, len(rows), UPLOAD_ROWS_PER_FRAME):
            chunk = rows[offset:offset + UPLOAD_ROWS_PER_FRAME]
            self._outbox.put(pack_frame("upload", start=start + offset, n=len(chunk),
                                        **encode_rows(chunk, self.config.encoding)))

    def ask(self, position: int, row: np.ndarray, top_k: int = 0, edge_tokens: int = 0,
            timeout_s: float | None = None) -> dict:
        """Send one hard request and wait for its reply frame ("token", "mismatch" or "error")."""
        if not self.alive:
            raise CloudUnavailable("the cloud session is closed")
        with self._cond:
            request_id = self._next_id
            self._next_id += 1
        self._outbox.put(pack_frame("hard", id=request_id, pos=position, top_k=top_k, edge_tokens=edge_tokens,
                                    **encode_rows(row[None], self.config.encoding)))
        with self._cond:
            ok = self._cond.wait_for(lambda: request_id in self._replies or not self.alive,
                                     timeout=timeout_s or self.config.timeout_s)
            if request_id in self._replies:
                return self._replies.pop(request_id)
        self._fail()
        raise CloudUnavailable("the cloud went away during a request" if ok else
                               f"no reply from the cloud within {timeout_s or self.config.timeout_s} s")

    def close(self) -> None:
        if self.alive:
            self._outbox.put(pack_frame("close"))
        self._outbox.put(None)
        self._threads[0].join(timeout=1.0)
        self.alive = False
        try:
            self.ws.close()
        except Exception:
            pass
