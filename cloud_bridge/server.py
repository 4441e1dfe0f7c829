"""The cloud server: FastAPI + uvicorn, one WebSocket stream per session, an HTTP control plane.

    WS   /v1/session          msgpack frames (protocol.py); bearer token in the Authorization header
    GET  /v1/health           liveness, model, sessions, draining (no token needed: load balancers probe it)
    GET  /v1/sessions         sessions with their context lengths and idle times
    DELETE /v1/sessions/{id}  close one session
    GET  /metrics             Prometheus text: edge/cloud token split, queue depth, latency histograms

Every route but /v1/health needs `Authorization: Bearer <token>` (401 otherwise; a WebSocket handshake
without it is refused with HTTP 401). Hard requests from all sessions go through one queue; a batcher
takes what is waiting (up to `max_batch`, after at most `batch_window_ms`) and answers them together on a
worker thread (kernels release the GIL), so the event loop keeps serving uploads and the control plane.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from edgekit.errors import ConfigError, EdgekitError
from edgekit.model.model import Model

from edgekit.cloud_bridge.cloud import Answer, CloudContext, ContextLimit, ContextMismatch, batch_answers
from edgekit.cloud_bridge.layers import LayerStack
from edgekit.cloud_bridge.metrics import BridgeMetrics
from edgekit.cloud_bridge.protocol import (CLOSE_BAD_FRAME, CLOSE_GOING_AWAY, CLOSE_IDLE, CLOSE_LIMIT,
                                           CLOSE_MODEL_MISMATCH, EDGE_FRAMES, ENCODINGS, ProtocolError,
                                           decode_rows, model_fingerprint, pack_frame, unpack_frame)

logger = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    """Limits and batching of the cloud server (validated here, shown by `edgekit bridge serve --help`)."""

    token: str
    max_sessions: int = 256
    max_context: int | None = None      # per session; default: the model's context
    max_requests_per_second: float = 200.0
    idle_timeout_s: float = 300.0
    resume_s: float = 30.0              # a session whose connection dropped can be resumed this long
    max_batch: int = 16
    batch_window_ms: float = 1.0
    kernels: str = "auto"               # auto: Triton on a CUDA device (or under TRITON_INTERPRET=1), else cpu

    def __post_init__(self) -> None:
        if self.kernels not in ("auto", "cpu", "triton"):
            raise ConfigError(f"kernels={self.kernels!r} is not one of auto, cpu, triton",
                              fix="use auto (Triton when a CUDA device exists), cpu (LUT kernels) or triton")
        if not self.token or len(self.token) < 8:
            raise ConfigError("the bearer token must have at least 8 characters",
                              fix="pass --token-file with a long random token (e.g. `openssl rand -hex 16`)")
        if self.max_sessions < 1 or self.max_batch < 1 or self.idle_timeout_s <= 0 or self.batch_window_ms < 0:
            raise ConfigError(f"bad server limits: max_sessions={self.max_sessions}, max_batch={self.max_batch}, "
                              f"idle_timeout_s={self.idle_timeout_s}, batch_window_ms={self.batch_window_ms}")
        if not self.max_requests_per_second > 0:
            raise ConfigError(f"max_requests_per_second {self.max_requests_per_second} must be positive")
        if not self.resume_s >= 0:
            raise ConfigError(f"resume_s {self.resume_s} must be >= 0", fix="e.g. --resume-s 30 (0: never resume)")

    def __repr__(self) -> str:  # never show the secret
        return f"ServerConfig(max_sessions={self.max_sessions}, max_context={self.max_context}, ...)"


@dataclass
class Session:
    id: str
    context: CloudContext
    encoding: str
    websocket: object
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    allowance: float = 0.0
    allowance_at: float = field(default_factory=time.monotonic)

    def take_request(self, rate: float) -> bool:
        """Token bucket: `rate` hard requests per second, bursts up to one second's worth."""
        now = time.monotonic()
        self.allowance = min(rate, self.allowance + (now - self.allowance_at) * rate)
        self.allowance_at = now
        if self.allowance < 1.0:
            return False
        self.allowance -= 1.0
        return True


@dataclass
class _Request:
    session: Session
    position: int
    top_k: int
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class BridgeServer:
    """State shared by the routes: the model's LayerStack, sessions, the hard-request queue, metrics."""

    def __init__(self, model: Model, config: ServerConfig, replica: str | None = None):
        self.model, self.config = model, config
        self.replica = replica or f"pid-{os.getpid()}"     # which server answers (a Ray replica's id)
        self.stack = cloud_stack(model, config.kernels)
        self.fingerprint = model_fingerprint(model)
        self.max_context = min(config.max_context or model.config.max_seq_len, model.config.max_seq_len)
        self.sessions: dict[str, Session] = {}
        self.detached: dict[str, Session] = {}     # connection dropped without a close frame: resumable
        self.metrics = BridgeMetrics()
        self.queue: asyncio.Queue[_Request] | None = None
        self.draining = False
        self._tasks: list[asyncio.Task] = []

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._batch_loop()), asyncio.create_task(self._reap_idle())]

    async def stop(self) -> None:
        """Graceful shutdown: refuse new work, answer what is queued, then close every session (1001)."""
        self.draining = True
        while self.queue is not None and not self.queue.empty():
            await asyncio.sleep(0.01)
        for session in list(self.sessions.values()):
            await self.close_session(session, CLOSE_GOING_AWAY, "server shutting down")
        for task in self._tasks:
            task.cancel()

    async def close_session(self, session: Session, code: int, reason: str) -> None:
        self.sessions.pop(session.id, None)
        self.metrics.sessions.set(len(self.sessions))
        try:
            await session.websocket.close(code=code, reason=reason)
        except Exception:  # already closed by the peer
            pass

    # -- batching ----------------------------------------------------------------------------------
    async def _batch_loop(self) -> None:
        while True:
            batch = [await self.queue.get()]
            if self.config.batch_window_ms > 0:
                await asyncio.sleep(self.config.batch_window_ms / 1000.0)
            while len(batch) < self.config.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self.metrics.queue_depth.set(self.queue.qsize())
            self.metrics.batch_size.observe(len(batch))
            try:
                results = await asyncio.to_thread(
                    batch_answers, self.stack, [(r.session.context, r.position, r.top_k) for r in batch])
            except Exception as exc:  # a kernel failure must not kill the loop: fail this batch only
                logger.exception("batch of %d hard requests failed", len(batch))
                results = [EdgekitError(f"cloud compute failed: {type(exc).__name__}")] * len(batch)
            for request, result in zip(batch, results):
                if not request.future.done():
                    request.future.set_result(result)
                self.metrics.request_seconds.observe(time.perf_counter() - request.queued)

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.config.idle_timeout_s / 4))
            now = time.monotonic()
            for session in list(self.detached.values()):
                if now - session.last_seen > self.config.resume_s:
                    self.detached.pop(session.id, None)
            for session in list(self.sessions.values()):
                if now - session.last_seen > self.config.idle_timeout_s:
                    self.metrics.expired.inc()
                    await self.close_session(session, CLOSE_IDLE, "idle timeout")

    # -- one session -------------------------------------------------------------------------------
    def open_session(self, frame: dict, websocket) -> Session:
        if frame["fingerprint"] != self.fingerprint:
            raise _Refusal(CLOSE_MODEL_MISMATCH, "model_mismatch", "the edge runs a different model than this "
                           "server (fingerprints differ)")
        split, context, encoding = frame["split"], frame["context"], frame["encoding"]
        if not isinstance(split, int) or not 0 <= split < self.model.config.n_layers:   # 0: cloud-only baseline
            raise _Refusal(CLOSE_BAD_FRAME, "bad_split", f"split {split!r} must lie in [0, "
                           f"{self.model.config.n_layers - 1}]")
        if encoding not in ENCODINGS:
            raise _Refusal(CLOSE_BAD_FRAME, "bad_encoding", f"encoding {encoding!r} is not one of {list(ENCODINGS)}")
        if not isinstance(context, int) or context < 1:
            raise _Refusal(CLOSE_BAD_FRAME, "bad_context", f"context {context!r} must be a positive integer")
        resumed = self._resume(frame.get("resume"), split, encoding, websocket)
        if resumed is not None:
            return resumed
        if len(self.sessions) + len(self.detached) >= self.config.max_sessions or self.draining:
            raise _Refusal(CLOSE_LIMIT, "busy", "the server has reached its session limit or is shutting down")
        session = Session(uuid.uuid4().hex, CloudContext(self.stack, split, min(context, self.max_context)),
                          encoding, websocket, allowance=self.config.max_requests_per_second)
        self.sessions[session.id] = session
        self.metrics.sessions.set(len(self.sessions))
        return session

    def _resume(self, session_id, split: int, encoding: str, websocket) -> Session | None:
        """Session `session_id` on a new connection, if it is still held and matches. A session whose old
        connection the server has not yet seen drop is taken over (its id is a random secret of that edge)."""
        if not isinstance(session_id, str) or self.config.resume_s <= 0:
            return None
        session = self.detached.get(session_id) or self.sessions.get(session_id)
        if session is None or session.context.split != split or session.encoding != encoding or self.draining:
            return None
        self.detached.pop(session_id, None)
        session.websocket, session.last_seen = websocket, time.monotonic()
        self.sessions[session.id] = session
        self.metrics.sessions.set(len(self.sessions))
        self.metrics.resumed.inc()
        return session

    def detach_session(self, session: Session) -> None:
        """The connection dropped without a close frame: keep the context for `resume_s`."""
        if self.sessions.pop(session.id, None) is not None and not self.draining and self.config.resume_s > 0:
            session.last_seen = time.monotonic()
            self.detached[session.id] = session
        self.metrics.sessions.set(len(self.sessions))

    async def handle_frame(self, session: Session, frame: dict) -> bytes | None:
        """Apply one edge frame; returns the reply frame (or None: the reply comes later or not at all)."""
        session.last_seen = time.monotonic()
        kind = frame["t"]
        dim = self.model.config.dim
        if kind == "upload":
            rows = decode_rows(frame, frame["n"], dim, session.encoding)
            if not isinstance(frame["start"], int):
                raise ProtocolError("upload frame: start must be an integer")
            self.metrics.upload_bytes.inc(len(frame["data"]))
            try:
                session.context.append(frame["start"], rows)
            except ContextMismatch as exc:
                self.metrics.mismatches.inc()
                return pack_frame("mismatch", id=None, have=exc.have)
            return None
        if kind == "hard":
            return await self._hard(session, frame, dim)
        raise ProtocolError(f"unexpected {kind} frame in an open session")

    async def _hard(self, session: Session, frame: dict, dim: int) -> bytes:
        request_id, position, top_k = frame["id"], frame["pos"], frame["top_k"]
        if not isinstance(position, int) or not isinstance(top_k, int) or not 0 <= top_k <= 1024:
            raise ProtocolError("hard frame: pos must be an integer and top_k an integer in [0, 1024]")
        edge_tokens = frame.get("edge_tokens", 0)
        if isinstance(edge_tokens, int) and edge_tokens > 0:
            self.metrics.tokens.labels(where="edge").inc(edge_tokens)
        if self.draining:
            return pack_frame("error", code="draining", message="the server is shutting down", id=request_id)
        if not session.take_request(self.config.max_requests_per_second):
            self.metrics.errors.labels(code="rate_limited").inc()
            return pack_frame("error", code="rate_limited", message="too many hard requests", id=request_id)
        rows = decode_rows(frame, 1, dim, session.encoding)
        try:
            session.context.append(position, rows)
        except ContextMismatch as exc:
            self.metrics.mismatches.inc()
            return pack_frame("mismatch", id=request_id, have=exc.have)
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Request(session, position, top_k, future))
        self.metrics.queue_depth.set(self.queue.qsize())
        result = await future
        if isinstance(result, ContextMismatch):
            return pack_frame("mismatch", id=request_id, have=result.have)
        if isinstance(result, EdgekitError):
            raise result
        self.metrics.tokens.labels(where="cloud").inc()
        return _token_frame(request_id, result, self.queue.qsize())


def cloud_stack(model: Model, kernels: str = "auto") -> LayerStack:
    """The cloud's LayerStack: Triton kernels on the GPU when one exists (or under TRITON_INTERPRET=1 on the
    CPU, for tests), else edgekit's LUT kernels; `kernels` cpu/triton forces one."""
    from edgekit.cloud_bridge.triton_kernels import default_device, triton_available

    device = default_device()
    if kernels == "triton":
        if not triton_available():
            raise ConfigError("kernels=triton but Triton is not installed", fix='pip install "edgekit[bridge-gpu]"')
        device = device or "cpu"
    if kernels == "cpu" or device is None:
        return LayerStack(model)
    logger.info("cloud linears on Triton kernels (%s)", device)
    return LayerStack(model, linears="triton", device=device)


class _Refusal(Exception):
    def __init__(self, close_code: int, code: str, message: str):
        super().__init__(message)
        self.close_code, self.code, self.message = close_code, code, message


def _token_frame(request_id, answer: Answer, queue: int) -> bytes:
    return pack_frame("token", id=request_id, pos=answer.position, token=answer.token, top_ids=answer.top_ids,
                      top_logits=answer.top_logits, queue=queue)


def bearer_ok(header: str | None, token: str) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return secrets.compare_digest(header[len("Bearer "):].encode(), token.encode())


def create_app(model: Model, config: ServerConfig, replica: str | None = None):
    """The FastAPI application serving `model` (see the module docstring for the routes)."""
    from edgekit.cloud_bridge.routes import build_app

    server = BridgeServer(model, config, replica)

    @asynccontextmanager
    async def lifespan(app):
        await server.start()
        yield
        await server.stop()

    return build_app(server, lifespan)


async def serve_websocket(server: BridgeServer, websocket) -> None:
    """One session: authenticate, open, then frames until close; a bad frame closes only this session."""
    from starlette.websockets import WebSocketDisconnect

    await websocket.accept()
    session, dropped = None, False
    try:
        frame = unpack_frame(await websocket.receive_bytes(), {"open": EDGE_FRAMES["open"]})
        session = server.open_session(frame, websocket)
        await websocket.send_bytes(pack_frame("opened", session=session.id, max_context=session.context.max_len,
                                             replica=server.replica, have=session.context.received))
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                dropped = True
                break
            frame = unpack_frame(message.get("bytes") if message.get("bytes") is not None else message.get("text"),
                                 EDGE_FRAMES)
            if frame["t"] == "close":
                break
            reply = await server.handle_frame(session, frame)
            if reply is not None:
                await websocket.send_bytes(reply)
    except _Refusal as refusal:
        server.metrics.errors.labels(code=refusal.code).inc()
        await _send_error_and_close(websocket, refusal.code, refusal.message, refusal.close_code)
    except (ProtocolError, ContextLimit) as exc:
        code = "bad_frame" if isinstance(exc, ProtocolError) else "context_limit"
        server.metrics.errors.labels(code=code).inc()
        await _send_error_and_close(websocket, code, str(exc), CLOSE_BAD_FRAME if code == "bad_frame" else CLOSE_LIMIT)
    except (WebSocketDisconnect, RuntimeError):
        dropped = True  # the edge went away (RuntimeError: starlette's "not connected" after a close)
    finally:
        if session is None or session.websocket is not websocket:
            pass                                  # never opened, or resumed on another connection meanwhile
        elif dropped:
            server.detach_session(session)
        else:
            server.sessions.pop(session.id, None)
            server.metrics.sessions.set(len(server.sessions))


async def _send_error_and_close(websocket, code: str, message: str, close_code: int) -> None:
    try:
        await websocket.send_bytes(pack_frame("error", code=code, message=message))
        await websocket.close(code=close_code, reason=code)
    except Exception:
        pass
