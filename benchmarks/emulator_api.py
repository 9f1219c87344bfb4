"""How fast the stand-in answers ``api_req`` batch calls: the apply path alone, and over the broker.

``apply``: :meth:`ApiService.handle` and the response's rendering on calls of ``--batch`` profiles
(``import_batch``, email matching, the profiles ``run --via api`` sends: ``{"email": ...,
"_fname": ...}``), first creating every profile, then updating them all, as the server handles them (the
cyclic collector frozen after each call); CPU seconds of this process, best of ``--rounds``.
``database_import`` requests with the same profiles go through :meth:`ProfileStore.apply` (parse,
apply, reply) for comparison, the collector as the server leaves it on that path.

``broker``: ``--calls`` calls put on a fresh ``api_req`` queue, then :func:`serve` started in this
process; profiles/s from its start until the last response is on ``api_resp``, and this process's
CPU over that time. The queues are deleted afterwards.

    .venv/bin/python benchmarks/emulator_api.py apply --batch 1000 --calls 100
    .venv/bin/python benchmarks/emulator_api.py broker --batch 1000 --calls 200
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
import uuid

import aiormq
import orjson
from pamqp import commands as spec

from bulk_import.config import BrokerSettings
from bulk_import.emulator import ApiService, EmulatorSettings, ProfileStore, serve
from bulk_import.emulator.api import freeze_garbage_collection

URL = "amqp://guest:guest@127.0.0.1:5672/"


def calls(count: int, batch: int, offset: int = 0) -> list[bytes]:
    """``count`` import_batch calls of ``batch`` profiles each, as ``run --via api`` makes them."""
    out = []
    for c in range(count):
        items = [
            {
                "email": f"user{k}@example.com",
                "_fname": "Ann",
                "_lname": "Doe",
                "CRM_ID": k,
                "phones": [f"+7900{k:07d}"],
            }
            for k in range(offset + c * batch, offset + (c + 1) * batch)
        ]
        body = {"token": "t", "db_id": 1, "matching": "email", "skip_triggers": True, "data": items}
        out.append(
            orjson.dumps(
                {
                    "account_id": 1,
                    "request_id": f"r-{c}",
                    "request": "api/v1.1/profiles/import_batch",
                    "body": body,
                }
            )
        )
    return out


def jobs(count: int) -> list[bytes]:
    """The same profiles as ``database_import`` requests."""
    return [
        orjson.dumps(
            {
                "account_id": 1,
                "db_id": 1,
                "matching": "email",
                "email": f"user{k}@example.com",
                "data": {"_fname": "Ann", "_lname": "Doe", "CRM_ID": k, "phones": [f"+7900{k:07d}"]},
                "feedback_id": f"r-{k}",
            }
        )
        for k in range(count)
    ]


def bench_apply(batch: int, count: int, rounds: int) -> dict[str, float]:
    messages = calls(count, batch)
    requests = jobs(batch * count)
    profiles = batch * count
    best: dict[str, float] = {}
    for _ in range(rounds):
        gc.unfreeze()
        gc.collect()
        api = ApiService(ProfileStore(seed=1))
        for phase in ("create", "update"):
            started = time.process_time()
            for message in messages:
                api.handle(message).render()
                freeze_garbage_collection()  # as the server does after each batch of calls
            rate = profiles / (time.process_time() - started)
            best[f"api {phase}"] = max(best.get(f"api {phase}", 0.0), rate)
        gc.unfreeze()
        gc.collect()
        store = ProfileStore(seed=1)
        apply, loads, dumps = store.apply, orjson.loads, orjson.dumps
        for phase in ("create", "update"):
            started = time.process_time()
            for request in requests:
                dumps(apply(loads(request)))
            rate = profiles / (time.process_time() - started)
            best[f"database_import {phase}"] = max(best.get(f"database_import {phase}", 0.0), rate)
    return best


async def bench_broker(batch: int, count: int) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    names = [f"bench_{tag}_{n}" for n in ("import", "result", "api_req", "api_resp")]
    connection = await aiormq.connect(URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        for name in names:
            await channel.queue_declare(name, durable=True)
        messages = calls(count, batch)
        await asyncio.gather(
            *(
                channel.basic_publish(
                    m, routing_key=names[2], properties=spec.Basic.Properties(delivery_mode=2)
                )
                for m in messages
            )
        )
        settings = EmulatorSettings(
            broker=BrokerSettings(url=URL, queue=names[0], result_queue=names[1]),
            api_queue=names[2],
            api_result_queue=names[3],
        )
        stop = asyncio.Event()
        wall, cpu = time.perf_counter(), time.process_time()
        serving = asyncio.create_task(serve(settings, stop))
        while (await channel.queue_declare(names[3], passive=True)).message_count < count:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stop.set()
        counts = await serving
        assert counts.api_profiles == batch * count, counts
        return {"profiles/s": batch * count / wall, "cpu_s": cpu, "wall_s": wall}
    finally:
        await connection.close()
        cleanup = await aiormq.connect(URL)
        channel = await cleanup.channel()
        for name in names:
            await channel.queue_delete(name)
        await cleanup.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["apply", "broker"])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.what == "apply":
        result = bench_apply(args.batch, args.calls, args.rounds)
    else:
        result = asyncio.run(bench_broker(args.batch, args.calls))
    print(json.dumps({k: round(v, 3 if k.endswith("_s") else None) for k, v in result.items()}))


if __name__ == "__main__":
    main()
