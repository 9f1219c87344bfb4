"""Peer "no-confirm": aiormq without publisher confirms, fire and forget.

Every message goes out with ``basic_publish(wait=False)`` (queued for the writer, no wait for
the socket write, no confirmation), then the peer polls the queue's message count with passive
declares until it grew by N. "confirmed" is that growth; it gives up after STALL_S seconds
without growth. ``--window`` is ignored (echoed in the result line). Runs on uvloop when
installed.
"""

from __future__ import annotations

import asyncio
import time

from _common import JSON, PERSISTENT, aiormq_channel, load_messages, parse_args, report, run
from pamqp.commands import Basic

POLL_S = 0.005
STALL_S = 30.0


async def publish(args, messages: list[tuple[bytes, str]]) -> tuple[float, int]:
    conn, channel, before = await aiormq_channel(args, confirms=False)

    start = time.perf_counter()
    for body, message_id in messages:
        props = Basic.Properties(delivery_mode=PERSISTENT, content_type=JSON, message_id=message_id)
        await channel.basic_publish(body, routing_key=args.queue, properties=props, wait=False)

    arrived, last_growth = 0, start
    while True:
        ok = await channel.queue_declare(args.queue, passive=True)
        now = time.perf_counter()
        if (ok.message_count or 0) - before > arrived:
            arrived, last_growth = (ok.message_count or 0) - before, now
        if arrived >= len(messages) or now - last_growth > STALL_S:
            break
        await asyncio.sleep(POLL_S)
    elapsed = time.perf_counter() - start
    await conn.close()
    return elapsed, min(arrived, len(messages))


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    messages = load_messages(args.body_file, args.count)
    elapsed, arrived = run(publish(args, messages))
    report("no-confirm", args.count, args.window, elapsed, arrived, 0)


if __name__ == "__main__":
    main()
