"""The stand-in job server on the broker: consume requests, apply them, reply, ack.

A request is acked only once its reply is confirmed by the broker (or deliberately dropped), so a
stand-in that dies loses nothing: the broker delivers the unacked requests again. Replies go out
through the same bulk publisher the importer uses, and requests are handled a batch at a time, so
the stand-in keeps up with the importer on the same two cores.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiormq
import orjson
from aiormq.abc import DeliveredMessage

from .. import broker
from ..config import BrokerSettings
from ..publisher import Publisher
from .profiles import ERROR_CODES, INVALID_JSON, TEMPORARY_FAILURE, ProfileStore

log = logging.getLogger(__name__)

ACK_INTERVAL_S = 0.02
BATCH = 512
EXIT_AFTER_CODE = 75
_FEEDBACK_RE = re.compile(rb'"feedback_id"\s*:\s*"([^"\\]{1,200})"')
#: Token of a message whose confirm settles no request (the second copy of a duplicated reply).
NO_REQUEST = -1


@dataclass(frozen=True)
class EmulatorSettings:
    """Where to serve, and how to misbehave (shares from 0 to 1, repeatable by ``seed``)."""

    broker: BrokerSettings
    store_path: Path | None = None
    prefetch: int = 4096
    seed: int = 0
    drop: float = 0.0
    duplicate: float = 0.0
    error: float = 0.0
    delay: float = 0.0
    malformed: float = 0.0
    exit_after: int | None = None


@dataclass
class EmulatorCounts:
    received: int = 0
    replied: int = 0
    errors: int = 0
    dropped: int = 0
    duplicated: int = 0
    malformed: int = 0
    invalid_json: int = 0


_MALFORMED = (
    lambda fid: b"this is not json",
    lambda fid: orjson.dumps({"error": 0, "error_text": "", "profile_id": "0" * 24}),
    lambda fid: orjson.dumps({"error": "zero", "feedback_id": fid}),
)


class _Acker:
    """Acks requests in delivery order: ``multiple`` up to the highest tag below which all are settled."""

    def __init__(self) -> None:
        self.settled: set[int] = set()
        self.upto = 0
        self.sent_upto = 0

    def settle(self, tags: list[int]) -> None:
        self.settled.update(t for t in tags if t > 0)
        while self.upto + 1 in self.settled:
            self.upto += 1
            self.settled.discard(self.upto)

    def reset(self) -> None:
        self.settled.clear()
        self.upto = self.sent_upto = 0


class Server:
    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.counts = EmulatorCounts()
        self.store = ProfileStore(settings.store_path)
        self.random = random.Random(settings.seed)
        self.acker = _Acker()
        self.inbox: asyncio.Queue[DeliveredMessage] = asyncio.Queue()
        self.publisher = Publisher(
            settings.broker.result_queue,
            window=4096,
            on_confirmed=self.acker.settle,
            on_failed=self.acker.settle,
        )
        self.publish_lock = asyncio.Lock()
        self.delayed: set[asyncio.Task[None]] = set()
        self.consume_channel: aiormq.Channel | None = None
        self.consumer_tag: str | None = None

    async def start(self, connection: aiormq.Connection) -> None:
        b = self.settings.broker
        await broker.ensure_queues(connection, b, b.queue, b.result_queue)
        self.publisher.attach(await broker.open_channel(connection, b, confirms=True))
        channel = await broker.open_channel(connection, b, confirms=False)
        with broker.map_amqp_errors(b):
            await channel.basic_qos(prefetch_count=self.settings.prefetch)
            ok = await channel.basic_consume(b.queue, self.inbox.put)
        self.consumer_tag = ok.consumer_tag
        self.consume_channel = channel

    def _reply_for(self, body: bytes) -> tuple[bytes | None, bytes]:
        """The reply body (None when none can be addressed) and its feedback id."""
        try:
            request = orjson.loads(body)
            if not isinstance(request, dict):
                raise TypeError("not an object")
        except (orjson.JSONDecodeError, TypeError):
            self.counts.invalid_json += 1
            found = _FEEDBACK_RE.search(body)
            log.warning("request is not a JSON object: %r", body[:120])
            if found is None:
                return None, b""
            fid = found.group(1).decode(errors="replace")
            text = ERROR_CODES[INVALID_JSON]
            reply = {
                "error": INVALID_JSON,
                "error_text": text,
                "feedback_id": fid,
                "matching_field": "",
                "profile_id": "",
            }
            return orjson.dumps(reply), fid.encode()
        fid = request.get("feedback_id")
        fid_bytes = fid.encode() if isinstance(fid, str) else b""
        s = self.settings
        if s.error and self.random.random() < s.error:
            reply = {
                "error": TEMPORARY_FAILURE,
                "error_text": ERROR_CODES[TEMPORARY_FAILURE],
                "feedback_id": fid,
                "matching_field": request.get("matching", ""),
                "profile_id": "",
            }
        else:
            reply = self.store.apply(request)
        if reply["error"]:
            self.counts.errors += 1
        if s.malformed and self.random.random() < s.malformed:
            self.counts.malformed += 1
            return _MALFORMED[self.counts.malformed % len(_MALFORMED)](fid), fid_bytes
        return orjson.dumps(reply), fid_bytes

    async def handle(self, messages: list[DeliveredMessage]) -> None:
        tokens: list[int] = []
        bodies: list[bytes] = []
        ids: list[bytes] = []
        settled_now: list[int] = []
        s = self.settings
        for message in messages:
            tag = message.delivery_tag or 0
            if message.channel is not self.consume_channel:
                continue
            self.counts.received += 1
            if s.exit_after is not None and self.counts.received >= s.exit_after:
                log.warning("exiting abruptly after %d requests (--exit-after)", self.counts.received)
                logging.shutdown()
                os._exit(EXIT_AFTER_CODE)
            reply, fid = self._reply_for(message.body)
            if reply is None or (s.drop and self.random.random() < s.drop):
                self.counts.dropped += reply is not None
                settled_now.append(tag)
                continue
            tokens.append(tag)
            bodies.append(reply)
            ids.append(fid)
            if s.duplicate and self.random.random() < s.duplicate:
                self.counts.duplicated += 1
                tokens.append(NO_REQUEST)
                bodies.append(reply)
                ids.append(fid)
        self.acker.settle(settled_now)
        if not tokens:
            return
        self.counts.replied += len(tokens)
        if s.delay:
            task = asyncio.create_task(self._publish_later(tokens, bodies, ids))
            self.delayed.add(task)
            task.add_done_callback(self.delayed.discard)
        else:
            await self._publish(tokens, bodies, ids)

    async def _publish_later(self, tokens: list[int], bodies: list[bytes], ids: list[bytes]) -> None:
        await asyncio.sleep(self.settings.delay)
        await self._publish(tokens, bodies, ids)

    async def _publish(self, tokens: list[int], bodies: list[bytes], ids: list[bytes]) -> None:
        async with self.publish_lock:
            await self.publisher.publish(tokens, bodies, ids)

    async def flush_acks(self) -> None:
        channel = self.consume_channel
        if channel is None or channel.is_closed or self.acker.upto <= self.acker.sent_upto:
            return
        self.acker.sent_upto = self.acker.upto
        with broker.map_amqp_errors(self.settings.broker):
            await channel.basic_ack(self.acker.upto, multiple=True, wait=False)

    async def run(self, stop: asyncio.Event) -> None:
        """Handle requests in batches until ``stop``; then finish what was taken."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                getter = asyncio.ensure_future(self.inbox.get())
                done, _ = await asyncio.wait(
                    {getter, stopping}, timeout=ACK_INTERVAL_S, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    await self.flush_acks()
                    continue
                batch = [getter.result()]
                while len(batch) < BATCH and not self.inbox.empty():
                    batch.append(self.inbox.get_nowait())
                await self.handle(batch)
                await self.flush_acks()
        finally:
            stopping.cancel()

    async def drain(self) -> None:
        """After ``stop``: stop consuming, publish what is pending, ack what is confirmed.

        Requests taken but not handled go back to the queue when the channel closes.
        """
        channel = self.consume_channel
        if channel is not None and self.consumer_tag is not None:
            await channel.basic_cancel(self.consumer_tag)
        if self.delayed:
            await asyncio.gather(*self.delayed, return_exceptions=True)
        async with self.publish_lock:
            await self.publisher.flush()
        await self.flush_acks()
        if channel is not None:
            await channel.close()


async def serve(
    settings: EmulatorSettings, stop: asyncio.Event, on_ready: Callable[[], None] | None = None
) -> EmulatorCounts:
    """Serve until ``stop`` is set; returns what was done. Raises :class:`BrokerError` on a lost broker."""
    server = Server(settings)
    connection = await broker.connect(settings.broker)
    try:
        await server.start(connection)
        if on_ready is not None:
            on_ready()
        flusher = asyncio.create_task(_flush_store_periodically(server.store, stop))
        try:
            await server.run(stop)
            with broker.map_amqp_errors(settings.broker):
                await server.drain()
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
    finally:
        server.store.close()
        await broker.close_quietly(connection)
    return server.counts


async def _flush_store_periodically(store: ProfileStore, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(1.0)
        store.flush()
