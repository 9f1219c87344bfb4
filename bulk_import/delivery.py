"""Receive deliveries in bulk: a socket reader that lifts one channel's messages out of the stream.

aiormq reads every frame on its own: three ``readexactly`` calls, a pamqp object, a queue hop to the
channel and a task per message, some 70 µs of CPU per delivered message, which on two cores takes
the time the broker needs. Here the connection is opened through aiormq's own ``transport_factory``
hook with a :class:`TapReader`: frames of the tapped channel that belong to a delivery
(``Basic.Deliver``, its content header and body) are parsed with ``struct`` and handed over a batch
per socket read; every other frame (handshake, heartbeats, channel methods, errors) goes to aiormq
unchanged, which keeps doing all of that.

Since aiormq no longer sees the deliveries, the reader feeds it a heartbeat frame at least once a
second while it swallows traffic, so that aiormq does not take a busy connection for a dead one.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, SupportsIndex

import aiormq
from aiormq.abc import DeliveredMessage
from aiormq.connection import TransportFactory
from pamqp import frame as pamqp_frame
from pamqp.header import ContentHeader

_FRAME_HEAD = struct.Struct(">BHI")
_DELIVER = b"\x00\x3c\x00\x3c"  # class 60 (basic), method 60 (deliver)
_U64 = struct.Struct(">Q")
_BODY_SIZE = struct.Struct(">Q")
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"
HEARTBEAT_EVERY_S = 1.0


@dataclass(slots=True)
class Delivery:
    """One delivered message: what a consumer needs, with the raw header kept for rare use."""

    delivery_tag: int
    redelivered: bool
    body: bytes
    header_frame: bytes

    def header(self) -> ContentHeader:
        """The decoded content header (properties, headers): decoded only when asked for."""
        _, _, header = pamqp_frame.unmarshal(self.header_frame)
        assert isinstance(header, ContentHeader)
        return header


async def untapped(message: DeliveredMessage) -> None:  # pragma: no cover - the tap takes them
    """The aiormq consumer callback of a tapped channel, which never receives a message."""
    raise AssertionError("deliveries of a tapped channel must not reach aiormq")


class Tap:
    """Which channel to take deliveries from, and where they go (a batch per socket read)."""

    def __init__(self) -> None:
        self.channel = 0
        self.on_deliveries: Callable[[list[Delivery]], None] = lambda batch: None

    def attach(self, channel: int, on_deliveries: Callable[[list[Delivery]], None]) -> None:
        self.channel = channel
        self.on_deliveries = on_deliveries


def _short_str_end(data: bytes | bytearray, pos: int) -> int:
    return pos + 1 + data[pos]


class TapReader(asyncio.StreamReader):
    """A StreamReader that keeps the tapped channel's deliveries for itself."""

    def __init__(self, tap: Tap, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tap = tap
        self._pending = bytearray()
        self._tag = 0
        self._redelivered = False
        self._header = b""
        self._size = -1
        self._parts: list[bytes] = []
        self._got = 0
        self._last_heartbeat = time.monotonic()

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        if not self._tap.channel and not self._pending:
            super().feed_data(data)
            return
        self._pending += bytes(data)
        buf = self._pending
        channel = self._tap.channel
        pos, end_of_data = 0, len(buf)
        passthrough: list[bytes] = []
        batch: list[Delivery] = []
        while end_of_data - pos >= 7:
            kind, ch, size = _FRAME_HEAD.unpack_from(buf, pos)
            end = pos + 8 + size
            if end > end_of_data:
                break
            if ch != channel or not channel:
                passthrough.append(bytes(buf[pos:end]))
            elif kind == 1 and buf[pos + 7 : pos + 11] == _DELIVER:
                self._start(buf, pos + 11)
            elif kind == 2 and self._size < 0 and self._tag:
                self._header = bytes(buf[pos:end])
                (self._size,) = _BODY_SIZE.unpack_from(buf, pos + 11)
                self._maybe_done(batch)
            elif kind == 3 and self._size >= 0:
                self._parts.append(bytes(buf[pos + 7 : end - 1]))
                self._got += size
                self._maybe_done(batch)
            else:
                passthrough.append(bytes(buf[pos:end]))
            pos = end
        del buf[:pos]
        now = time.monotonic()
        if passthrough:
            self._last_heartbeat = now
            super().feed_data(b"".join(passthrough))
        elif batch and now - self._last_heartbeat >= HEARTBEAT_EVERY_S:
            self._last_heartbeat = now
            super().feed_data(HEARTBEAT_FRAME)
        if batch:
            self._tap.on_deliveries(batch)

    def _start(self, buf: bytearray, pos: int) -> None:
        pos = _short_str_end(buf, pos)  # consumer tag
        (self._tag,) = _U64.unpack_from(buf, pos)
        self._redelivered = bool(buf[pos + 8] & 1)
        self._size = -1
        self._parts = []
        self._got = 0

    def _maybe_done(self, batch: list[Delivery]) -> None:
        if self._got < self._size:
            return
        body = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        batch.append(Delivery(self._tag, self._redelivered, body, self._header))
        self._tag = 0
        self._size = -1
        self._parts = []


class TapTransport(TransportFactory):
    """aiormq's transport hook: a TCP or TLS connection read through a :class:`TapReader`."""

    def __init__(self, tap: Tap) -> None:
        self.tap = tap

    async def create(self, url: Any, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        provider = kwargs.pop("ssl_context_provider", None)
        ssl = await provider.get_context() if url.scheme == "amqps" and provider is not None else None
        loop = asyncio.get_running_loop()
        reader = TapReader(self.tap, limit=2**16, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol, url.host, url.port, ssl=ssl, **kwargs
            )
        except OSError as exc:
            raise aiormq.exceptions.AMQPConnectionError(*exc.args) from exc
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return reader, writer


#: Where a delivery stands. Pending: one of ours not yet journaled, or a foreign one held back.
PENDING, ACK, GIVE_BACK = 0, 1, 2
_SETTLED = bytes((ACK, GIVE_BACK))


class Settlements:
    """Each delivery of a channel acked (ours, journaled) or given back (not ours), in few frames.

    ``basic.ack``/``basic.nack`` with ``multiple`` settle every outstanding delivery up to a tag, so
    a prefix of decided deliveries goes out as one frame per run of the same kind. A delivery
    still pending (a reply being journaled, a foreign one held back) ends the prefix: what is
    decided above it waits. Settling those one by one instead would cost the broker a walk over
    every delivery still unacked before each (RabbitMQ keeps a channel's unacked deliveries in one
    queue), which with thousands held slows it to a crawl; :attr:`waiting` tells when to stop
    holding instead.
    """

    def __init__(self) -> None:
        self._state = bytearray()
        self._base = 0  # the tag of _state[0], less one

    def _mark(self, tags: list[int], state: int) -> None:
        st, base = self._state, self._base
        top = max(tags) - base
        if top > len(st):
            st.extend(bytes(top - len(st)))
        if base and tags[0] <= base:
            tags = [t for t in tags if t > base]
        for tag in tags:
            st[tag - base - 1] = state

    def ack(self, tags: list[int]) -> None:
        """These deliveries are this run's and recorded: they may be acked."""
        if tags:
            self._mark(tags, ACK)

    def give_back(self, tags: list[int]) -> None:
        """These deliveries are not this run's: they go back to the queue as they are."""
        if tags:
            self._mark(tags, GIVE_BACK)

    def frames(self) -> list[tuple[int, bool, bool]]:
        """``(tag, multiple, ack)`` for each frame to send now: ack, or nack with requeue."""
        st = self._state
        out: list[tuple[int, bool, bool]] = []
        decided = len(st) - len(st.lstrip(_SETTLED))
        kind = last = 0
        for i in range(decided):
            state = st[i]
            if kind and state != kind:
                out.append((last, True, kind == ACK))
            kind, last = state, self._base + i + 1
        if kind:
            out.append((last, True, kind == ACK))
        if decided:
            del st[:decided]
            self._base += decided
        return out

    @property
    def waiting(self) -> int:
        """Decided deliveries held up behind a pending one."""
        return len(self._state) - self._state.count(PENDING)

    @property
    def outstanding(self) -> int:
        """Deliveries received and not yet settled by a frame."""
        return len(self._state)

    def reset(self) -> None:
        """A new channel numbers its deliveries from 1 again; the old one's went back on close."""
        self._state.clear()
        self._base = 0
