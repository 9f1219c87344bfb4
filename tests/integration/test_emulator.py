"""The stand-in job server over the real broker: replies, acks, persistence and the fault knobs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiormq
import orjson
import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from bulk_import.config import BrokerSettings
from bulk_import.emulator import (
    ERROR_CODES,
    TEMPORARY_FAILURE,
    EmulatorCounts,
    EmulatorSettings,
    Faults,
    ProfileStore,
    serve,
)
from bulk_import.emulator.profiles import (
    NOT_AN_OBJECT,
    NOT_FOUND_UPDATE_ONLY,
    NOT_JSON,
    UNKNOWN_MATCHING,
    UNKNOWN_PROFILE_ID,
)
from bulk_import.emulator.server import EXIT_AFTER_CODE
from bulk_import.errors import ConnectionLost, QueueMissing
from bulk_import.messages import MalformedReply, parse_reply

pytestmark = pytest.mark.broker

URL = os.environ.get("BULK_IMPORT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
#: Only a guard against a hung test, never a performance assertion.
DEADLINE_S = 60


@dataclass(frozen=True)
class Names:
    request: str
    result: str

    @classmethod
    def fresh(cls) -> Names:
        tag = uuid.uuid4().hex[:8]
        return cls(f"t_{tag}_import", f"t_{tag}_result")


@dataclass
class Outcome:
    counts: EmulatorCounts
    replies: list[DeliveredMessage]
    #: (messages, consumers) of the request queue once serve() has returned.
    request_queue: tuple[int, int]
    ready_called: bool

    def bodies(self) -> list[bytes]:
        return [m.body for m in self.replies]

    def by_feedback_id(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for message in self.replies:
            doc = orjson.loads(message.body)
            out[doc["feedback_id"]] = doc
        return out


def request(fid: str, matching: str = "email", **fields: Any) -> bytes:
    doc: dict[str, Any] = {"account_id": 1, "db_id": 1, "matching": matching, "data": {}, "feedback_id": fid}
    doc.update(fields)
    return orjson.dumps(doc)


async def queue_state(channel: aiormq.abc.AbstractChannel, name: str) -> tuple[int, int]:
    ok = await channel.queue_declare(name, passive=True)
    return ok.message_count or 0, ok.consumer_count or 0


async def take_all(channel: aiormq.abc.AbstractChannel, name: str) -> list[DeliveredMessage]:
    """Every message on the queue, removed (basic.get until empty)."""
    out: list[DeliveredMessage] = []
    while True:
        message = await channel.basic_get(name, no_ack=True)
        if isinstance(message.delivery, spec.Basic.GetEmpty):
            return out
        out.append(message)


async def put(channel: aiormq.abc.AbstractChannel, name: str, bodies: list[bytes]) -> None:
    for body in bodies:
        await channel.basic_publish(body, routing_key=name, properties=spec.Basic.Properties(delivery_mode=2))


async def exchange(
    names: Names,
    bodies: list[bytes],
    expect_replies: int,
    *,
    declare: bool = True,
    store: ProfileStore | None = None,
    counts: EmulatorCounts | None = None,
    **knobs: Any,
) -> Outcome:
    """Put ``bodies`` on the request queue, serve until ``expect_replies`` are out, stop, collect."""
    settings = EmulatorSettings(
        broker=BrokerSettings(url=URL, queue=names.request, result_queue=names.result, declare=declare),
        **knobs,
    )
    connection = await aiormq.connect(URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.queue_declare(names.request, durable=True)
        await channel.queue_declare(names.result, durable=True)
        await put(channel, names.request, bodies)
        stop = asyncio.Event()
        ready: list[bool] = []
        serving = asyncio.create_task(
            serve(settings, stop, on_ready=lambda: ready.append(True), store=store, counts=counts)
        )
        try:
            async with asyncio.timeout(DEADLINE_S):
                while (await queue_state(channel, names.result))[0] < expect_replies:
                    if serving.done():
                        serving.result()
                        raise AssertionError("serve() returned before being stopped")
                    await asyncio.sleep(0.02)
        finally:
            stop.set()
            counts = await serving
        return Outcome(
            counts=counts,
            replies=await take_all(channel, names.result),
            request_queue=await queue_state(channel, names.request),
            ready_called=bool(ready),
        )
    finally:
        await connection.close()


async def delete(names: Names) -> None:
    connection = await aiormq.connect(URL)
    try:
        channel = await connection.channel()
        await channel.queue_delete(names.request)
        await channel.queue_delete(names.result)
    finally:
        await connection.close()


def run(names: Names, bodies: list[bytes], expect_replies: int, **knobs: Any) -> Outcome:
    """:func:`exchange` in a fresh event loop; the queues are deleted afterwards."""

    async def go() -> Outcome:
        try:
            return await exchange(names, bodies, expect_replies, **knobs)
        finally:
            await delete(names)

    return asyncio.run(go())


def test_requests_get_documented_replies_and_are_acked() -> None:
    """Each request gets its reply by feedback_id with the matching semantics; all requests are acked."""
    bodies = [
        request("create", email="Ann@Example.com", data={"_fname": "Ann", "CRM_ID": 7}),
        request("update", email="ann@example.com", data={"_fname": "Anna"}),
        request("by-custom", "custom", field_name="CRM_ID", field_value="7"),
        request("by-phone", "phone", phone="+7 900 123-45-67"),
        request("phone-again", "phone", phone="79001234567", update_only=True),
        request("ghost", email="ghost@example.com", update_only=True),
        request("unknown-id", "profile_id", profile_id="60f039e830b8bcb28392f8eb"),
        request("odd-matching", "nickname"),
        b'{"feedback_id": "broken", "account_id": 1, "data": {',
        b'[{"feedback_id": "array"}]',
        b"\x00 not json at all",
    ]
    out = run(Names.fresh(), bodies, expect_replies=10)
    replies = out.by_feedback_id()
    assert len(out.replies) == 10
    assert set(replies) == {
        "create", "update", "by-custom", "by-phone", "phone-again", "ghost", "unknown-id", "odd-matching",
        "broken", "array",
    }  # fmt: skip
    pid = replies["create"]["profile_id"]
    assert replies["create"] == {
        "error": 0,
        "error_text": "Successful operation",
        "feedback_id": "create",
        "matching_field": "email",
        "profile_id": pid,
    }
    assert len(pid) == 24
    assert replies["update"]["profile_id"] == pid
    assert replies["by-custom"]["profile_id"] == pid
    assert replies["by-custom"]["matching_field"] == "custom"
    assert replies["by-phone"]["error"] == 0
    assert replies["phone-again"]["profile_id"] == replies["by-phone"]["profile_id"] != pid
    assert replies["ghost"]["error"] == NOT_FOUND_UPDATE_ONLY
    assert replies["unknown-id"]["error"] == UNKNOWN_PROFILE_ID
    assert replies["odd-matching"]["error"] == UNKNOWN_MATCHING
    assert replies["odd-matching"]["error_text"] == ERROR_CODES[UNKNOWN_MATCHING]
    assert replies["broken"]["error"] == NOT_JSON
    assert replies["array"]["error"] == NOT_AN_OBJECT
    for message in out.replies:
        props = message.header.properties
        assert props.delivery_mode == 2
        assert props.content_type == "application/json"
        assert props.message_id == orjson.loads(message.body)["feedback_id"]
    assert out.counts == EmulatorCounts(received=11, replied=10, errors=5, invalid_json=3)
    assert out.request_queue == (0, 0)
    assert out.ready_called


def test_store_keeps_profile_ids_across_restarts(tmp_path: Path) -> None:
    """With a store file, the same keys get the same profile ids after the emulator restarts."""
    store = tmp_path / "profiles.sqlite"
    bodies = [request(f"r{i}", "custom", field_name="CRM_ID", field_value=i) for i in range(20)]
    first = run(Names.fresh(), bodies, expect_replies=20, store_path=store)
    second = run(Names.fresh(), bodies, expect_replies=20, store_path=store)
    ids = [{k: v["profile_id"] for k, v in out.by_feedback_id().items()} for out in (first, second)]
    assert ids[0] == ids[1]
    assert len(set(ids[0].values())) == 20
    assert second.request_queue == (0, 0)


def test_caller_store_and_counts_survive_a_second_serve() -> None:
    """A caller's in-memory store and counts carry over from one serve() to the next (a reconnect)."""
    store, counts = ProfileStore(), EmulatorCounts()
    bodies = [request(f"s{i}", email=f"s{i}@example.com") for i in range(5)]
    first = run(Names.fresh(), bodies, expect_replies=5, store=store, counts=counts)
    second = run(Names.fresh(), bodies, expect_replies=5, store=store, counts=counts)
    assert first.by_feedback_id() == second.by_feedback_id()
    assert len(store) == 5
    assert counts == EmulatorCounts(received=10, replied=10)
    assert second.counts is counts


def test_lost_consumer_raises_connection_lost_with_counts_kept() -> None:
    """When the request queue disappears under it, serve() raises ConnectionLost; the counts stay."""
    names, counts = Names.fresh(), EmulatorCounts()
    settings = EmulatorSettings(
        broker=BrokerSettings(url=URL, queue=names.request, result_queue=names.result, declare=True)
    )

    async def go() -> None:
        connection = await aiormq.connect(URL)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.queue_declare(names.request, durable=True)
            await channel.queue_declare(names.result, durable=True)
            await put(channel, names.request, [request(f"l{i}", email=f"l{i}@example.com") for i in range(5)])
            serving = asyncio.create_task(serve(settings, asyncio.Event(), counts=counts))
            async with asyncio.timeout(DEADLINE_S):
                while (await queue_state(channel, names.result))[0] < 5:
                    assert not serving.done(), serving.exception()
                    await asyncio.sleep(0.02)
                await channel.queue_delete(names.request)
                with pytest.raises(ConnectionLost, match="cancelled the consumer"):
                    await serving
        finally:
            await connection.close()
            await delete(names)

    asyncio.run(go())
    assert counts.received == 5


def expected_counts(bodies: list[bytes], faults: Faults) -> EmulatorCounts:
    """What the knobs should do to these (valid, distinct) requests."""
    fates = [faults.decide(b) for b in bodies]
    sent = [f for f in fates if not f.drop]
    duplicated = sum(f.duplicate for f in sent)
    return EmulatorCounts(
        received=len(bodies),
        replied=len(sent) + duplicated,
        errors=sum(f.error for f in sent),
        dropped=len(fates) - len(sent),
        duplicated=duplicated,
        malformed=sum(f.malformed for f in sent),
    )


def test_fault_knobs_give_the_expected_counts() -> None:
    """drop/duplicate/error/malformed hit exactly the requests their seed picks, the same on a rerun."""
    knobs: dict[str, Any] = {"seed": 7, "drop": 0.1, "duplicate": 0.1, "error": 0.1, "malformed": 0.1}
    bodies = [request(f"f{i}", email=f"u{i}@example.com", data={"n": i}) for i in range(400)]
    faults = Faults(knobs["seed"], knobs["drop"], knobs["duplicate"], knobs["error"], knobs["malformed"])
    expected = expected_counts(bodies, faults)
    assert min(expected.dropped, expected.duplicated, expected.errors, expected.malformed) > 0
    outcomes = [run(Names.fresh(), bodies, expect_replies=expected.replied, **knobs) for _ in range(2)]
    for out in outcomes:
        assert out.counts == expected
        assert len(out.replies) == expected.replied
        assert out.request_queue == (0, 0)
    out = outcomes[0]
    seen: Counter[str] = Counter()
    malformed = 0
    kinds: set[str] = set()
    for body in out.bodies():
        try:
            reply = parse_reply(body)
        except MalformedReply as exc:
            malformed += 1
            kinds.add(str(exc).split(":")[0])
            continue
        seen[reply.feedback_id] += 1
        fate = faults.decide(bodies[int(reply.feedback_id[1:])])
        assert reply.error == (TEMPORARY_FAILURE if fate.error else 0)
        assert not fate.malformed and not fate.drop
        assert seen[reply.feedback_id] == 1 or fate.duplicate
    assert malformed == expected.malformed + sum(
        f.duplicate and f.malformed and not f.drop for f in map(faults.decide, bodies)
    )
    assert len(kinds) == 3  # not JSON, no feedback_id, error not an integer


def test_error_share_one_applies_nothing() -> None:
    """With error=1 every request is answered with the temporary failure and no profile is created."""
    bodies = [request(f"e{i}", email="same@example.com") for i in range(5)]
    out = run(Names.fresh(), bodies, expect_replies=5, error=1.0)
    replies = out.by_feedback_id()
    assert {r["error"] for r in replies.values()} == {TEMPORARY_FAILURE}
    assert {r["profile_id"] for r in replies.values()} == {""}
    assert out.counts.errors == 5
    assert out.request_queue == (0, 0)


def test_delayed_replies_all_arrive() -> None:
    """With a reply delay every request is still answered and acked."""
    bodies = [request(f"d{i}", email=f"d{i}@example.com") for i in range(30)]
    out = run(Names.fresh(), bodies, expect_replies=30, delay=0.2)
    assert set(out.by_feedback_id()) == {f"d{i}" for i in range(30)}
    assert out.counts.replied == 30
    assert out.request_queue == (0, 0)


def test_missing_queue_is_queue_missing() -> None:
    """Without declare a queue that does not exist is QueueMissing, not an aiormq error."""
    names = Names.fresh()
    settings = EmulatorSettings(
        broker=BrokerSettings(url=URL, queue=names.request, result_queue=names.result)
    )
    with pytest.raises(QueueMissing, match="does not exist"):
        asyncio.run(serve(settings, asyncio.Event()))


EXIT_AFTER_CHILD = """
import asyncio, sys
from bulk_import.config import BrokerSettings
from bulk_import.emulator import EmulatorSettings, serve
url, request, result, n = sys.argv[1:]
settings = EmulatorSettings(BrokerSettings(url=url, queue=request, result_queue=result), exit_after=int(n))
asyncio.run(serve(settings, asyncio.Event()))
"""


def test_exit_after_exits_75_and_loses_nothing() -> None:
    """exit_after kills the process with 75; every request is answered or back on the queue."""
    names = Names.fresh()
    fids = [f"x{i}" for i in range(10)]

    async def setup() -> None:
        connection = await aiormq.connect(URL)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.queue_declare(names.request, durable=True)
            await channel.queue_declare(names.result, durable=True)
            await put(channel, names.request, [request(f, email=f"{f}@example.com") for f in fids])
        finally:
            await connection.close()

    async def collect() -> tuple[list[DeliveredMessage], list[DeliveredMessage]]:
        connection = await aiormq.connect(URL)
        try:
            channel = await connection.channel()
            return await take_all(channel, names.request), await take_all(channel, names.result)
        finally:
            await connection.close()

    try:
        asyncio.run(setup())
        child = subprocess.run(
            [sys.executable, "-c", EXIT_AFTER_CHILD, URL, names.request, names.result, "5"],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            check=False,
        )
        assert child.returncode == EXIT_AFTER_CODE, child.stderr
        assert "exit_after" in child.stderr
        requeued, replies = asyncio.run(collect())
    finally:
        asyncio.run(delete(names))
    left = {orjson.loads(m.body)["feedback_id"] for m in requeued}
    answered = {orjson.loads(m.body)["feedback_id"] for m in replies}
    assert left | answered == set(fids)
    assert len(left) >= 6  # the fifth request and everything after it were never answered
