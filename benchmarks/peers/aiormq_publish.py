"""Peer "aiormq": stock aiormq basic_publish with publisher confirms, W publishes in flight.

One task per message (``channel.basic_publish`` returns once its confirmation arrives); a
semaphore keeps at most ``--window`` of them unconfirmed. Runs on uvloop when installed.
"""

from __future__ import annotations

import time

from _common import (
    JSON,
    PERSISTENT,
    aiormq_channel,
    load_messages,
    parse_args,
    publish_windowed,
    report,
    run,
)
from aiormq.exceptions import DeliveryError
from pamqp.commands import Basic


async def publish(args, messages: list[tuple[bytes, str]]) -> tuple[float, int, int]:
    conn, channel, _ = await aiormq_channel(args, confirms=True)

    def send(body: bytes, message_id: str):
        props = Basic.Properties(delivery_mode=PERSISTENT, content_type=JSON, message_id=message_id)
        return channel.basic_publish(body, routing_key=args.queue, properties=props)

    start = time.perf_counter()
    confirmed, nacked = await publish_windowed(send, messages, args.window, DeliveryError)
    elapsed = time.perf_counter() - start
    await conn.close()
    return elapsed, confirmed, nacked


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    messages = load_messages(args.body_file, args.count)
    elapsed, confirmed, nacked = run(publish(args, messages))
    report("aiormq", args.count, args.window, elapsed, confirmed, nacked)


if __name__ == "__main__":
    main()
