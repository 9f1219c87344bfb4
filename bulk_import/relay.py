"""Replies between a coordinator and its workers (``--workers N``), over one socket per worker.

The result queue is shared, and the broker hands each delivery to any one consumer, so with
several processes a reply would mostly reach a process that did not send its row. Instead only
the coordinator consumes: it relays each reply of the run to the worker that owns its row (row
number modulo N), and acks it once that worker says the reply is in its journal. The worker
feeds relayed replies to its run exactly where a :class:`~.consumer.ReplyConsumer` would.

Frames are a 4-byte length and a payload whose first byte says what it is:

- ``S`` spec (coordinator → worker, first): JSON, what to import;
- ``R`` replies (coordinator → worker): channel epoch, then (delivery tag, length, body) each;
- ``A`` settled (worker → coordinator): channel epoch, then the delivery tags now journaled;
- ``P`` progress and ``F`` final summary (worker → coordinator): JSON.

Tags carry the epoch of the coordinator's channel they came on: after a reconnect, settlements
for the old channel are dropped (those replies come again and count once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable, Iterator

import orjson

from .consumer import ACK_INTERVAL_S, ConsumerCounts, ReplyConsumer
from .delivery import Delivery
from .messages import Answers, MalformedReply, parse_feedback_id, parse_reply
from .progress import Snapshot

log = logging.getLogger(__name__)

SPEC, REPLIES, SETTLED, PROGRESS, FINAL = b"S", b"R", b"A", b"P", b"F"

_LENGTH = struct.Struct(">I")
_REPLY_HEAD = struct.Struct(">QI")
_TAG = struct.Struct(">Q")


def frame(kind: bytes, payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload) + 1) + kind + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """``(kind, payload)`` of the next frame, or None when the other side has closed."""
    try:
        head = await reader.readexactly(_LENGTH.size)
        data = await reader.readexactly(_LENGTH.unpack(head)[0])
    except asyncio.IncompleteReadError:
        return None
    return data[:1], data[1:]


def encode_replies(epoch: int, replies: list[tuple[int, bytes]]) -> bytes:
    parts = [_LENGTH.pack(epoch)]
    for tag, body in replies:
        parts += (_REPLY_HEAD.pack(tag, len(body)), body)
    return b"".join(parts)


def decode_replies(payload: bytes) -> tuple[int, Iterator[tuple[int, bytes]]]:
    epoch = _LENGTH.unpack_from(payload)[0]

    def replies() -> Iterator[tuple[int, bytes]]:
        at = _LENGTH.size
        while at < len(payload):
            tag, size = _REPLY_HEAD.unpack_from(payload, at)
            at += _REPLY_HEAD.size
            yield tag, payload[at : at + size]
            at += size

    return epoch, replies()


def encode_settled(epoch: int, tags: list[int]) -> bytes:
    return _LENGTH.pack(epoch) + struct.pack(f">{len(tags)}Q", *tags)


def decode_settled(payload: bytes) -> tuple[int, list[int]]:
    epoch = _LENGTH.unpack_from(payload)[0]
    return epoch, list(struct.unpack_from(f">{(len(payload) - _LENGTH.size) // _TAG.size}Q", payload, 4))


class RelayedReplies:
    """A worker's replies: relayed by the coordinator, settled back to it once journaled.

    It has the surface of :class:`~.consumer.ReplyConsumer` that the run uses; the worker's own
    connection only publishes, so reconnecting it does not touch the relay.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        run_id: str,
        *,
        on_replies: Callable[[Answers], None],
        before_ack: Callable[[], None],
        on_closed: Callable[[], None],
    ) -> None:
        self.reader, self.writer = reader, writer
        self.on_closed = on_closed
        self.run_id = run_id
        self.on_replies = on_replies
        self.before_ack = before_ack
        self.counts = ConsumerCounts()
        self.last_reply_at = time.monotonic()
        self._settled: dict[int, list[int]] = {}
        self._stopping = False

    async def attach(self, *_: object) -> None:
        """Nothing to do: the replies do not come over this process's connection."""

    async def run(self) -> None:
        """Take relayed replies and settle them back, at least every 50 ms, until :meth:`stop`."""
        self._stopping = False
        reading = asyncio.create_task(self._read())
        try:
            while not self._stopping and not reading.done():
                await asyncio.wait({reading}, timeout=ACK_INTERVAL_S)
                await self.flush_acks()
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    def stop(self) -> None:
        self._stopping = True

    async def _read(self) -> None:
        while (got := await read_frame(self.reader)) is not None:
            kind, payload = got
            if kind != REPLIES:
                log.warning("unexpected frame %r from the coordinator", kind)
                continue
            epoch, replies = decode_replies(payload)
            settled = self._settled.setdefault(epoch, [])
            for tag, body in replies:
                self._take(body)
                settled.append(tag)
            self.last_reply_at = time.monotonic()
        if not self._stopping:
            log.warning("the coordinating process is gone: finishing what is in flight")
            self.on_closed()

    def _take(self, body: bytes) -> None:
        try:
            reply = parse_reply(body)
        except MalformedReply:  # the coordinator relays only parsed replies; count, never crash
            self.counts.malformed += 1
            return
        ours = parse_feedback_id(reply.feedback_id)
        if ours is None or ours[0] != self.run_id:
            self.counts.foreign += 1
            return
        self.counts.replies += 1
        self.on_replies(Answers.of(ours[1], reply))

    async def flush_acks(self, *, final: bool = False) -> None:
        """Make the replies taken durable, then tell the coordinator it may ack them."""
        if not self._settled or self.writer.is_closing():
            return
        self.before_ack()
        for epoch, tags in self._settled.items():
            if tags:
                self.writer.write(frame(SETTLED, encode_settled(epoch, tags)))
        self._settled.clear()
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()


class ShardRouter(ReplyConsumer):
    """The coordinator's consumer: each reply of the run goes to the worker that owns its row.

    A relayed reply is acked when its worker settles it; a reply for a worker that is gone is
    left unacked, so the broker keeps it for ``--resume``. A reply for a shard whose every row is
    answered already (its worker finished, or a part finished before ``--resume``) is a late
    duplicate: it is acked at once, else it would stay unacked until the end of the run.
    """

    def __init__(self, run_id: str, queue: str, workers: list[asyncio.StreamWriter | None]) -> None:
        super().__init__(run_id, queue, on_replies=lambda replies: None, before_ack=lambda: None)
        self.workers = workers
        #: Shards with every row answered and recorded.
        self.finished: set[int] = set()
        self.late_duplicates = 0
        self.epoch = 0
        self._outbox: dict[int, list[tuple[int, bytes]]] = {}

    async def attach(self, *args: object) -> None:
        self.epoch += 1
        await super().attach(*args)  # type: ignore[arg-type]

    def take(self, replies: Answers, delivery: Delivery) -> bool:
        shard = replies.rows[0] % len(self.workers)
        if shard in self.finished:
            self.late_duplicates += 1
            return True
        self._outbox.setdefault(shard, []).append((delivery.delivery_tag, delivery.body))
        return False

    def _on_deliveries(self, batch: list[Delivery]) -> None:
        super()._on_deliveries(batch)
        for shard, replies in self._outbox.items():
            writer = self.workers[shard]
            if writer is not None and not writer.is_closing():
                writer.write(frame(REPLIES, encode_replies(self.epoch, replies)))
        self._outbox.clear()

    def settle_relayed(self, epoch: int, tags: list[int]) -> None:
        if epoch == self.epoch:
            self.settle(tags)


def progress_frame(snapshot: Snapshot) -> bytes:
    return frame(PROGRESS, orjson.dumps(snapshot))


class RelayProgress:
    """A worker's progress observer: each snapshot goes to the coordinator, which adds them up."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def update(self, snapshot: Snapshot) -> None:
        if not self.writer.is_closing():
            self.writer.write(progress_frame(snapshot))

    def close(self) -> None:
        pass
