"""A TCP relay to the broker on loopback whose open connections can go silent: a dead link."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Relay:
    """Relays each connection to ``target``; :meth:`go_silent` makes the open ones pass nothing more.

    A silent connection stays open at both ends, as when a network path dies without a reset:
    only heartbeats can tell. Connections made afterwards are relayed as usual.
    """

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        self.target = target
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._silent: list[asyncio.Event] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._relay, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        broker_reader, broker_writer = await asyncio.open_connection(*self.target)
        silent = asyncio.Event()
        self._silent.append(silent)

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                if silent.is_set():
                    await asyncio.Event().wait()  # hold the socket open, pass nothing
                writer.write(data)
                await writer.drain()
            writer.close()

        await asyncio.gather(
            pump(client_reader, broker_writer), pump(broker_reader, client_writer), return_exceptions=True
        )

    def go_silent(self) -> None:
        """Every connection open now stops passing bytes, both ways, without closing."""
        for silent in self._silent:
            self._loop.call_soon_threadsafe(silent.set)

    def start(self) -> Relay:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextmanager
def relay_to_broker() -> Iterator[Relay]:
    relay = Relay().start()
    try:
        yield relay
    finally:
        relay.stop()
