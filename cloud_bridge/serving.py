"""Run the bridge server: in the foreground (`edgekit bridge serve`) or on a background thread (embedding, tests).

uvicorn handles SIGINT/SIGTERM in the foreground: it stops accepting, and the app's lifespan shutdown
answers what is queued and closes every session with 1001 (the edges go standalone and resync later).
"""

from __future__ import annotations

import socket
import threading
import time

from edgekit.errors import ConfigError
from edgekit.model.model import Model

from edgekit.cloud_bridge.server import ServerConfig, create_app


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: a free one), so callers know the port before uvicorn starts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}",
                          fix="choose another --port or stop the process using it") from None
    sock.listen(128)
    return sock


def _uvicorn_server(model: Model, config: ServerConfig, log_level: str):
    import uvicorn

    app = create_app(model, config)
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, ws="websockets-sansio", lifespan="on",
                                         timeout_graceful_shutdown=5, ws_max_size=64 << 20))


def serve_forever(model: Model, config: ServerConfig, host: str = "127.0.0.1", port: int = 8765,
                  log_level: str = "info", on_ready=None) -> None:
    """Serve until SIGINT/SIGTERM; `on_ready(port)` is called once the socket is bound."""
    sock = bind_socket(host, port)
    if on_ready is not None:
        on_ready(sock.getsockname()[1])
    _uvicorn_server(model, config, log_level).run(sockets=[sock])


class BackgroundServer:
    """`with BackgroundServer(model, config) as server:` serves on 127.0.0.1:<free port> in a thread."""

    def __init__(self, model: Model, config: ServerConfig, host: str = "127.0.0.1", port: int = 0):
        self.sock = bind_socket(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = _uvicorn_server(model, config, "warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/session"

    @property
    def bridge(self):
        return self.server.config.app.state.bridge

    def start(self, timeout_s: float = 20.0) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the bridge server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
