"""What waits in the shared result queue, by the run it belongs to; and taking out one run's replies.

The queue is read by consuming it without acking: every message comes back to the queue as it
was (``basic.nack`` with requeue keeps body, properties and expiry), except, when asked, the
replies of one named run id, which are acked and so removed. Replies that some consumer holds
unacked at that moment are not seen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiormq.abc import DeliveredMessage

from . import broker
from .config import BrokerSettings
from .consumer import UNATTRIBUTED
from .delivery import Settlements
from .journal import run_started
from .protocols import reply_owner

#: How long the queue may stay quiet before everything it had is taken to be seen.
IDLE_S = 1.0


@dataclass(frozen=True)
class Owner:
    """The replies of one run waiting in the queue."""

    run_id: str
    count: int
    #: The oldest reply's ``timestamp`` property, or else when the run started (from its id).
    oldest: datetime | None


@dataclass
class QueueListing:
    queue: str
    #: Messages ready in the queue when the listing began.
    ready: int
    seen: int = 0
    removed: int = 0
    owners: list[Owner] = field(default_factory=list)


async def list_replies(
    settings: BrokerSettings, *, remove: str | None = None, idle_s: float = IDLE_S
) -> QueueListing:
    """The result queue's replies by run id; with ``remove``, that run's replies are deleted."""
    connection = await broker.connect(settings)
    try:
        ready = (await broker.ensure_queues(connection, settings, settings.result_queue))[
            settings.result_queue
        ]
        listing = QueueListing(settings.result_queue, ready)
        if not ready:
            return listing
        channel = await broker.open_channel(connection, settings, confirms=False)
        counts: Counter[str] = Counter()
        oldest: dict[str, float] = {}
        settlements = Settlements()
        arrived = asyncio.Event()

        taking = True

        def take(message: DeliveredMessage) -> None:
            if not taking:
                return
            arrived.set()
            owner = reply_owner(message.body)[0] or UNATTRIBUTED
            counts[owner] += 1
            stamp = message.header.properties.timestamp
            if stamp is not None:
                at = stamp.timestamp()
                oldest[owner] = min(oldest.get(owner, at), at)
            tag = message.delivery_tag
            assert tag is not None
            if remove is not None and owner == remove:
                settlements.ack([tag])
            else:
                settlements.give_back([tag])

        async def on_message(message: DeliveredMessage) -> None:
            take(message)

        with broker.map_amqp_errors(settings):
            consume_ok = await channel.basic_consume(settings.result_queue, on_message)
            while sum(counts.values()) < ready:
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), idle_s)
                except TimeoutError:
                    break  # the rest is held by other consumers, or expired meanwhile
            # No more deliveries, so that what goes back is not handed to us again; any that came
            # meanwhile stay unacked and go back when the channel closes.
            assert consume_ok.consumer_tag is not None
            await channel.basic_cancel(consume_ok.consumer_tag)
            taking = False
            frames = settlements.frames()
            for i, (tag, multiple, ack) in enumerate(frames):
                wait = i == len(frames) - 1
                if ack:
                    await channel.basic_ack(tag, multiple=multiple, wait=wait)
                else:
                    await channel.basic_nack(tag, multiple=multiple, requeue=True, wait=wait)
            with contextlib.suppress(Exception):
                await channel.close()
        listing.seen = sum(counts.values())
        listing.removed = counts[remove] if remove is not None else 0
        listing.owners = [
            Owner(owner, n, _when(oldest.get(owner), run_started(owner))) for owner, n in counts.most_common()
        ]
        return listing
    finally:
        await broker.close_quietly(connection)


def _when(stamp: float | None, started: float | None) -> datetime | None:
    at = stamp if stamp is not None else started
    return None if at is None else datetime.fromtimestamp(at, UTC)
