"""The reply consumer's ack loop across a reconnect, with channels that stand in for aiormq's."""

from __future__ import annotations

import asyncio
from typing import Any

from bulk_import.consumer import ReplyConsumer
from bulk_import.delivery import Delivery, Tap


class Channel:
    """Records acks; on a connection that is gone, an ack waits for ever (its writer is dead)."""

    def __init__(self, number: int, *, dead: bool = False) -> None:
        self.number = number
        self.dead = dead
        self.is_closed = False
        self.acks: list[tuple[int, bool]] = []
        self.on_consumer_cancel_callbacks: set[Any] = set()

    async def basic_qos(self, **kwargs: Any) -> None:
        pass

    async def basic_consume(self, *args: Any) -> None:
        pass

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        if self.dead:
            await asyncio.Event().wait()
        self.acks.append((tag, multiple))


def reply(tag: int, row: int) -> Delivery:
    body = b'{"error":0,"feedback_id":"run1-%d"}' % row
    return Delivery(delivery_tag=tag, redelivered=False, body=body, header_frame=b"")


async def acks_after_a_reconnect() -> tuple[list[tuple[int, bool]], list[int]]:
    answered: list[int] = []
    consumer = ReplyConsumer(
        "run1",
        "results",
        on_replies=lambda got: answered.extend(got.rows),
        before_ack=lambda: None,
    )
    tap = Tap()
    old, new = Channel(1, dead=True), Channel(1)
    await consumer.attach(tap, old)  # type: ignore[arg-type]
    running = asyncio.create_task(consumer.run())
    consumer._on_deliveries([reply(1, 10), reply(2, 11)])
    await asyncio.sleep(0.2)  # the loop is now stuck acking on the dead connection
    await consumer.attach(tap, new)  # type: ignore[arg-type]
    consumer._on_deliveries([reply(1, 12)])
    await asyncio.sleep(0.2)
    consumer.stop()
    await asyncio.wait_for(running, 5)
    return new.acks, answered


def test_acks_go_out_on_the_new_channel_when_the_old_one_hangs() -> None:
    """An ack stuck on the lost connection does not hold back the acks of the new channel."""
    acks, answered = asyncio.run(acks_after_a_reconnect())
    assert answered == [10, 11, 12]
    assert acks == [(1, True)]
