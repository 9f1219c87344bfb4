"""Peer "pika": pika BlockingConnection with confirm_delivery(), one message at a time.

pika's blocking publisher confirms are synchronous: ``basic_publish`` returns only after the
broker acked the message (and raises NackError when it nacked it), so ``--window`` is ignored
and the result line says ``"window": 1``.
"""

from __future__ import annotations

import time

import pika
from _common import JSON, PERSISTENT, load_messages, parse_args, report
from pika.exceptions import NackError


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    messages = load_messages(args.body_file, args.count)
    conn = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = conn.channel()
    channel.queue_declare(args.queue, durable=True, passive=not args.declare)
    channel.confirm_delivery()
    confirmed = nacked = 0

    start = time.perf_counter()
    for body, message_id in messages:
        props = pika.BasicProperties(delivery_mode=PERSISTENT, content_type=JSON, message_id=message_id)
        try:
            channel.basic_publish("", args.queue, body, props)
        except NackError:
            nacked += 1
        else:
            confirmed += 1
    elapsed = time.perf_counter() - start

    conn.close()
    report("pika", args.count, 1, elapsed, confirmed, nacked)


if __name__ == "__main__":
    main()
