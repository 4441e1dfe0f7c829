"""A TCP proxy on loopback that emulates a network: latency, bandwidth and faults (kernel netem is not
available here).

    with NetemProxy(target_port, rtt_ms=50, bandwidth_mbit=20) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/v1/session"
        ...
        proxy.cut()          # drop every open connection (a network fault); new ones are accepted

Each direction delays every chunk by rtt/2 and then paces it at the bandwidth; order is kept per
connection (one FIFO per direction, a delivery time stamped on arrival).
"""

from __future__ import annotations

import asyncio
import threading
import time

from edgekit.errors import ConfigError


class NetemProxy:
    def __init__(self, target_port: int, rtt_ms: float = 0.0, bandwidth_mbit: float | None = None,
                 target_host: str = "127.0.0.1"):
        if rtt_ms < 0 or (bandwidth_mbit is not None and bandwidth_mbit <= 0):
            raise ConfigError(f"rtt_ms {rtt_ms} must be >= 0 and bandwidth_mbit {bandwidth_mbit} positive")
        self.target = (target_host, target_port)
        self.delay_s = rtt_ms / 2000.0
        self.bytes_per_s = None if bandwidth_mbit is None else bandwidth_mbit * 1e6 / 8
        self.port = 0
        self.bytes_forwarded = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="netem-proxy")

    def __enter__(self) -> "NetemProxy":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _shutdown(self) -> None:
        """Drop the connections and finish every forwarding task before the loop stops."""
        self._server.close()
        self._close_all()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def cut(self) -> None:
        """Close every open connection at once (both sides see a reset)."""
        self._loop.call_soon_threadsafe(self._close_all)

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _accept(self, client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, server_writer}
        await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer),
                             return_exceptions=True)
        for writer in (client_writer, server_writer):
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward chunks after their delivery time; a pacing clock models the link's bandwidth."""
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            link_free = 0.0
            while True:
                due, data = await queue.get()
                if data is None:
                    writer.write_eof() if writer.can_write_eof() else None
                    return
                if self.bytes_per_s is not None:
                    link_free = max(link_free, due) + len(data) / self.bytes_per_s
                    due = link_free
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()
                self.bytes_forwarded += len(data)

        sender = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.delay_s, data))
        except (ConnectionError, asyncio.CancelledError):
            sender.cancel()
        finally:
            queue.put_nowait((0.0, None))
            await asyncio.gather(sender, return_exceptions=True)
