"""Read ``database_import_result`` while publishing, and hand this run's replies to the pipeline.

Deliveries arrive a socket read at a time through the connection's :class:`~.delivery.Tap`; this
run's replies are recorded at once (journal first, ack after). The result queue is shared by every
importer on the platform, so a reply that is not this run's is published again to the queue's tail
for its owner and only then acked: never dropped, and never requeued at the head, where it would
come straight back. Replies that keep coming round (nobody else is consuming) are passed on at a
bounded rate, so the loop costs no CPU. Acks use ``multiple`` only up to the last tag below which
everything is settled, so a reply still being passed on is never acked by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import aiormq

from .delivery import Acks, Delivery, Tap, untapped
from .messages import MalformedReply, Reply, parse_feedback_id, parse_reply

log = logging.getLogger(__name__)

ACK_EVERY = 2000
ACK_INTERVAL_S = 0.05
#: Replies settled behind a foreign one that are acked one by one rather than wait.
LOOSE_ACKS = 256
#: Foreign replies passed back per second once they start coming round again.
BOUNCE_RATE = 200.0
BOUNCED_HEADER = "x-bulk-import-passed-on"


@dataclass
class ConsumerCounts:
    replies: int = 0
    foreign: int = 0
    malformed: int = 0


class ReplyConsumer:
    """Consumes replies; ``on_reply(row, reply)`` gets each of this run's, in delivery order."""

    def __init__(
        self,
        run_id: str,
        queue: str,
        *,
        on_reply: Callable[[int, Reply], None],
        before_ack: Callable[[], None],
        prefetch: int = 4096,
    ) -> None:
        self.run_id = run_id
        self.queue = queue
        self.on_reply = on_reply
        self.before_ack = before_ack
        self.prefetch = prefetch
        self.counts = ConsumerCounts()
        self.last_reply_at = time.monotonic()
        self._acks = Acks()
        self._foreign: deque[Delivery] = deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._working: asyncio.Future[None] | None = None
        self._channel: aiormq.Channel | None = None
        self._republish: aiormq.Channel | None = None
        self._bounce_tokens = BOUNCE_RATE
        self._bounce_clock = time.monotonic()

    async def attach(self, tap: Tap, channel: aiormq.Channel, republish: aiormq.Channel) -> None:
        """Consume on ``channel`` through ``tap``; foreign replies go back through ``republish``."""
        if self._working is not None:
            # An ack or a pass-on still waiting on the connection that is gone: its writer no longer
            # empties the queue, so it would wait for ever and no ack would go out on the new one.
            self._working.cancel()
        self._acks.reset()
        self._foreign.clear()
        self._channel = channel
        self._republish = republish
        tap.attach(channel.number, self._on_deliveries)
        await channel.basic_qos(prefetch_count=self.prefetch)
        await channel.basic_consume(self.queue, untapped)

    def _on_deliveries(self, batch: list[Delivery]) -> None:
        settled: list[int] = []
        run_id = self.run_id
        for delivery in batch:
            try:
                reply = parse_reply(delivery.body)
            except MalformedReply as exc:
                self.counts.malformed += 1
                log.warning("malformed reply acked and skipped (%s): %r", exc, delivery.body[:200])
                settled.append(delivery.delivery_tag)
                continue
            ours = parse_feedback_id(reply.feedback_id)
            if ours is None or ours[0] != run_id:
                self._foreign.append(delivery)
                continue
            self.counts.replies += 1
            if self.take(ours[1], reply, delivery):
                settled.append(delivery.delivery_tag)
        if settled:
            self.last_reply_at = time.monotonic()
            self._acks.settle(settled)
        if self._foreign or self._acks.upto - self._acks.sent >= ACK_EVERY:
            self._wake.set()

    def take(self, row: int, reply: Reply, delivery: Delivery) -> bool:
        """Hand one of this run's replies on; True when it is settled now (else see :meth:`settle`)."""
        self.on_reply(row, reply)
        return True

    def settle(self, tags: list[int]) -> None:
        """Deliveries that :meth:`take` left unsettled are settled now: they may be acked."""
        self._acks.settle(tags)
        self._wake.set()

    async def run(self) -> None:
        """Pass foreign replies on and flush acks, at least every 50 ms, until :meth:`stop`."""
        self._stopping = False
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), ACK_INTERVAL_S)
            self._wake.clear()
            self._working = working = asyncio.ensure_future(self._pass_on_and_ack())
            try:
                await asyncio.wait({working})
            finally:
                self._working = None
                working.cancel()  # if this task is cancelled, the work goes too
            if working.cancelled():
                continue  # attached to a new channel meanwhile
            exc = working.exception()
            if isinstance(exc, aiormq.exceptions.AMQPError | aiormq.exceptions.ChannelInvalidStateError):
                # The connection is going; the pipeline reconnects and attaches us again, and the
                # broker delivers whatever was not acked once more.
                log.debug("consumer paused: %r", exc)
            elif exc is not None:
                raise exc

    async def _pass_on_and_ack(self) -> None:
        await self._pass_on_foreign()
        await self.flush_acks()

    def stop(self) -> None:
        """Let :meth:`run` return once the reply it is passing on (if any) is settled."""
        self._stopping = True
        self._wake.set()

    async def _pass_on_foreign(self) -> None:
        while self._foreign and not self._stopping:
            delivery, channel = self._foreign[0], self._channel
            await self._pass_on(delivery)
            if channel is self._channel and self._foreign and self._foreign[0] is delivery:
                self._foreign.popleft()
                self._acks.settle([delivery.delivery_tag])

    async def flush_acks(self, *, final: bool = False) -> None:
        """Ack what is settled; ``final`` also acks one by one what waits behind a foreign reply.

        (That is done during the run too once many wait, so the prefetch window never fills up.)
        """
        channel = self._channel
        if channel is None or channel.is_closed:
            return
        tag = self._acks.to_send()
        loose = self._acks.loose() if final or self._acks.loose_count >= LOOSE_ACKS else []
        if not tag and not loose:
            return
        self.before_ack()
        if tag:
            await channel.basic_ack(tag, multiple=True, wait=final and not loose)
        for i, single in enumerate(loose, 1):
            await channel.basic_ack(single, wait=final and i == len(loose))

    async def _pass_on(self, delivery: Delivery) -> None:
        """Publish a foreign reply to the tail of the queue (confirmed), so it can be acked."""
        assert self._republish is not None
        self.counts.foreign += 1
        props = delivery.header().properties
        headers = dict(props.headers or {})
        passes = headers.get(BOUNCED_HEADER, 0)
        passes = passes if isinstance(passes, int) else 0
        if passes:
            await self._throttle()
        headers[BOUNCED_HEADER] = passes + 1
        props.headers = headers
        await self._republish.basic_publish(
            delivery.body, exchange="", routing_key=self.queue, properties=props
        )

    async def _throttle(self) -> None:
        """A token bucket: replies that come round again are passed on at :data:`BOUNCE_RATE`."""
        now = time.monotonic()
        refill = (now - self._bounce_clock) * BOUNCE_RATE
        self._bounce_tokens = min(BOUNCE_RATE, self._bounce_tokens + refill)
        self._bounce_clock = now
        if self._bounce_tokens < 1:
            await asyncio.sleep((1 - self._bounce_tokens) / BOUNCE_RATE)
            self._bounce_tokens = 1
            self._bounce_clock = time.monotonic()
        self._bounce_tokens -= 1
