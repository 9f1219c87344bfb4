"""Peer "aio-pika": Exchange.publish on a confirming channel, W publishes in flight.

One task per message (``default_exchange.publish`` returns once its confirmation arrives);
a semaphore keeps at most ``--window`` of them unconfirmed. Plain (not robust) connection,
``mandatory=False`` like the other peers. Runs on uvloop when installed.
"""

from __future__ import annotations

import time

import aio_pika
from _common import JSON, PERSISTENT, load_messages, parse_args, publish_windowed, report, run
from aio_pika.exceptions import DeliveryError


async def publish(args, messages: list[tuple[bytes, str]]) -> tuple[float, int, int]:
    conn = await aio_pika.connect(args.url)
    channel = await conn.channel(publisher_confirms=True)
    await channel.declare_queue(args.queue, durable=True, passive=not args.declare)
    exchange = channel.default_exchange

    def send(body: bytes, message_id: str):
        msg = aio_pika.Message(body, delivery_mode=PERSISTENT, content_type=JSON, message_id=message_id)
        return exchange.publish(msg, routing_key=args.queue, mandatory=False)

    start = time.perf_counter()
    confirmed, nacked = await publish_windowed(send, messages, args.window, DeliveryError)
    elapsed = time.perf_counter() - start
    await conn.close()
    return elapsed, confirmed, nacked


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    messages = load_messages(args.body_file, args.count)
    elapsed, confirmed, nacked = run(publish(args, messages))
    report("aio-pika", args.count, args.window, elapsed, confirmed, nacked)


if __name__ == "__main__":
    main()
