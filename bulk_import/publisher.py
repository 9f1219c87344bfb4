"""Publish message bodies with publisher confirms, as fast as the broker takes them.

aiormq opens the connection and the channel (handshake, authentication, heartbeats and channel
errors stay its job). The per-message path does not go through ``basic_publish``, whose future,
lock and queue entry per message cost more CPU than the broker spends on the message. Instead:
the Basic.Publish frame is encoded once, each message adds only its content header and body
frames, a chunk of messages goes out in one socket write, and confirms are settled by delivery
tag (the broker numbers messages 1, 2, ... on a confirm channel, and a ``multiple`` ack settles
every tag up to its own).

The channel must carry nothing but this publisher. It hooks the channel's confirm handler, which
is why aiormq is pinned in ``pyproject.toml``.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiormq
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp import frame as pamqp_frame

from .errors import ConnectionLost

log = logging.getLogger(__name__)

FRAME_END = b"\xce"
#: How often a publisher waiting for confirms looks whether the broker has blocked it.
BLOCKED_CHECK_S = 1.0
#: Content header property flags: content_type, delivery_mode, message_id.
_FLAGS = (1 << 15) | (1 << 12) | (1 << 7)
_CONTENT_TYPE = b"\x10application/json"
_PERSISTENT = b"\x02"
_HEADER_HEAD = struct.Struct(">BHI")
_HEADER_FIXED = struct.Struct(">HHQH")

Tokens = list[int]


def encode_message(channel: int, body: bytes, message_id: bytes, frame_max: int) -> bytes:
    """The content header and body frames of one persistent JSON message."""
    message_id = message_id[:255]  # the AMQP short-string limit
    props = _CONTENT_TYPE + _PERSISTENT + bytes((len(message_id),)) + message_id
    header = _HEADER_FIXED.pack(60, 0, len(body), _FLAGS) + props
    out = [_HEADER_HEAD.pack(2, channel, len(header)), header, FRAME_END]
    limit = frame_max - 8
    for start in range(0, len(body), limit) if body else ():
        part = body[start : start + limit]
        out += (_HEADER_HEAD.pack(3, channel, len(part)), part, FRAME_END)
    return b"".join(out)


@dataclass(slots=True)
class _Chunk:
    """Messages written together; their delivery tags are ``first_tag`` onwards."""

    first_tag: int
    tokens: Tokens
    bodies: list[bytes]
    ids: list[bytes]


@dataclass
class _Outbox:
    """Messages accepted but not yet written (new ones, nacked ones, resends after a reconnect)."""

    tokens: deque[int] = field(default_factory=deque)
    bodies: deque[bytes] = field(default_factory=deque)
    ids: deque[bytes] = field(default_factory=deque)

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, tokens: Sequence[int], bodies: Sequence[bytes], ids: Sequence[bytes]) -> None:
        self.tokens.extend(tokens)
        self.bodies.extend(bodies)
        self.ids.extend(ids)

    def add_front(self, chunks: Sequence[_Chunk], done: Callable[[int], bool]) -> None:
        """Put written messages back in front, in order, but for those ``done`` says need no resend."""
        for chunk in reversed(chunks):
            for token, body, message_id in reversed(
                list(zip(chunk.tokens, chunk.bodies, chunk.ids, strict=True))
            ):
                if not done(token):
                    self.tokens.appendleft(token)
                    self.bodies.appendleft(body)
                    self.ids.appendleft(message_id)

    def take(self, n: int) -> tuple[Tokens, list[bytes], list[bytes]]:
        n = min(n, len(self.tokens))
        pop_t, pop_b, pop_i = self.tokens.popleft, self.bodies.popleft, self.ids.popleft
        return [pop_t() for _ in range(n)], [pop_b() for _ in range(n)], [pop_i() for _ in range(n)]


class Publisher:
    """Bodies in; for each, ``on_confirmed`` or (after ``nack_retries`` re-sends) ``on_failed``.

    Each message carries a caller's token (a row number, a request's delivery tag) that comes back
    in the callbacks. One task at a time calls :meth:`publish` and :meth:`flush`.
    """

    def __init__(
        self,
        routing_key: str,
        *,
        window: int,
        on_confirmed: Callable[[Tokens], None],
        on_failed: Callable[[Tokens], None],
        nack_retries: int = 3,
        chunk: int = 256,
        done: Callable[[int], bool] = lambda token: False,
        exchange: str = "",
    ) -> None:
        self.routing_key = routing_key
        self.exchange = exchange
        self.window = max(1, window)
        self.chunk = max(1, min(chunk, self.window))
        self.nack_retries = nack_retries
        self.on_confirmed = on_confirmed
        self.on_failed = on_failed
        #: Whether a written, unconfirmed message needs no resend after a reconnect (its reply came).
        self.done = done
        self.confirmed = 0
        self.nacked = 0
        self._outbox = _Outbox()
        self._sent: deque[_Chunk] = deque()
        self._in_flight = 0
        self._early: dict[int, bool] = {}
        self._retries: dict[int, int] = {}
        self._space = asyncio.Event()
        self._channel: aiormq.Channel | None = None
        self._connection: aiormq.Connection | None = None
        self._closed: asyncio.Future[Any] | None = None
        self._next_tag = 1
        self._paused = False
        self._method = b""
        self._frame_max = 131072

    @property
    def in_flight(self) -> int:
        """Messages written and not yet settled by the broker."""
        return self._in_flight

    def attach(self, channel: aiormq.Channel) -> None:
        """Publish on ``channel`` (opened with publisher confirms); unsettled messages go again."""
        if not channel.publisher_confirms:
            raise ValueError("the publisher needs a channel with publisher confirms")
        self._outbox.add_front(list(self._sent), self.done)
        self._sent.clear()
        self._early.clear()
        self._in_flight = 0
        self._next_tag = channel.delivery_tag + 1
        self._channel = channel
        connection = channel.connection
        assert isinstance(connection, aiormq.Connection)
        self._connection = connection
        self._frame_max = channel.connection.connection_tune.frame_max or 131072
        self._method = pamqp_frame.marshal(
            spec.Basic.Publish(exchange=self.exchange, routing_key=self.routing_key),
            channel.number,
        )
        channel._on_confirm_frame = self._on_confirm_frame  # type: ignore[method-assign]
        self._closed = channel.closing
        self._closed.add_done_callback(lambda _: self._space.set())

    async def publish(self, tokens: Sequence[int], bodies: Sequence[bytes], ids: Sequence[bytes]) -> None:
        """Queue the messages and write while the window has room; returns once all are written."""
        self._outbox.add(tokens, bodies, ids)
        await self._pump(until_empty=False)

    @property
    def unsent(self) -> int:
        """Messages accepted and not written yet (nacked ones, or re-sends after a reconnect)."""
        return len(self._outbox)

    async def send_unsent(self) -> None:
        """Write what is waiting in the outbox, as far as the window allows."""
        await self._pump(until_empty=False)

    async def flush(self) -> None:
        """Write everything queued and wait until the broker has settled all of it."""
        await self._pump(until_empty=True)

    async def _pump(self, *, until_empty: bool) -> None:
        while len(self._outbox) or (until_empty and self._in_flight):
            self._check_open()
            room = self.window - self._in_flight
            if len(self._outbox) and room >= min(self.chunk, len(self._outbox)):
                await self._wait_unblocked()
                await self._write(min(room, self.chunk))
                continue
            self._space.clear()
            try:
                await asyncio.wait_for(self._space.wait(), BLOCKED_CHECK_S)
            except TimeoutError:
                self.note_blocked()

    async def _write(self, n: int) -> None:
        assert self._channel is not None and self._connection is not None
        tokens, bodies, ids = self._outbox.take(n)
        number, method, frame_max = self._channel.number, self._method, self._frame_max
        payload = b"".join(
            [method + encode_message(number, b, i, frame_max) for b, i in zip(bodies, ids, strict=True)]
        )
        self._sent.append(_Chunk(self._next_tag, tokens, bodies, ids))
        self._next_tag += len(tokens)
        self._in_flight += len(tokens)
        self._channel.delivery_tag = self._next_tag - 1
        drained = self._channel.create_future()
        await self._connection.write_queue.put(
            ChannelFrame(payload=payload, should_close=False, drain_future=drained)
        )
        await self._until(drained)

    def _unblocked(self) -> asyncio.Event:
        """aiormq's record of ``connection.blocked`` / ``unblocked`` (pinned version)."""
        assert self._connection is not None
        event: asyncio.Event = self._connection._Connection__connection_unblocked  # type: ignore[attr-defined]
        return event

    def note_blocked(self) -> None:
        """Say once why confirms stopped coming, when the broker is what stopped them."""
        if not self._unblocked().is_set() and not self._paused:
            self._paused = True
            log.warning("publishing paused: the broker is blocking this connection (a resource alarm)")

    async def _wait_unblocked(self) -> None:
        """Pause while the broker blocks the connection (a memory or disk alarm)."""
        unblocked = self._unblocked()
        if not unblocked.is_set():
            self.note_blocked()
            waiter = asyncio.ensure_future(unblocked.wait())
            try:
                await self._until(waiter)
            finally:
                waiter.cancel()
        if self._paused:
            self._paused = False
            log.warning("publishing resumed: the broker unblocked this connection")

    async def _until(self, future: asyncio.Future[Any]) -> None:
        """Wait for ``future``, or raise :class:`ConnectionLost` if the channel closes first."""
        assert self._closed is not None
        await asyncio.wait((future, self._closed), return_when=asyncio.FIRST_COMPLETED)
        if not future.done() or future.cancelled() or future.exception() is not None:
            self._check_open()
            raise ConnectionLost("the channel closed while publishing")

    def _check_open(self) -> None:
        if self._closed is None:
            raise ConnectionLost("the publisher has no channel")
        if self._closed.done():
            reason = None if self._closed.cancelled() else self._closed.exception()
            raise ConnectionLost(f"the connection to the broker was lost ({reason or 'closed'})")

    async def _on_confirm_frame(self, frame: spec.Basic.Ack | spec.Basic.Nack | spec.Basic.Reject) -> None:
        ok = isinstance(frame, spec.Basic.Ack)
        assert frame.delivery_tag is not None
        multiple = getattr(frame, "multiple", False)
        if multiple or (self._sent and frame.delivery_tag == self._sent[0].first_tag):
            self._settle_upto(frame.delivery_tag, ok)
        else:
            self._early[frame.delivery_tag] = ok
        while self._early and self._sent and self._sent[0].first_tag in self._early:
            first = self._sent[0].first_tag
            self._settle_upto(first, self._early.pop(first))
        if self._in_flight <= self.window - self.chunk or not self._in_flight:
            self._space.set()

    def _settle_upto(self, tag: int, ok: bool) -> None:
        acked: Tokens = []
        nacked: list[tuple[int, bytes, bytes]] = []
        while self._sent and self._sent[0].first_tag <= tag:
            chunk = self._sent[0]
            n = min(len(chunk.tokens), tag - chunk.first_tag + 1)
            if self._early:
                for i in range(n):
                    if self._early.pop(chunk.first_tag + i, ok):
                        acked.append(chunk.tokens[i])
                    else:
                        nacked.append((chunk.tokens[i], chunk.bodies[i], chunk.ids[i]))
            elif ok:
                acked.extend(chunk.tokens[:n])
            else:
                nacked.extend(zip(chunk.tokens[:n], chunk.bodies[:n], chunk.ids[:n], strict=True))
            if n == len(chunk.tokens):
                self._sent.popleft()
            else:
                self._sent[0] = _Chunk(chunk.first_tag + n, chunk.tokens[n:], chunk.bodies[n:], chunk.ids[n:])
            self._in_flight -= n
        if acked:
            self.confirmed += len(acked)
            self.on_confirmed(acked)
        if nacked:
            self._on_nacked(nacked)

    def _on_nacked(self, nacked: list[tuple[int, bytes, bytes]]) -> None:
        self.nacked += len(nacked)
        failed: Tokens = []
        for token, body, message_id in nacked:
            tries = self._retries.get(token, 0)
            if tries < self.nack_retries:
                self._retries[token] = tries + 1
                self._outbox.add((token,), (body,), (message_id,))
            else:
                self._retries.pop(token, None)
                failed.append(token)
        log.warning("the broker refused %d message(s); %d given up", len(nacked), len(failed))
        if failed:
            self.on_failed(failed)
