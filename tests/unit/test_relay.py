"""The coordinator/worker frames of --workers, and a worker's spec, without a broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bulk_import.config import BrokerSettings, ImportOptions
from bulk_import.delivery import Delivery
from bulk_import.messages import Answers, parse_reply
from bulk_import.relay import (
    REPLIES,
    ShardRouter,
    decode_replies,
    decode_settled,
    encode_replies,
    encode_settled,
    frame,
    read_frame,
)
from bulk_import.workers import decode_spec, encode_spec

tags = st.integers(1, 2**64 - 1)
epochs = st.integers(0, 2**32 - 1)


@given(epochs, st.lists(st.tuples(tags, st.binary(max_size=300)), max_size=50))
def test_replies_round_trip(epoch: int, replies: list[tuple[int, bytes]]) -> None:
    got_epoch, got = decode_replies(encode_replies(epoch, replies))
    assert (got_epoch, list(got)) == (epoch, replies)


@given(epochs, st.lists(tags, max_size=500))
def test_settled_round_trip(epoch: int, settled: list[int]) -> None:
    assert decode_settled(encode_settled(epoch, settled)) == (epoch, settled)


@given(st.lists(st.binary(max_size=2000), min_size=1, max_size=20), st.integers(1, 64))
def test_frames_survive_any_split_of_the_stream(payloads: list[bytes], chunk: int) -> None:
    """Frames read back whole and in order however the bytes arrive; EOF reads as None."""

    async def go() -> list[tuple[bytes, bytes] | None]:
        reader = asyncio.StreamReader()
        data = b"".join(frame(REPLIES, p) for p in payloads)
        for at in range(0, len(data), chunk):
            reader.feed_data(data[at : at + chunk])
        reader.feed_eof()
        return [await read_frame(reader) for _ in range(len(payloads) + 1)]

    assert asyncio.run(go()) == [(REPLIES, p) for p in payloads] + [None]


def test_a_worker_gets_the_options_it_was_given(tmp_path: Path) -> None:
    """Every option reaches the worker as it was, paths and shard included."""
    options = ImportOptions(
        db_id=7,
        matching="custom",
        field_name="CRM_ID",
        types={"CRM_ID": "int"},
        results_path=tmp_path / "part.parquet",
        shard=(1, 3),
        run_id="abc123",
        nulls="keep",
        max_pending=100,
        rename={"E-Mail": "email"},
        exclude=("internal_id",),
        on_duplicate_key="first",
        retry_errors=frozenset({1, 503}),
        retry_attempts=5,
        retry_backoff=0.5,
    )
    settings = BrokerSettings(url="amqp://u:p@127.0.0.1:5672/x", queue="q", result_queue="r")
    assert decode_spec(encode_spec(Path("in.csv"), options, settings)) == (Path("in.csv"), options, settings)


def test_router_acks_late_duplicates_of_finished_shards() -> None:
    """A reply for a finished shard is settled at once; one for a live shard waits for its worker."""
    router = ShardRouter("run1", "results", [None, None, None])
    router.finished.add(1)
    reply = parse_reply(b'{"error":0,"feedback_id":"run1-4"}')
    late = Delivery(delivery_tag=7, redelivered=True, body=b"{}", header_frame=b"")
    fresh = Delivery(delivery_tag=8, redelivered=False, body=b"{}", header_frame=b"")
    assert router.take(Answers.of(4, reply), late)
    assert not router.take(Answers.of(5, reply), fresh)
    assert router.late_duplicates == 1
    assert router._outbox == {2: [(8, b"{}")]}
