"""The tapped reader: one channel's deliveries lifted out whole, every other frame passed on as is."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp import frame as pamqp_frame
from pamqp.heartbeat import Heartbeat

from bulk_import.delivery import Delivery, Tap, TapReader
from bulk_import.frames import content_frames

TAPPED = 3


def deliver(channel: int, tag: int, body: bytes, frame_max: int = 4096, redelivered: bool = False) -> bytes:
    method = spec.Basic.Deliver(
        consumer_tag="ctag", delivery_tag=tag, redelivered=redelivered, exchange="", routing_key="q"
    )
    return pamqp_frame.marshal(method, channel) + content_frames(channel, body, b"id%d" % tag, frame_max)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def make_reader(loop: asyncio.AbstractEventLoop) -> tuple[TapReader, list[Delivery]]:
    got: list[Delivery] = []
    tap = Tap()
    tap.attach(TAPPED, got.extend)
    return TapReader(tap, loop=loop), got


def passed_through(reader: TapReader) -> bytes:
    return bytes(reader._buffer)


bodies = st.lists(st.binary(max_size=9000), min_size=1, max_size=12)


@given(bodies=bodies, cuts=st.lists(st.integers(1, 5000), max_size=30))
def test_deliveries_survive_any_split(bodies: list[bytes], cuts: list[int]) -> None:
    """However the socket splits the stream, each delivery arrives whole and in order."""
    loop = asyncio.new_event_loop()
    try:
        reader, got = make_reader(loop)
        other = pamqp_frame.marshal(spec.Basic.Ack(delivery_tag=7), 1) + pamqp_frame.marshal(Heartbeat(), 0)
        stream = b"".join(deliver(TAPPED, i + 1, b, redelivered=i % 2 == 1) for i, b in enumerate(bodies))
        stream = other + stream + deliver(1, 99, b"not tapped")
        pos = 0
        for cut in cuts:
            reader.feed_data(stream[pos : pos + cut])
            pos += cut
        reader.feed_data(stream[pos:])
        assert [d.body for d in got] == bodies
        assert [d.delivery_tag for d in got] == list(range(1, len(bodies) + 1))
        assert [d.redelivered for d in got] == [i % 2 == 1 for i in range(len(bodies))]
        assert passed_through(reader).startswith(other)
        assert passed_through(reader).endswith(deliver(1, 99, b"not tapped"))
    finally:
        loop.close()


def test_header_decodes_on_demand(loop: asyncio.AbstractEventLoop) -> None:
    """A delivery's properties are there when asked for (used for foreign replies only)."""
    reader, got = make_reader(loop)
    reader.feed_data(deliver(TAPPED, 1, b"{}"))
    header = got[0].header()
    assert header.properties.message_id == "id1"
    assert header.properties.delivery_mode == 2


def test_untapped_reader_passes_everything(loop: asyncio.AbstractEventLoop) -> None:
    """Before a channel is tapped (the handshake), bytes go to aiormq untouched."""
    tap = Tap()
    reader = TapReader(tap, loop=loop)
    data = deliver(TAPPED, 1, b"x")
    reader.feed_data(data)
    assert passed_through(reader) == data
