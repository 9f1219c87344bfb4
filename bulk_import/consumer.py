"""Read ``database_import_result`` while publishing, and hand this run's replies to the pipeline.

The result queue is shared by every importer on the platform. A reply that is not this run's is
published again to the queue's tail for its owner and then acked: never dropped, and never
requeued at the head, where it would come straight back. Should such replies keep coming back
(nobody else is consuming), they are passed on at a bounded rate, so the loop costs no CPU.

Messages are handled in delivery order by one task, so an ack with ``multiple`` never covers a
message still being passed on. A reply is recorded in the journal before it is acked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiormq
from aiormq.abc import DeliveredMessage

from .messages import MalformedReply, Reply, parse_feedback_id, parse_reply

log = logging.getLogger(__name__)

ACK_EVERY = 1000
ACK_INTERVAL_S = 0.05
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
        self._inbox: asyncio.Queue[DeliveredMessage] = asyncio.Queue()
        self._channel: aiormq.Channel | None = None
        self._republish: aiormq.Channel | None = None
        self._unacked_tag = 0
        self._unacked = 0
        self._bounce_tokens = BOUNCE_RATE
        self._bounce_clock = time.monotonic()

    async def attach(self, channel: aiormq.Channel, republish: aiormq.Channel) -> None:
        """Consume on ``channel``; foreign replies go back through ``republish`` (confirms on)."""
        self._inbox = asyncio.Queue()
        self._unacked_tag = 0
        self._unacked = 0
        self._channel = channel
        self._republish = republish
        await channel.basic_qos(prefetch_count=self.prefetch)
        await channel.basic_consume(self.queue, self._inbox.put)

    async def run(self) -> None:
        """Handle deliveries until cancelled; acks are flushed at least every 50 ms."""
        while True:
            try:
                message = await asyncio.wait_for(self._inbox.get(), ACK_INTERVAL_S)
            except TimeoutError:
                await self.flush_acks()
                continue
            await self._handle(message)
            while not self._inbox.empty() and self._unacked < ACK_EVERY:
                await self._handle(self._inbox.get_nowait())
            await self.flush_acks()

    async def _handle(self, message: DeliveredMessage) -> None:
        tag = message.delivery_tag
        if message.channel is not self._channel or tag is None:
            return  # from a channel that has since closed: the broker will deliver it again
        try:
            reply = parse_reply(message.body)
        except MalformedReply as exc:
            self.counts.malformed += 1
            log.warning("malformed reply acked and skipped (%s): %r", exc, message.body[:200])
            self._settled(tag)
            return
        ours = parse_feedback_id(reply.feedback_id)
        if ours is None or ours[0] != self.run_id:
            await self._pass_on(message)
            return
        self.counts.replies += 1
        self.last_reply_at = time.monotonic()
        self.on_reply(ours[1], reply)
        self._settled(tag)

    def _settled(self, tag: int) -> None:
        self._unacked_tag = tag
        self._unacked += 1

    async def flush_acks(self) -> None:
        if not self._unacked or self._channel is None or self._channel.is_closed:
            return
        self.before_ack()
        tag, self._unacked, self._unacked_tag = self._unacked_tag, 0, 0
        await self._channel.basic_ack(tag, multiple=True, wait=False)

    async def _pass_on(self, message: DeliveredMessage) -> None:
        """Publish a foreign reply to the tail of the queue, then ack it."""
        assert self._republish is not None and self._channel is not None
        await self.flush_acks()
        self.counts.foreign += 1
        headers = dict(message.header.properties.headers or {})
        passes = headers.get(BOUNCED_HEADER, 0)
        passes = passes if isinstance(passes, int) else 0
        if passes:
            await self._throttle()
        headers[BOUNCED_HEADER] = passes + 1
        props = message.header.properties
        props.headers = headers
        await self._republish.basic_publish(
            message.body, exchange="", routing_key=self.queue, properties=props
        )
        assert message.delivery_tag is not None
        await self._channel.basic_ack(message.delivery_tag, wait=False)

    async def _throttle(self) -> None:
        """A token bucket: replies that come round again are passed on at :data:`BOUNCE_RATE`."""
        now = time.monotonic()
        self._bounce_tokens = min(BOUNCE_RATE, self._bounce_tokens + (now - self._bounce_clock) * BOUNCE_RATE)
        self._bounce_clock = now
        if self._bounce_tokens < 1:
            await asyncio.sleep((1 - self._bounce_tokens) / BOUNCE_RATE)
            self._bounce_tokens = 1
            self._bounce_clock = time.monotonic()
        self._bounce_tokens -= 1

    async def cancel(self) -> None:
        """Stop consuming; replies not yet handled go back to the queue when the channel closes."""
        await self.flush_acks()
