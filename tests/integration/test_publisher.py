"""The publisher on a real broker: messages framed for another channel or frame size go out right."""

from __future__ import annotations

import asyncio

import aiormq

from bulk_import.frames import Wire, encode_messages
from bulk_import.publisher import Publisher
from tests.helpers import AMQP_URL, Queues, declare


async def _publish_and_read(queue: str, bodies: list[bytes], ids: list[bytes]) -> list[tuple[bytes, str]]:
    """Publish on one channel messages framed for another (another number, a smaller frame size)."""
    connection = await aiormq.connect(AMQP_URL)
    try:
        other = await connection.channel(publisher_confirms=True)
        channel = await connection.channel(publisher_confirms=True)
        confirmed: list[int] = []
        failed: list[int] = []
        publisher = Publisher(queue, window=64, on_confirmed=confirmed.extend, on_failed=failed.extend)
        publisher.attach(channel)
        assert publisher.wire is not None and publisher.wire.channel != other.number
        stale = Wire(other.number, 4096, queue)
        tokens = list(range(len(bodies)))
        await publisher.publish(tokens, encode_messages(stale, bodies, ids), stale)
        await publisher.flush()
        assert (sorted(confirmed), failed) == (tokens, [])
        got: list[tuple[bytes, str]] = []
        for _ in bodies:
            message = await channel.basic_get(queue, no_ack=True)
            got.append((message.body, message.header.properties.message_id or ""))
        return got
    finally:
        await connection.close()


def test_messages_framed_for_another_wire_are_framed_again(queues: Queues) -> None:
    """A batch framed before a reconnect (another channel, frame size) arrives intact, in order."""
    declare(queues.request)
    bodies = [b'{"n":%d}' % i for i in range(300)] + [b"x" * 300_000, b'{"last":true}']
    ids = [b"run-%d" % i for i in range(len(bodies))]
    got = asyncio.run(asyncio.wait_for(_publish_and_read(queues.request, bodies, ids), 30))
    assert got == [(body, message_id.decode()) for body, message_id in zip(bodies, ids, strict=True)]
