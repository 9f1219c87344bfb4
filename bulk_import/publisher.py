"""Publish message bodies with publisher confirms, as fast as the broker takes them.

aiormq opens the connection and the channel (handshake, authentication, heartbeats and channel
errors stay its job). The per-message path does not go through ``basic_publish``, whose future,
lock and queue entry per message cost more CPU than the broker spends on the message. Instead:
messages come already framed (:mod:`bulk_import.frames`, in the threads that build them), a chunk
of them goes out in one socket write, and confirms are settled by delivery tag (the broker
numbers messages 1, 2, ... on a confirm channel, and a ``multiple`` ack settles every tag up to
its own).

The channel must carry nothing but this publisher. It hooks the channel's confirm handler, which
is why aiormq is pinned in ``pyproject.toml``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiormq
from aiormq.abc import ChannelFrame
from pamqp import commands as spec

from .errors import ConnectionLost
from .frames import Wire, encode_messages, reframe

log = logging.getLogger(__name__)

#: How often a publisher waiting for confirms looks whether the broker has blocked it.
BLOCKED_CHECK_S = 1.0

Tokens = list[int]


@dataclass(frozen=True, slots=True)
class Returned:
    """A message the broker sent back (``basic.return``): why, and which one."""

    reply_code: int
    reply_text: str
    message_id: str


def unblocked(connection: aiormq.abc.AbstractConnection) -> asyncio.Event:
    """aiormq's record of ``connection.blocked`` / ``unblocked`` (pinned version): set when not blocked."""
    event: asyncio.Event = connection._Connection__connection_unblocked  # type: ignore[attr-defined]
    return event


@dataclass(slots=True)
class _Chunk:
    """Messages written together; their delivery tags are ``first_tag`` onwards."""

    first_tag: int
    tokens: Tokens
    messages: list[bytes]


class _Outbox:
    """Messages accepted but not yet written (new ones, nacked ones, resends after a reconnect).

    Kept as the callers' lists with a read position in the first, so taking a chunk copies the
    chunk, not what is left.
    """

    def __init__(self) -> None:
        self._parts: deque[tuple[Sequence[int], Sequence[bytes]]] = deque()
        self._at = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, tokens: Sequence[int], messages: Sequence[bytes]) -> None:
        if tokens:
            self._parts.append((tokens, messages))
            self._size += len(tokens)

    def add_front(self, tokens: Sequence[int], messages: Sequence[bytes]) -> None:
        if tokens:
            self._settle_head()
            self._parts.appendleft((tokens, messages))
            self._size += len(tokens)

    def _settle_head(self) -> None:
        if self._at:
            tokens, messages = self._parts[0]
            self._parts[0] = (tokens[self._at :], messages[self._at :])
            self._at = 0

    def take(self, n: int) -> tuple[Tokens, list[bytes]]:
        tokens: Tokens = []
        messages: list[bytes] = []
        while n and self._parts:
            part_tokens, part_messages = self._parts[0]
            end = min(len(part_tokens), self._at + n)
            tokens += part_tokens[self._at : end]
            messages += part_messages[self._at : end]
            n -= end - self._at
            self._at = end
            if end == len(part_tokens):
                self._parts.popleft()
                self._at = 0
        self._size -= len(tokens)
        return tokens, messages

    def reframe(self, old: Wire, new: Wire) -> None:
        """Make every waiting message again for another wire."""
        self._settle_head()
        self._parts = deque((tokens, reframe(messages, old, new)) for tokens, messages in self._parts)


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
        on_returned: Callable[[Returned], None] | None = None,
    ) -> None:
        self.routing_key = routing_key
        self.exchange = exchange
        #: With a callback, messages are published ``mandatory``: one that no queue takes (its queue
        #: was deleted) comes back, and is reported here, before its confirm.
        self.on_returned = on_returned
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
        self.wire: Wire | None = None

    @property
    def in_flight(self) -> int:
        """Messages written and not yet settled by the broker."""
        return self._in_flight

    def attach(self, channel: aiormq.Channel) -> None:
        """Publish on ``channel`` (opened with publisher confirms); unsettled messages go again."""
        if not channel.publisher_confirms:
            raise ValueError("the publisher needs a channel with publisher confirms")
        self._requeue_sent()
        self._early.clear()
        self._in_flight = 0
        self._next_tag = channel.delivery_tag + 1
        self._channel = channel
        connection = channel.connection
        assert isinstance(connection, aiormq.Connection)
        self._connection = connection
        frame_max = channel.connection.connection_tune.frame_max or 131072
        wire = Wire(channel.number, frame_max, self.routing_key, self.exchange, self.on_returned is not None)
        if self.wire is not None and wire != self.wire:
            self._outbox.reframe(self.wire, wire)
        self.wire = wire
        channel._on_confirm_frame = self._on_confirm_frame  # type: ignore[method-assign]
        channel._on_return_frame = self._on_return_frame  # type: ignore[method-assign]
        self._closed = channel.closing
        self._closed.add_done_callback(lambda _: self._space.set())

    async def publish(self, tokens: Sequence[int], messages: Sequence[bytes], wire: Wire) -> None:
        """Queue messages encoded for ``wire`` and write while the window has room.

        Returns once all are written. Messages made for another wire than the channel's (a batch
        built before a reconnect) are made again.
        """
        if wire != self.wire:
            assert self.wire is not None, "attach a channel first"
            messages = reframe(messages, wire, self.wire)
        self._outbox.add(tokens, messages)
        await self._pump(until_empty=False)

    async def publish_bodies(
        self, tokens: Sequence[int], bodies: Sequence[bytes], ids: Sequence[bytes]
    ) -> None:
        """Like :meth:`publish`, from bodies and message ids."""
        assert self.wire is not None, "attach a channel first"
        await self.publish(tokens, encode_messages(self.wire, bodies, ids), self.wire)

    def _requeue_sent(self) -> None:
        """Put written, unsettled messages back in front, but for those ``done`` says need no resend."""
        kept = [(t, m) for chunk in self._sent for t, m in zip(chunk.tokens, chunk.messages, strict=True)]
        kept = [(t, m) for t, m in kept if not self.done(t)]
        self._outbox.add_front([t for t, _ in kept], [m for _, m in kept])
        self._sent.clear()

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
        tokens, messages = self._outbox.take(n)
        payload = b"".join(messages)
        self._sent.append(_Chunk(self._next_tag, tokens, messages))
        self._next_tag += len(tokens)
        self._in_flight += len(tokens)
        self._channel.delivery_tag = self._next_tag - 1
        drained = self._channel.create_future()
        await self._connection.write_queue.put(
            ChannelFrame(payload=payload, should_close=False, drain_future=drained)
        )
        await self._until(drained)

    def _unblocked(self) -> asyncio.Event:
        assert self._connection is not None
        return unblocked(self._connection)

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

    async def _on_return_frame(self, frame: spec.Basic.Return) -> None:
        """A message the broker could not route: its content follows; read it the way aiormq does."""
        channel = self._channel
        assert channel is not None
        header = await channel._Channel__get_content_header()  # type: ignore[attr-defined]
        message = await channel._read_content(frame, header)
        if self.on_returned is not None:
            self.on_returned(
                Returned(
                    frame.reply_code or 0, frame.reply_text or "", message.header.properties.message_id or ""
                )
            )

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
        nacked: list[tuple[int, bytes]] = []
        while self._sent and self._sent[0].first_tag <= tag:
            chunk = self._sent[0]
            n = min(len(chunk.tokens), tag - chunk.first_tag + 1)
            if self._early:
                for i in range(n):
                    if self._early.pop(chunk.first_tag + i, ok):
                        acked.append(chunk.tokens[i])
                    else:
                        nacked.append((chunk.tokens[i], chunk.messages[i]))
            elif ok:
                acked.extend(chunk.tokens[:n])
            else:
                nacked.extend(zip(chunk.tokens[:n], chunk.messages[:n], strict=True))
            if n == len(chunk.tokens):
                self._sent.popleft()
            else:
                self._sent[0] = _Chunk(chunk.first_tag + n, chunk.tokens[n:], chunk.messages[n:])
            self._in_flight -= n
        if acked:
            self.confirmed += len(acked)
            self.on_confirmed(acked)
        if nacked:
            self._on_nacked(nacked)

    def _on_nacked(self, nacked: list[tuple[int, bytes]]) -> None:
        self.nacked += len(nacked)
        failed: Tokens = []
        for token, message in nacked:
            tries = self._retries.get(token, 0)
            if tries < self.nack_retries:
                self._retries[token] = tries + 1
                self._outbox.add((token,), (message,))
            else:
                self._retries.pop(token, None)
                failed.append(token)
        log.warning("the broker refused %d message(s); %d given up", len(nacked), len(failed))
        if failed:
            self.on_failed(failed)
