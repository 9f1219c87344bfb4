"""Reply consumption alone: bulk-import's ReplyConsumer draining a queue pre-filled with N replies.

``fill`` publishes N valid ``database_import_result`` bodies for one run id (through bulk-import's
own publisher, so filling is quick and confirmed). ``consume`` times a ReplyConsumer on the
connection a run opens, recording each reply in a Ledger as a run does (no journal, which is disk
work of its own), from ``basic_consume`` until the N-th reply; it prints one JSON line with the
window as ``time.monotonic`` stamps so the driver reads CPU over exactly that window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

import aiormq
import orjson
import uvloop

from bulk_import.config import BrokerSettings
from bulk_import.consumer import ReplyConsumer
from bulk_import.messages import Answers
from bulk_import.pipeline import Session
from bulk_import.publisher import Publisher
from bulk_import.reconcile import Ledger

CHUNK = 10_000
ACKS_SETTLE_S = 0.3


def reply_body(run_id: str, row: int) -> bytes:
    return orjson.dumps(
        {
            "feedback_id": f"{run_id}-{row}",
            "error": 0,
            "error_text": "",
            "matching_field": "email",
            "profile_id": f"{row:024x}",
        }
    )


async def fill(args: argparse.Namespace) -> dict[str, Any]:
    conn = await aiormq.connect(args.url)
    try:
        channel = await conn.channel(publisher_confirms=True)
        failed: list[int] = []
        publisher = Publisher(args.queue, window=4096, on_confirmed=lambda _: None, on_failed=failed.extend)
        publisher.attach(channel)
        for start in range(0, args.count, CHUNK):
            rows = range(start, min(args.count, start + CHUNK))
            bodies = [reply_body(args.run_id, r) for r in rows]
            await publisher.publish_bodies(list(rows), bodies, [f"{args.run_id}-{r}".encode() for r in rows])
        await publisher.flush()
        return {"filled": publisher.confirmed, "failed": len(failed)}
    finally:
        await conn.close()


async def consume(args: argparse.Namespace) -> dict[str, Any]:
    ledger = Ledger()
    ledger.send(range(args.count))
    done = asyncio.Event()

    def on_replies(answers: Answers) -> None:
        ledger.answer_all(answers.rows)
        if ledger.awaiting == 0:
            done.set()

    # The connection and channels a run opens (Session), attached the way Run._attach does it.
    session = Session(BrokerSettings(url=args.url, queue=args.queue, result_queue=args.queue))
    await session.open()
    try:
        assert session.consume is not None
        consumer = ReplyConsumer(
            args.run_id, args.queue, on_replies=on_replies, before_ack=lambda: None, prefetch=args.prefetch
        )
        t0 = time.monotonic()
        await consumer.attach(session.tap, session.consume)
        task = asyncio.create_task(consumer.run())
        try:
            await asyncio.wait_for(done.wait(), args.timeout)
            t1 = time.monotonic()
            await asyncio.sleep(ACKS_SETTLE_S)  # run() flushes acks every 50 ms; the driver checks them
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await session.close()
    counts = consumer.counts
    return {
        "replies": counts.replies,
        "foreign": counts.foreign,
        "malformed": counts.malformed,
        "duplicates": ledger.duplicates,
        "t0": t0,
        "t1": t1,
        "msg_per_s": args.count / (t1 - t0),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["fill", "consume"])
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--queue", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--run-id", default="benchrun00")
    p.add_argument("--prefetch", type=int, default=4096)
    p.add_argument("--timeout", type=float, default=300.0, help="give up consuming after this long")
    args = p.parse_args()
    result = uvloop.run(fill(args) if args.mode == "fill" else consume(args))
    print(json.dumps(result), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
