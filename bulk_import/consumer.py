"""Read the shared result queue while publishing: this run's replies are recorded, the rest go back.

Deliveries arrive a socket read at a time through the connection's :class:`~.delivery.Tap`. A
reply whose ``feedback_id`` carries this run's id is recorded at once (journal first, ack after).

Every importer on the platform reads ``database_import_result``, and the broker hands any delivery
to any consumer. A delivery this run cannot prove is its own is never acked: it goes back with
``basic.nack(requeue)``, so the queue keeps the very message (body, properties, ``message_id``) and
its expiry. The broker puts a returned message near the head and offers it again at once, so how
soon it goes back depends on whether its owner looks alive (:class:`Strangers`); the consumer has
no prefetch limit, so the ones held back never stop this run's own replies from arriving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

import aiormq

from .delivery import Delivery, Settlements, Tap, untapped
from .errors import QueueMissing
from .messages import Answers
from .protocols import Read, read_per_row

log = logging.getLogger(__name__)

ACK_EVERY = 2000
ACK_INTERVAL_S = 0.05
#: A foreign run counts as alive while replies of it arrive for the first time this often.
ALIVE_S = 2.0
#: How long a foreign reply that came back is held before it goes back again: its run is alive,
#: or not (abandoned, or no run of ours: a few deliveries a minute).
HOLD_ALIVE_S = 1.0
HOLD_IDLE_S = 20.0
#: This run's replies left unacked behind held foreign ones before those go back early: bounds
#: what the broker keeps unacked for us (and what a crash has it deliver again).
WAITING_LIMIT = 65_536
#: Distinct foreign replies remembered for the summary; past that they are counted as deliveries.
DISTINCT_LIMIT = 200_000
#: The owner named for replies with no feedback id an importer could have made.
UNATTRIBUTED = "(no run id)"


@dataclass
class ConsumerCounts:
    replies: int = 0
    #: Distinct foreign replies seen (deliveries past :data:`DISTINCT_LIMIT`).
    foreign: int = 0
    #: This run's replies whose body is not the documented reply (acked, the row left unanswered).
    malformed: int = 0


class Strangers:
    """Replies that are not this run's: how long each is held before it goes back, and whose.

    A reply delivered for the first time goes back at once: its owner is likely consuming, and
    the broker offers it to the next consumer. One that comes back while its run's replies still
    arrive fresh is held a moment; one whose run sends nothing new is held :data:`HOLD_IDLE_S`.
    """

    def __init__(self) -> None:
        self._fresh: dict[str | None, float] = {}
        self._seen: set[int] = set()
        self.owners: Counter[str] = Counter()
        self.count = 0
        self.deliveries = 0

    def hold_for(self, owner: str | None, redelivered: bool, now: float) -> float:
        """Seconds to hold a delivery of ``owner``'s before giving it back (0: at once)."""
        if not redelivered:
            self._fresh[owner] = now
            return 0.0
        if now - self._fresh.get(owner, -ALIVE_S) < ALIVE_S:
            return HOLD_ALIVE_S
        return HOLD_IDLE_S

    def note(self, owner: str | None, body: bytes) -> None:
        """Count a foreign reply once, however often it comes round (and each delivery of it)."""
        self.deliveries += 1
        key = hash(body)
        if key in self._seen:
            return
        if len(self._seen) < DISTINCT_LIMIT:
            self._seen.add(key)
        self.count += 1
        self.owners[owner or UNATTRIBUTED] += 1


class ReplyConsumer:
    """Consumes replies; ``on_replies`` gets the rows each of this run's answers as
    :class:`Answers` (a batch's thousand at once), in delivery order.

    An exception from ``on_replies`` (a journal that cannot be written) stops the taking: it is
    kept in :attr:`failure` and ``on_failure`` is called, and what was not recorded stays unacked.
    """

    def __init__(
        self,
        run_id: str,
        queue: str,
        *,
        on_replies: Callable[[Answers], None],
        before_ack: Callable[[], None],
        on_failure: Callable[[BaseException], None] = lambda exc: None,
        prefetch: int = 0,
        read: Callable[[bytes, str], Read] = read_per_row,
    ) -> None:
        self.run_id = run_id
        self.read = read
        self.queue = queue
        self.on_replies = on_replies
        self.before_ack = before_ack
        self.on_failure = on_failure
        self.prefetch = prefetch
        self.counts = ConsumerCounts()
        self.strangers = Strangers()
        self.failure: BaseException | None = None
        self.last_reply_at = time.monotonic()
        self._settlements = Settlements()
        self._held: dict[float, deque[tuple[float, list[int]]]] = {}
        self._to_ack = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._working: asyncio.Future[None] | None = None
        self._channel: aiormq.Channel | None = None

    async def attach(self, tap: Tap, channel: aiormq.Channel) -> None:
        """Consume on ``channel`` through ``tap``; what the last channel held went back with it."""
        if self._working is not None:
            # A flush still waiting on the connection that is gone: its writer no longer empties
            # the queue, so it would wait for ever and no ack would go out on the new one.
            self._working.cancel()
        self._settlements.reset()
        self._held.clear()
        self._channel = channel
        tap.attach(channel.number, self._on_deliveries)
        channel.on_consumer_cancel_callbacks.add(self._on_cancelled)
        if self.prefetch:
            await channel.basic_qos(prefetch_count=self.prefetch)
        await channel.basic_consume(self.queue, untapped)

    def _on_cancelled(self, frame: object) -> None:
        """The broker ended the consumer: the queue was deleted (or the node holding it went)."""
        exc = QueueMissing(
            f"the broker cancelled the consumer of {self.queue!r}: the queue was deleted; "
            "replies to what was sent can no longer come"
        )
        self.failure = exc
        self.on_failure(exc)

    def _on_deliveries(self, batch: list[Delivery]) -> None:
        if self.failure is not None:
            return  # nothing more is taken: unacked, it is delivered again to the next attempt
        ours: list[int] = []
        back: list[int] = []
        now = time.monotonic()
        read, run_id = self.read, self.run_id
        for delivery in batch:
            owner, replies = read(delivery.body, run_id)
            if owner != run_id:
                self._stranger(owner, delivery, now, back)
                continue
            tag = delivery.delivery_tag
            if replies is None:
                self.counts.malformed += 1
                log.warning("malformed reply acked and skipped: %r", delivery.body[:200])
                ours.append(tag)
                continue
            self.counts.replies += 1
            try:
                taken = self.take(replies, delivery)
            except Exception as exc:
                self.failure = exc
                self.on_failure(exc)
                break
            if taken:
                ours.append(tag)
        if ours:
            self.last_reply_at = now
            self._settlements.ack(ours)
            self._to_ack += len(ours)
        self._settlements.give_back(back)
        if back or self._to_ack >= ACK_EVERY:
            self._wake.set()

    def _stranger(self, owner: str | None, delivery: Delivery, now: float, back: list[int]) -> None:
        self.strangers.note(owner, delivery.body)
        self.counts.foreign = self.strangers.count
        hold = self.strangers.hold_for(owner, delivery.redelivered, now)
        if not hold:
            back.append(delivery.delivery_tag)
            return
        held = self._held.setdefault(hold, deque())
        if held and held[-1][0] == now + hold:
            held[-1][1].append(delivery.delivery_tag)
        else:
            held.append((now + hold, [delivery.delivery_tag]))

    def take(self, replies: Answers, delivery: Delivery) -> bool:
        """Hand the rows one of this run's replies answers on; True when it is settled now (else
        see :meth:`settle`)."""
        self.on_replies(replies)
        return True

    def settle(self, tags: list[int]) -> None:
        """Deliveries that :meth:`take` left unsettled are settled now: they may be acked."""
        self._settlements.ack(tags)
        self._to_ack += len(tags)
        self._wake.set()

    async def run(self) -> None:
        """Flush acks and give foreign replies back, at least every 50 ms, until :meth:`stop`."""
        self._stopping = False
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), ACK_INTERVAL_S)
            self._wake.clear()
            self._working = working = asyncio.ensure_future(self.flush_acks())
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

    def stop(self) -> None:
        """Let :meth:`run` return after its current flush."""
        self._stopping = True
        self._wake.set()

    def _release(self, now: float, *, everything: bool) -> None:
        for held in self._held.values():
            while held and (everything or held[0][0] <= now):
                self._settlements.give_back(held.popleft()[1])

    async def flush_acks(self, *, final: bool = False) -> None:
        """Ack what is recorded and give back what is due; ``final`` gives back every held reply."""
        channel = self._channel
        if channel is None or channel.is_closed:
            return
        everything = final or self._settlements.waiting >= WAITING_LIMIT
        self._release(time.monotonic(), everything=everything)
        frames = self._settlements.frames()
        if not frames:
            return
        if any(ack for _, _, ack in frames):
            try:
                self.before_ack()
            except Exception as exc:  # the journal cannot be made durable: nothing is acked
                self.failure = exc
                self.on_failure(exc)
                return
            self._to_ack = 0
        last = len(frames) - 1
        for i, (tag, multiple, ack) in enumerate(frames):
            wait = final and i == last
            if ack:
                await channel.basic_ack(tag, multiple=multiple, wait=wait)
            else:
                await channel.basic_nack(tag, multiple=multiple, requeue=True, wait=wait)
