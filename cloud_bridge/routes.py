"""FastAPI routes of the bridge server; the OpenAPI schema (/openapi.json) describes the HTTP control plane."""

from __future__ import annotations

import os
import time

from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import Response
from pydantic import BaseModel

from edgekit.cloud_bridge.server import BridgeServer, bearer_ok, serve_websocket


class Health(BaseModel):
    status: str
    model: str
    fingerprint: str
    n_layers: int
    sessions: int
    draining: bool
    replica: str
    pid: int


class SessionInfo(BaseModel):
    id: str
    split: int
    received: int
    processed: int
    max_context: int
    age_s: float
    idle_s: float


class Closed(BaseModel):
    id: str
    closed: bool


def build_app(server: BridgeServer, lifespan) -> FastAPI:
    app = FastAPI(title="edgekit cloud bridge", version="1", lifespan=lifespan,
                  description="CE-CoLLM cloud half: WebSocket /v1/session (msgpack frames, see "
                              "edgekit.cloud_bridge.protocol) and this control plane. Bearer token required "
                              "except on /v1/health.")
    app.state.bridge = server

    def authorized(request: Request) -> None:
        if not bearer_ok(request.headers.get("authorization"), server.config.token):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.get("/v1/health", response_model=Health)
    def health() -> Health:
        return Health(status="draining" if server.draining else "ok", model=str(server.model.source.name),
                      fingerprint=server.fingerprint, n_layers=server.model.config.n_layers,
                      sessions=len(server.sessions), draining=server.draining,
                      replica=server.replica, pid=os.getpid())

    @app.get("/v1/sessions", response_model=list[SessionInfo], dependencies=[Depends(authorized)],
             responses={401: {"description": "missing or wrong bearer token"}})
    def sessions() -> list[SessionInfo]:
        now = time.monotonic()
        return [SessionInfo(id=s.id, split=s.context.split, received=s.context.received,
                            processed=s.context.processed, max_context=s.context.max_len,
                            age_s=now - s.created, idle_s=now - s.last_seen) for s in list(server.sessions.values())]

    @app.delete("/v1/sessions/{session_id}", response_model=Closed, dependencies=[Depends(authorized)],
                responses={401: {"description": "missing or wrong bearer token"},
                           404: {"description": "no such session"}})
    async def close(session_id: str) -> Closed:
        session = server.sessions.get(session_id)
        if session is None:
            raise HTTPException(status_code=404, detail=f"no session {session_id!r}")
        await server.close_session(session, 4410, "closed by the operator")
        return Closed(id=session_id, closed=True)

    @app.get("/metrics", dependencies=[Depends(authorized)], response_class=Response,
             responses={200: {"content": {"text/plain": {}}}, 401: {"description": "missing or wrong bearer token"}})
    def metrics() -> Response:
        return Response(server.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.websocket("/v1/session")
    async def session(websocket: WebSocket) -> None:
        if not bearer_ok(websocket.headers.get("authorization"), server.config.token):
            server.metrics.errors.labels(code="unauthorized").inc()
            await _deny(websocket)
            return
        await serve_websocket(server, websocket)

    return app


async def _deny(websocket: WebSocket) -> None:
    """Refuse the handshake with HTTP 401 where the server supports denial responses, else close 1008."""
    try:
        await websocket.send_denial_response(Response("missing or wrong bearer token", status_code=401,
                                                      headers={"WWW-Authenticate": "Bearer"}))
    except RuntimeError:
        await websocket.close(code=1008)
