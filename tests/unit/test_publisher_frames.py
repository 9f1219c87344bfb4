"""The publisher's hand-packed frames are byte for byte what pamqp would send."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from bulk_import.publisher import encode_message


def reference(channel: int, body: bytes, message_id: bytes, frame_max: int) -> bytes:
    props = spec.Basic.Properties(
        content_type="application/json", delivery_mode=2, message_id=message_id.decode()
    )
    out = pamqp_frame.marshal(ContentHeader(0, len(body), props), channel)
    limit = frame_max - 8
    for start in range(0, len(body), limit):
        out += pamqp_frame.marshal(ContentBody(body[start : start + limit]), channel)
    return out


@given(
    st.integers(1, 2047),
    st.binary(max_size=3000),
    st.text(alphabet="abcdef0123456789-", min_size=1, max_size=40),
    st.sampled_from([4096, 131072]),
)
def test_same_bytes_as_pamqp(channel: int, body: bytes, message_id: str, frame_max: int) -> None:
    """Header and body frames match pamqp's, including bodies split over several frames."""
    assert encode_message(channel, body, message_id.encode(), frame_max) == reference(
        channel, body, message_id.encode(), frame_max
    )


def test_decodes_as_persistent_json() -> None:
    """pamqp reads the header back as a persistent application/json message with its id."""
    data = encode_message(1, b'{"a":1}', b"r1-5", 131072)
    _, _, header = pamqp_frame.unmarshal(data)
    assert isinstance(header, ContentHeader)
    assert header.body_size == 7
    assert header.properties.delivery_mode == 2
    assert header.properties.content_type == "application/json"
    assert header.properties.message_id == "r1-5"


@pytest.mark.parametrize("size", [0, 1, 131064, 131065])
def test_frame_boundaries(size: int) -> None:
    """Bodies at and around the frame size limit split like pamqp's."""
    body = b"x" * size
    assert encode_message(3, body, b"id", 131072) == reference(3, body, b"id", 131072)
