"""Messages as the bytes a publisher writes: AMQP frames packed by hand, many messages at a time.

A message is a Basic.Publish method frame, a content header frame (body size, content type,
delivery mode, message id) and body frames of at most ``frame_max`` bytes. Within a run only the
body size and the id's length change from message to message, so the binary parts are packed
once per distinct size and each message is a single ``bytes.join`` of ready parts: a third of
what packing each message costs, and it runs in the thread that hands batches to the publisher,
not in the event loop.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from typing import Final

from pamqp import commands as spec
from pamqp import frame as pamqp_frame

FRAME_END: Final = b"\xce"
#: Content header property flags: content_type, delivery_mode, message_id.
_FLAGS: Final = (1 << 15) | (1 << 12) | (1 << 7)
#: The properties every message shares: content type (a short string) and delivery mode 2.
_PROPS: Final = b"\x10application/json\x02"
_FRAME_HEAD: Final = struct.Struct(">BHI")
#: A content header frame up to its properties: frame head, class, weight, body size, flags.
_HEADER: Final = struct.Struct(">BHIHHQH")
#: A body frame's head, after the end of the header frame before it.
_BODY_HEAD: Final = struct.Struct(">cBHI")
_HEADER_FIXED: Final = _HEADER.size - _FRAME_HEAD.size
#: Bytes a frame adds around its payload: the head and the end byte.
FRAME_OVERHEAD: Final = _FRAME_HEAD.size + 1
#: Cached packed parts per wire, at most; a run meets a few hundred body sizes.
_CACHE_LIMIT: Final = 1 << 16


@dataclass(frozen=True, slots=True)
class Wire:
    """What a message's bytes depend on besides its body and id: the channel, frame size and route."""

    channel: int
    frame_max: int
    routing_key: str
    exchange: str = ""
    #: Have the broker return a message no queue takes (``basic.return``) instead of dropping it.
    mandatory: bool = False

    @property
    def method(self) -> bytes:
        return _method_frame(self)


@lru_cache(maxsize=64)
def _method_frame(wire: Wire) -> bytes:
    return pamqp_frame.marshal(
        spec.Basic.Publish(exchange=wire.exchange, routing_key=wire.routing_key, mandatory=wire.mandatory),
        wire.channel,
    )


def content_frames(channel: int, body: bytes, message_id: bytes, frame_max: int) -> bytes:
    """The content header and body frames of one persistent JSON message."""
    message_id = message_id[:255]  # the AMQP short-string limit
    size = _HEADER_FIXED + len(_PROPS) + 1 + len(message_id)
    out = [_HEADER.pack(2, channel, size, 60, 0, len(body), _FLAGS), _PROPS, bytes((len(message_id),))]
    out += (message_id, FRAME_END)
    limit = frame_max - FRAME_OVERHEAD
    for start in range(0, len(body), limit) if body else ():
        part = body[start : start + limit]
        out += (_FRAME_HEAD.pack(3, channel, len(part)), part, FRAME_END)
    return b"".join(out)


def encode_message(wire: Wire, body: bytes, message_id: bytes) -> bytes:
    """One message, method frame included."""
    return wire.method + content_frames(wire.channel, body, message_id, wire.frame_max)


class _Parts:
    """A wire's packed parts by size: the frames up to the message id, and the body frame's head."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.heads: dict[int, bytes] = {}
        self.body_heads: dict[int, bytes] = {}

    def add(self, keys: set[int], body_sizes: set[int]) -> None:
        if len(self.heads) > _CACHE_LIMIT or len(self.body_heads) > _CACHE_LIMIT:
            self.heads.clear()
            self.body_heads.clear()
        channel, method = self.wire.channel, self.wire.method
        for key in keys.difference(self.heads):
            id_size, body_size = divmod(key, 1 << 32)
            size = _HEADER_FIXED + len(_PROPS) + 1 + id_size
            header = _HEADER.pack(2, channel, size, 60, 0, body_size, _FLAGS)
            self.heads[key] = method + header + _PROPS + bytes((id_size,))
        for body_size in body_sizes.difference(self.body_heads):
            self.body_heads[body_size] = _BODY_HEAD.pack(FRAME_END, 3, channel, body_size)


@lru_cache(maxsize=8)
def _parts(wire: Wire) -> _Parts:
    return _Parts(wire)


def encode_messages(wire: Wire, bodies: Sequence[bytes], ids: Sequence[bytes]) -> list[bytes]:
    """Each body with its id as one message, the same bytes :func:`encode_message` gives."""
    limit = wire.frame_max - FRAME_OVERHEAD
    body_sizes = list(map(len, bodies))
    id_sizes = list(map(len, ids))
    if body_sizes and (max(body_sizes) > limit or not min(body_sizes) or max(id_sizes) > 255):
        # Bodies over one frame, empty ones (no body frame at all) and over-long ids, one by one.
        return [encode_message(wire, body, message_id) for body, message_id in zip(bodies, ids, strict=True)]
    keys = [i << 32 | b for i, b in zip(id_sizes, body_sizes, strict=True)]
    parts = _parts(wire)
    parts.add(set(keys), set(body_sizes))
    heads = map(parts.heads.__getitem__, keys)
    body_heads = map(parts.body_heads.__getitem__, body_sizes)
    return list(map(b"".join, zip(heads, ids, body_heads, bodies, repeat(FRAME_END), strict=False)))


def decode_message(wire: Wire, data: bytes) -> tuple[bytes, bytes]:
    """The body and the message id of a message :func:`encode_message` made for ``wire``."""
    at = len(wire.method)
    _, _, size = _FRAME_HEAD.unpack_from(data, at)
    header = at + _FRAME_HEAD.size
    body_size = _HEADER.unpack_from(data, at)[5]
    props = header + _HEADER_FIXED + len(_PROPS)
    message_id = data[props + 1 : props + 1 + data[props]]
    at = header + size + 1
    parts: list[bytes] = []
    got = 0
    while got < body_size:
        _, _, size = _FRAME_HEAD.unpack_from(data, at)
        parts.append(data[at + _FRAME_HEAD.size : at + _FRAME_HEAD.size + size])
        at += _FRAME_HEAD.size + size + 1
        got += size
    return b"".join(parts), message_id


def reframe(messages: Sequence[bytes], old: Wire, new: Wire) -> list[bytes]:
    """Messages made for ``old`` made again for ``new`` (another channel or frame size after a reconnect)."""
    if old == new:
        return list(messages)
    decoded = [decode_message(old, m) for m in messages]
    return encode_messages(new, [body for body, _ in decoded], [message_id for _, message_id in decoded])
