"""The stand-in's api_req path over the real broker: responses, acks, the shared store, the fault knobs."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiormq
import orjson
import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from bulk_import.config import BrokerSettings
from bulk_import.emulator import EmulatorCounts, EmulatorSettings, Faults, ProfileStore, serve
from bulk_import.emulator.api import BAD_REQUEST, TARIFF_LIMIT, UNAUTHORIZED, UNKNOWN_METHOD
from bulk_import.emulator.profiles import ALREADY_EXISTS, TEMPORARY_FAILURE
from bulk_import.errors import QueueMissing
from tests.helpers import cli

pytestmark = pytest.mark.broker

URL = os.environ.get("BULK_IMPORT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
#: Only a guard against a hung test, never a performance assertion.
DEADLINE_S = 60
BATCH = "api/v1.1/profiles/import_batch"


@dataclass(frozen=True)
class Names:
    """The four queues of one test: database_import and its replies, api_req and its responses."""

    request: str
    result: str
    api: str
    api_result: str

    @classmethod
    def fresh(cls) -> Names:
        tag = uuid.uuid4().hex[:8]
        return cls(f"t_{tag}_import", f"t_{tag}_result", f"t_{tag}_api_req", f"t_{tag}_api_resp")

    def all(self) -> tuple[str, str, str, str]:
        return self.request, self.result, self.api, self.api_result


@dataclass
class Outcome:
    counts: EmulatorCounts
    responses: list[DeliveredMessage]
    replies: list[DeliveredMessage]
    #: messages left in (request, api) queues once serve() has returned.
    left: tuple[int, int]
    store: ProfileStore = field(default_factory=ProfileStore)

    def by_request_id(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for message in self.responses:
            doc = orjson.loads(message.body)
            out[doc["request_id"]] = doc["body"]
        return out


def call(request_id: str | None, items: list[dict[str, Any]], request: str = BATCH, **body: Any) -> bytes:
    doc: dict[str, Any] = {"account_id": 1, "request": request}
    if request_id is not None:
        doc["request_id"] = request_id
    doc["body"] = {"token": "secret", "db_id": 1, "matching": "email", "data": items, **body}
    return orjson.dumps(doc)


def job(fid: str, **fields: Any) -> bytes:
    doc: dict[str, Any] = {"account_id": 1, "db_id": 1, "matching": "email", "data": {}, "feedback_id": fid}
    doc.update(fields)
    return orjson.dumps(doc)


async def count(channel: aiormq.abc.AbstractChannel, name: str) -> int:
    ok = await channel.queue_declare(name, passive=True)
    return ok.message_count or 0


async def take_all(channel: aiormq.abc.AbstractChannel, name: str) -> list[DeliveredMessage]:
    out: list[DeliveredMessage] = []
    while True:
        message = await channel.basic_get(name, no_ack=True)
        if isinstance(message.delivery, spec.Basic.GetEmpty):
            return out
        out.append(message)


async def put(channel: aiormq.abc.AbstractChannel, name: str, bodies: list[bytes]) -> None:
    for body in bodies:
        await channel.basic_publish(
            body,
            routing_key=name,
            properties=spec.Basic.Properties(delivery_mode=2, content_type="text/plain"),
        )


async def delete(names: Names) -> None:
    connection = await aiormq.connect(URL)
    try:
        channel = await connection.channel()
        for name in names.all():
            await channel.queue_delete(name)
    finally:
        await connection.close()


def settings_for(names: Names, **knobs: Any) -> EmulatorSettings:
    return EmulatorSettings(
        broker=BrokerSettings(url=URL, queue=names.request, result_queue=names.result, declare=True),
        api_queue=names.api,
        api_result_queue=names.api_result,
        **knobs,
    )


def run(
    names: Names,
    calls: list[bytes],
    expect_responses: int,
    jobs: list[bytes] | None = None,
    expect_replies: int = 0,
    *,
    store: ProfileStore | None = None,
    **knobs: Any,
) -> Outcome:
    """Put calls (and database_import jobs) on the test's queues, serve until answered, collect."""
    store = store if store is not None else ProfileStore(seed=1)

    async def go() -> Outcome:
        connection = await aiormq.connect(URL)
        try:
            channel = await connection.channel(publisher_confirms=True)
            for name in names.all():
                await channel.queue_declare(name, durable=True)
            await put(channel, names.api, calls)
            await put(channel, names.request, jobs or [])
            stop = asyncio.Event()
            serving = asyncio.create_task(serve(settings_for(names, **knobs), stop, store=store))
            try:
                async with asyncio.timeout(DEADLINE_S):
                    # every answer is out, and what gets none (no request_id, dropped) is taken too
                    while (
                        await count(channel, names.api_result) < expect_responses
                        or await count(channel, names.result) < expect_replies
                        or await count(channel, names.api)
                        or await count(channel, names.request)
                    ):
                        if serving.done():
                            serving.result()
                            raise AssertionError("serve() returned before being stopped")
                        await asyncio.sleep(0.02)
            finally:
                stop.set()
                counts = await serving
            return Outcome(
                counts=counts,
                responses=await take_all(channel, names.api_result),
                replies=await take_all(channel, names.result),
                left=(await count(channel, names.request), await count(channel, names.api)),
                store=store,
            )
        finally:
            await connection.close()
            await delete(names)

    return asyncio.run(go())


def test_batches_are_answered_by_request_id_and_acked() -> None:
    """Each call with a request_id gets one persistent response; one without is applied and acked."""
    calls = [
        call("b-1", [{"email": f"u{i}@example.com", "_fname": f"U{i}"} for i in range(1000)]),
        call("b-2", [{"email": "u0@example.com", "data": {"_lname": "Zero"}}, {"email": "bad"}]),
        call(None, [{"email": "silent@example.com"}]),
        call(
            "b-3",
            [{"email": "u1@example.com"}, {"email": "new@example.com"}],
            request="api/v1.1/profiles/add_batch",
        ),
        call("b-4", [], request="api/v1.1/campaigns/triggers/import_and_start_batch"),
        b'{"request_id": "b-5", "body": ',
        b"not json, no id",
    ]
    out = run(Names.fresh(), calls, expect_responses=5)
    responses = out.by_request_id()
    assert set(responses) == {"b-1", "b-2", "b-3", "b-4", "b-5"}
    first = responses["b-1"]
    assert (first["error"], first["error_text"]) == (0, "Successful operation")
    assert len(first["result"]) == 1000
    pids = [r["profile_id"] for r in first["result"]]
    assert len(set(pids)) == 1000
    assert [r["error"] for r in responses["b-2"]["result"]] == [0, 201]
    assert responses["b-2"]["result"][0]["profile_id"] == pids[0]
    assert [r["error"] for r in responses["b-3"]["result"]] == [ALREADY_EXISTS, 0]
    assert responses["b-4"]["error"] == UNKNOWN_METHOD
    assert responses["b-5"]["error"] == BAD_REQUEST
    for message in out.responses:
        props = message.header.properties
        assert props.delivery_mode == 2
        assert props.message_id == orjson.loads(message.body)["request_id"]
    assert out.left == (0, 0)
    assert len(out.store) == 1002
    counts = out.counts
    assert (counts.api_requests, counts.api_responses, counts.api_unanswered) == (7, 5, 2)
    assert (counts.api_profiles, counts.api_profile_errors, counts.api_errors) == (1000 + 1 + 1 + 1, 2, 2)
    assert counts.api_invalid_json == 2
    assert counts.received == counts.replied == 0


def test_same_key_same_profile_on_both_paths_in_one_serve() -> None:
    """database_import and api_req share the store: the same email is the same profile_id."""
    jobs = [job(f"j{i}", email=f"p{i}@example.com") for i in range(50)]
    calls = [
        call(f"c{i}", [{"email": f"P{j}@example.com"} for j in range(i * 10, i * 10 + 10)]) for i in range(10)
    ]
    out = run(Names.fresh(), calls, expect_responses=10, jobs=jobs, expect_replies=50)
    by_job = {
        int(doc["feedback_id"][1:]): doc["profile_id"]
        for doc in map(orjson.loads, (m.body for m in out.replies))
    }
    by_api = {
        int(rid[1:]) * 10 + offset: result["profile_id"]
        for rid, body in out.by_request_id().items()
        for offset, result in enumerate(body["result"])
    }
    assert sorted(by_job) == list(range(50))
    assert sorted(by_api) == list(range(100))
    assert all(by_api[i] == by_job[i] for i in range(50))
    assert len(set(by_api.values())) == 100
    assert len(out.store) == 100
    assert (out.counts.received, out.counts.replied) == (50, 50)
    assert out.counts.api_profiles == 100


def test_token_and_tariff_limit_answer_the_whole_call() -> None:
    """--token: a call without it is 401; --tariff-limit: once reached, calls are 402."""
    calls = [
        call("ok", [{"email": f"t{i}@example.com"} for i in range(3)]),
        call("no-token", [{"email": "x@example.com"}], token="wrong"),
        call("over", [{"email": "y@example.com"}]),
    ]
    out = run(Names.fresh(), calls, expect_responses=3, token="secret", tariff_limit=3)
    responses = out.by_request_id()
    assert [r["error"] for r in responses["ok"]["result"]] == [0, 0, 0]
    assert responses["no-token"]["error"] == UNAUTHORIZED
    assert responses["over"]["error"] == TARIFF_LIMIT
    assert len(out.store) == 3
    assert out.counts.api_errors == 2


def test_fault_knobs_act_on_whole_calls() -> None:
    """drop/duplicate/error/malformed hit exactly the calls the seed picks; error applies nothing."""
    knobs: dict[str, Any] = {"seed": 3, "drop": 0.15, "duplicate": 0.15, "error": 0.15, "malformed": 0.15}
    calls = [call(f"f{i}", [{"email": f"f{i}-{j}@example.com"} for j in range(5)]) for i in range(120)]
    faults = Faults(knobs["seed"], knobs["drop"], knobs["duplicate"], knobs["error"], knobs["malformed"])
    fates = [faults.decide(body) for body in calls]
    sent = [f for f in fates if not f.drop]
    expected = len(sent) + sum(f.duplicate for f in sent)
    assert min(len(fates) - len(sent), sum(f.duplicate for f in sent), sum(f.error for f in fates)) > 0
    out = run(Names.fresh(), calls, expect_responses=expected, **knobs)
    counts = out.counts
    assert counts.api_responses == len(out.responses) == expected
    assert counts.api_dropped == len(fates) - len(sent)
    assert counts.api_duplicated == sum(f.duplicate for f in sent)
    assert counts.api_malformed == sum(f.malformed for f in sent)
    assert counts.api_errors == sum(f.error for f in sent)
    assert counts.api_profiles == 5 * sum(not f.error for f in fates)
    assert len(out.store) == counts.api_profiles
    seen: Counter[str] = Counter()
    malformed = 0
    for message in out.responses:
        try:
            doc = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or "request_id" not in doc or type(doc["body"]["error"]) is not int:
            malformed += 1
            continue
        rid, body = doc["request_id"], doc["body"]
        seen[rid] += 1
        fate = fates[int(rid[1:])]
        assert not fate.drop and not fate.malformed
        assert body["error"] == (TEMPORARY_FAILURE if fate.error else 0)
        assert seen[rid] == 1 or fate.duplicate
    assert malformed == sum(f.malformed * (1 + f.duplicate) for f in sent)
    assert out.left == (0, 0)


def test_delayed_responses_all_arrive() -> None:
    """With a response delay every call is still answered and acked."""
    calls = [call(f"d{i}", [{"email": f"d{i}@example.com"}]) for i in range(10)]
    out = run(Names.fresh(), calls, expect_responses=10, delay=0.2)
    assert set(out.by_request_id()) == {f"d{i}" for i in range(10)}
    assert out.left == (0, 0)


def test_api_queues_are_checked_and_declared() -> None:
    """Without declare a missing api_req is QueueMissing; with it both API queues are created."""
    names = Names.fresh()

    async def go() -> tuple[int, int]:
        connection = await aiormq.connect(URL)
        try:
            channel = await connection.channel()
            await channel.queue_declare(names.request, durable=True)
            await channel.queue_declare(names.result, durable=True)
            plain = settings_for(names)
            missing = EmulatorSettings(
                broker=BrokerSettings(url=URL, queue=names.request, result_queue=names.result),
                api_queue=names.api,
                api_result_queue=names.api_result,
            )
            with pytest.raises(
                QueueMissing, match=rf"{names.api}.*--api-queue '' serves database_import alone"
            ):
                await serve(missing, asyncio.Event())
            stop = asyncio.Event()
            stop.set()
            await serve(plain, stop)
            api = await channel.queue_declare(names.api, passive=True)
            response = await channel.queue_declare(names.api_result, passive=True)
            return api.consumer_count or 0, response.message_count or 0
        finally:
            await connection.close()
            await delete(names)

    assert asyncio.run(go()) == (0, 0)


def test_cli_serves_api_calls_with_its_options() -> None:
    """`bulk-import emulate --api-queue Q --api-result-queue R --token T` answers calls and counts them."""
    names = Names.fresh()
    proc = subprocess.Popen(
        cli(
            "emulate", "--queue", names.request, "--result-queue", names.result, "--declare",
            "--api-queue", names.api, "--api-result-queue", names.api_result, "--token", "secret",
            "--tariff-limit", "1000000",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip

    async def exchange() -> list[DeliveredMessage]:
        connection = await aiormq.connect(URL)
        try:
            channel = await connection.channel()
            deadline = time.monotonic() + DEADLINE_S
            while True:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the emulator did not start consuming api_req"
                try:
                    ok = await channel.queue_declare(names.api, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    channel = await connection.channel()
                else:
                    if ok.consumer_count:
                        break
                await asyncio.sleep(0.1)
            await put(
                channel,
                names.api,
                [call("cli-1", [{"email": "cli@example.com"}]), call("cli-2", [], token="x")],
            )
            while await count(channel, names.api_result) < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            return await take_all(channel, names.api_result)
        finally:
            await connection.close()

    try:
        responses = asyncio.run(exchange())
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=DEADLINE_S)
        asyncio.run(delete(names))
    bodies = {orjson.loads(m.body)["request_id"]: orjson.loads(m.body)["body"] for m in responses}
    assert bodies["cli-1"]["result"][0]["error"] == 0
    assert bodies["cli-2"]["error"] == UNAUTHORIZED
    assert re.search(r"api_requests=2 api_responses=2 api_profiles=1 ", err), err
    assert proc.returncode == 0, err
