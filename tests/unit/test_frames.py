"""Hand-packed frames are byte for byte what pamqp would send, one message or many at a time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from bulk_import.frames import Wire, content_frames, decode_message, encode_message, encode_messages, reframe


def reference(wire: Wire, body: bytes, message_id: bytes) -> bytes:
    props = spec.Basic.Properties(
        content_type="application/json", delivery_mode=2, message_id=message_id.decode()
    )
    method = spec.Basic.Publish(exchange=wire.exchange, routing_key=wire.routing_key)
    out = pamqp_frame.marshal(method, wire.channel)
    out += pamqp_frame.marshal(ContentHeader(0, len(body), props), wire.channel)
    limit = wire.frame_max - 8
    for start in range(0, len(body), limit):
        out += pamqp_frame.marshal(ContentBody(body[start : start + limit]), wire.channel)
    return out


wires = st.builds(
    Wire,
    channel=st.integers(1, 2047),
    frame_max=st.sampled_from([4096, 131072]),
    routing_key=st.text(min_size=1, max_size=200),
    exchange=st.sampled_from(["", "amq.direct"]),
)
ids = st.text(alphabet="abcdef0123456789-", min_size=1, max_size=40).map(str.encode)
bodies = st.binary(max_size=9000)


@given(wires, bodies, ids)
def test_one_message_as_pamqp(wire: Wire, body: bytes, message_id: bytes) -> None:
    """Method, header and body frames match pamqp's, bodies split over several frames included."""
    assert encode_message(wire, body, message_id) == reference(wire, body, message_id)


@given(wires, st.lists(st.tuples(bodies, ids), max_size=30))
def test_many_messages_as_one_at_a_time(wire: Wire, messages: list[tuple[bytes, bytes]]) -> None:
    """The bulk path (sizes cached across calls) gives each message's bytes, and they decode back."""
    encoded = encode_messages(wire, [b for b, _ in messages], [i for _, i in messages])
    assert encoded == [reference(wire, b, i) for b, i in messages]
    assert [decode_message(wire, m) for m in encoded] == messages


@given(wires, wires, st.lists(st.tuples(bodies, ids), max_size=10))
def test_reframe_for_another_wire(old: Wire, new: Wire, messages: list[tuple[bytes, bytes]]) -> None:
    """Messages built before a reconnect are made again for the new channel and frame size."""
    encoded = [encode_message(old, b, i) for b, i in messages]
    assert reframe(encoded, old, new) == [reference(new, b, i) for b, i in messages]


def test_decodes_as_persistent_json() -> None:
    """pamqp reads the header back as a persistent application/json message with its id."""
    data = content_frames(1, b'{"a":1}', b"r1-5", 131072)
    _, _, header = pamqp_frame.unmarshal(data)
    assert isinstance(header, ContentHeader)
    assert header.body_size == 7
    assert header.properties.delivery_mode == 2
    assert header.properties.content_type == "application/json"
    assert header.properties.message_id == "r1-5"


@pytest.mark.parametrize("size", [0, 1, 131064, 131065])
def test_frame_boundaries(size: int) -> None:
    """Bodies at and around the frame size limit split like pamqp's, in bulk too."""
    wire = Wire(3, 131072, "q")
    body = b"x" * size
    assert encode_messages(wire, [b"{}", body], [b"a", b"id"]) == [
        reference(wire, b"{}", b"a"),
        reference(wire, body, b"id"),
    ]
