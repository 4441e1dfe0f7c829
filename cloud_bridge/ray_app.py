"""The cloud server as a Ray Serve application: several replicas of the same FastAPI app, session affinity.

    edgekit bridge serve MODEL --ray --replicas 2          # a local Ray cluster, or the one at $RAY_ADDRESS

Each replica is the plain server (`create_app`: the same routes, WebSocket protocol, batching, metrics)
built inside a Ray Serve deployment (`serve.ingress` with `__serve_build_asgi_app__`, so the model loads
once per replica). Ray's HTTP proxy forwards each WebSocket connection to one replica for its lifetime.
Which replica: Ray Serve's experimental `ConsistentHashRouter` hashes the `x-session-id` header, which every
BridgeEdge sends with a key of its own, so all connections and HTTP requests of one edge go to the same
replica while the replica set is unchanged. (Ray Serve's model multiplexing does not keep a session on one
replica: it only prefers replicas that hold the model.)

A replica that dies takes its sessions' cloud contexts with it and Ray says nothing to the clients
besides dropping the connection. The protocol covers that: the edge's next hard request fails, the edge
answers that token standalone, opens a new session (routed to a live replica, which starts empty) and
re-uploads every boundary state; a replica that lost state behind a live connection answers "mismatch"
to the edge's stated context length and the edge re-uploads from the cloud's length. Ray restarts the
dead replica; the ring then changes for new connections only.

Ray settings that matter on a small machine (DESIGN.md section 7): replicas ask for `num_cpus` 0.25, and
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` keeps Ray's ports on loopback. The bearer token travels to the
replicas as a deployment argument (held in Ray's control store on this cluster, never logged).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import asdict
from pathlib import Path

from edgekit.errors import ConfigError

from edgekit.cloud_bridge.server import ServerConfig

logger = logging.getLogger(__name__)

APP_NAME = "edgekit-bridge"
DEPLOYMENT_NAME = "BridgeReplica"
ROUTER_CLASS = "ray.serve.experimental.consistent_hash_router.ConsistentHashRouter"


def _require_ray():
    try:
        import ray
        from ray import serve
    except ImportError:
        raise ConfigError("Ray Serve is not installed", fix='pip install "edgekit[bridge-ray]"') from None
    return ray, serve


def build_bridge_deployment(model_path: str | Path, config: ServerConfig, replicas: int,
                            num_cpus: float = 0.25):
    """The bound Ray Serve application: `replicas` copies of the bridge server on `model_path`."""
    _, serve = _require_ray()
    from ray.serve.config import RequestRouterConfig

    if replicas < 1:
        raise ConfigError(f"--replicas {replicas} must be at least 1")

    class BridgeReplica:
        def __init__(self, model_path: str, config_fields: dict):
            from edgekit.model import load

            context = serve.get_replica_context()
            rank = getattr(context.rank, "rank", context.rank)     # Ray 2.60: a ReplicaRank, older: an int
            self.replica = f"{context.replica_id.unique_id}:rank{rank}"
            self.model = load(model_path)
            self.config = ServerConfig(**config_fields)

        def __serve_build_asgi_app__(self):
            from edgekit.cloud_bridge.server import create_app

            return create_app(self.model, self.config, replica=self.replica)

    deployment = serve.deployment(
        serve.ingress()(BridgeReplica), name=DEPLOYMENT_NAME, num_replicas=replicas,
        ray_actor_options={"num_cpus": num_cpus}, max_ongoing_requests=max(config.max_sessions, 8),
        # strict affinity: no fallback replica when the chosen one is busy (its sessions live there)
        request_router_config=RequestRouterConfig(request_router_class=ROUTER_CLASS,
                                                  request_router_kwargs={"num_fallback_replicas": 0}))
    return deployment.bind(str(model_path), asdict(config))


def start_ray_bridge(model_path: str | Path, config: ServerConfig, replicas: int, host: str = "127.0.0.1",
                     port: int = 8765, address: str | None = None, num_cpus: float = 0.25) -> None:
    """Connect to (or start) a Ray cluster, start Serve's HTTP proxy on host:port and deploy the bridge;
    returns once every replica is up."""
    ray, serve = _require_ray()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized() and address:
        ray.init(address=address, logging_level=logging.WARNING)            # an existing cluster
    elif not ray.is_initialized():
        ray.init(logging_level=logging.WARNING, include_dashboard=False)    # a local one for this process
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_bridge_deployment(model_path, config, replicas, num_cpus), name=APP_NAME, route_prefix="/",
              blocking=False)


def stop_ray_bridge() -> None:
    """Delete the application and shut Serve down (the Ray cluster itself keeps running)."""
    _, serve = _require_ray()
    serve.shutdown()


def serve_ray_forever(model_path: str | Path, config: ServerConfig, replicas: int, host: str, port: int,
                      on_ready=None) -> None:
    """`edgekit bridge serve --ray`: deploy, then wait for SIGINT/SIGTERM and shut Serve down."""
    start_ray_bridge(model_path, config, replicas, host, port)
    if on_ready is not None:
        on_ready(port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        stop_ray_bridge()
