"""Read + build alone, as ``bulk-import run`` does it but without a broker: ``read_build.py FILE``.

A process of its own so that its CPU and peak RSS are exactly this work's (plus the interpreter
and polars, which a real run has too). With ``--frame`` each batch is also framed for a channel in
the consuming thread, as a run does before publishing. Prints one JSON line with the rows, the
messages built and the timed window as ``time.monotonic`` stamps, so the driver reads CPU over
that window only.
With ``--bodies OUT`` it also writes the bodies as ndjson: the peers' input, the same messages.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bulk_import.batches import built_batches
from bulk_import.config import BrokerSettings, ImportOptions
from bulk_import.frames import Wire, encode_messages
from bulk_import.protocols import protocol_for
from bulk_import.reader import open_source

#: Ten characters, like the run ids bulk-import makes, so the bodies are as long as a real run's.
RUN_ID = "benchrun00"
#: A channel as a run's publisher gets it from RabbitMQ's defaults.
WIRE = Wire(channel=2, frame_max=131072, routing_key="bulk-import-bench")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path)
    p.add_argument("--bodies", type=Path, help="also write the bodies here, one a line")
    p.add_argument("--frame", action="store_true", help="frame the messages for a channel too")
    p.add_argument("--via", choices=["queue", "api"], default="queue", help="the protocol built for")
    args = p.parse_args()
    options = ImportOptions(db_id=1, via=args.via, api_token="bench-token" if args.via == "api" else None)
    protocol = protocol_for(options, BrokerSettings())
    out = args.bodies.open("wb") if args.bodies else None
    rows = messages = size = 0
    t0 = time.monotonic()
    for batch in built_batches(open_source(args.file), options, RUN_ID, build=protocol.build):
        rows += batch.size
        if out is not None and batch.bodies:
            out.write(b"\n".join(batch.bodies) + b"\n")
        if args.frame:
            sent = protocol.messages(batch.rows, batch.bodies, batch.ids, RUN_ID)
            built = encode_messages(WIRE, sent.bodies, sent.ids)
        else:
            built = batch.bodies
        messages += len(built)
        size += sum(map(len, built))
    t1 = time.monotonic()
    if out is not None:
        out.close()
    line = {"rows": rows, "messages": messages, "bytes": size, "t0": t0, "t1": t1}
    line["rows_per_s"] = rows / (t1 - t0)
    print(json.dumps(line), flush=True)
    os._exit(0)  # skip freeing polars' memory: the process's CPU ends with the work


if __name__ == "__main__":
    main()
