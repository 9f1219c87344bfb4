"""Shared bits of the Python peer publishers: arguments, message loading, the result line.

Every peer takes the same arguments and prints exactly one JSON line on stdout::

    {"peer": ..., "count": N, "window": W, "elapsed_s": ..., "msg_per_s": ...,
     "confirmed": ..., "nacked": ...}

and exits 0 only when every message was confirmed (or, for "no-confirm", counted in the queue).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

JSON = "application/json"
PERSISTENT = 2


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


def report(
    peer: str, count: int, window: int, elapsed: float, confirmed: int, nacked: int
) -> None:
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
    print(json.dumps(line), flush=True)
    sys.exit(0 if confirmed == count and nacked == 0 else 1)
