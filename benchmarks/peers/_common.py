"""Shared bits of the Python peer publishers: arguments, message loading, the result line.

Every peer takes the same arguments and prints exactly one JSON line on stdout::

    {"peer": ..., "count": N, "window": W, "elapsed_s": ..., "msg_per_s": ...,
     "confirmed": ..., "nacked": ...}

and exits 0 only when every message was confirmed (or, for "no-confirm", counted in the queue).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import aiormq.abc

JSON = "application/json"
PERSISTENT = 2
T = TypeVar("T")


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--queue", required=True, help="durable queue, declared passively")
    p.add_argument("--count", type=int, required=True, help="messages to publish")
    p.add_argument("--window", type=int, default=1024, help="max unconfirmed in flight")
    p.add_argument("--body-file", required=True, type=Path, help="ndjson, one body a line")
    p.add_argument(
        "--declare",
        action="store_true",
        help="declare the queue durable (no arguments) instead of passively",
    )
    args = p.parse_args()
    if args.count < 1 or args.window < 1:
        p.error("--count and --window must be >= 1")
    return args


def feedback_id(line: bytes) -> str | None:
    """The line's own string "feedback_id", if it is a JSON object that has one."""
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    fid = doc.get("feedback_id") if isinstance(doc, dict) else None
    return fid if isinstance(fid, str) and fid else None


def load_messages(path: Path, count: int) -> list[tuple[bytes, str]]:
    """``count`` (body, message_id) pairs from the non-empty lines of ``path``, cycled.

    Message ``i`` is line ``i % lines``; its message_id is that line's feedback_id, or ``str(i)``.
    """
    lines = [ln for ln in path.read_bytes().splitlines() if ln.strip()]
    if not lines:
        sys.exit(f"{path}: no message bodies")
    fids = [feedback_id(ln) for ln in lines]
    n = len(lines)
    return [(lines[i % n], fids[i % n] or str(i)) for i in range(count)]


def report(peer: str, count: int, window: int, elapsed: float, confirmed: int, nacked: int) -> None:
    """Print the result line and exit non-zero unless every message was confirmed."""
    line = {
        "peer": peer,
        "count": count,
        "window": window,
        "elapsed_s": round(elapsed, 6),
        "msg_per_s": round(confirmed / elapsed, 1) if elapsed > 0 else 0.0,
        "confirmed": confirmed,
        "nacked": nacked,
    }
    print(json.dumps(line, separators=(",", ":")), flush=True)
    sys.exit(0 if confirmed == count and nacked == 0 else 1)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on the stock asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def aiormq_channel(
    args: argparse.Namespace, *, confirms: bool
) -> tuple[aiormq.abc.AbstractConnection, aiormq.abc.AbstractChannel, int]:
    """Connection, channel and the queue's message count, for the aiormq-based peers."""
    import aiormq

    conn = await aiormq.connect(args.url)
    channel = await conn.channel(publisher_confirms=confirms)
    if args.declare:
        ok = await channel.queue_declare(args.queue, durable=True)
    else:
        ok = await channel.queue_declare(args.queue, passive=True)
    return conn, channel, ok.message_count or 0


async def publish_windowed(
    send: Callable[[bytes, str], Awaitable[object]],
    messages: list[tuple[bytes, str]],
    window: int,
    nack: type[BaseException],
) -> tuple[int, int]:
    """Run ``send(body, message_id)`` for every message, at most ``window`` unsettled at once.

    ``send`` returns once the broker confirmed the message and raises ``nack`` when it
    nacked it. Returns ``(confirmed, nacked)``; any other error is raised.
    """
    slots = asyncio.Semaphore(window)
    pending: set[asyncio.Task[object]] = set()
    counts = [0, 0]
    failures: list[BaseException] = []

    def settled(task: asyncio.Task[object]) -> None:
        pending.discard(task)
        slots.release()
        exc = task.exception()
        if exc is None or isinstance(exc, nack):
            counts[exc is not None] += 1
        else:
            failures.append(exc)

    for body, message_id in messages:
        await slots.acquire()
        if failures:
            break
        task = asyncio.ensure_future(send(body, message_id))
        task.add_done_callback(settled)
        pending.add(task)
    if pending:
        await asyncio.wait(set(pending))
    if failures:
        raise failures[0]
    return counts[0], counts[1]
