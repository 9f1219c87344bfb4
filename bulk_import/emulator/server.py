"""The stand-in job server on the real broker: consume requests, apply them, reply, then ack.

A request is acked only once its reply is confirmed by the broker (or deliberately dropped), so a
stand-in that dies loses nothing: the broker delivers the unacked requests again. Acks go out as
``multiple`` acks up to the highest tag below which every request is settled, at most every
:data:`ACK_INTERVAL_S` or every :data:`ACK_EVERY` requests. Replies go out through the importer's
own bulk :class:`~bulk_import.publisher.Publisher`; requests are handled a delivered batch at a
time, so the stand-in keeps up with the importer.

With ``api_queue`` set it also serves the platform's second path, ``api_req`` → ``api_resp``
(:mod:`bulk_import.emulator.api`), on the same connection and the same store but channels of its
own: the ``database_import`` path does no more work per request than without it. A call is
answered only when it carries a ``request_id``, and acked once that response is confirmed.

The fault knobs are decided per request by a keyed hash of its body (:class:`Faults`): the same
request with the same ``seed`` always meets the same fate, whatever the order, the prefetch or a
restart, and a test can compute the expected counts with :meth:`Faults.decide`. On ``api_req`` they
act on a whole call: ``error`` answers 503 and applies none of its profiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import sqlite3
import struct
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiormq
import orjson
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from .. import broker
from ..config import BrokerSettings
from ..delivery import Delivery, Tap, untapped
from ..errors import BrokerUnreachable, ConnectionLost, InputError, QueueMissing
from ..publisher import Publisher
from .api import ApiService, freeze_garbage_collection, malformed_response
from .profiles import NOT_AN_OBJECT, NOT_JSON, TEMPORARY_FAILURE, ProfileStore, error_reply

log = logging.getLogger(__name__)

#: Acks wait at most this long for more requests to settle...
ACK_INTERVAL_S: Final = 0.02
#: ...or until this many have.
ACK_EVERY: Final = 1000
#: A batch smaller than this waits GATHER_S for more: per-batch costs (a socket write, a confirm)
#: dominate when requests trickle in one at a time.
GATHER_MIN: Final = 256
GATHER_S: Final = 0.002
#: ``api_req`` messages taken from the broker at once (each may hold 10,000 profiles).
API_PREFETCH: Final = 64
#: The exit code of ``exit_after``: EX_TEMPFAIL, what a crashed worker's supervisor sees.
EXIT_AFTER_CODE: Final = 75
_FEEDBACK_RE: Final = re.compile(rb'"feedback_id"\s*:\s*"((?:[^"\\]|\\.){0,1000})"')
_FOUR_U32: Final = struct.Struct("<4I")


@dataclass(frozen=True)
class EmulatorSettings:
    """Where to serve, and how to misbehave: shares from 0 to 1, repeatable by ``seed``."""

    #: ``queue`` is the request queue, ``result_queue`` the reply queue; ``declare`` creates them.
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    #: Keep the profiles in this SQLite file across restarts (same keys, same profile ids).
    store_path: Path | None = None
    prefetch: int = 4096
    seed: int = 0
    #: Share of requests applied and acked whose reply is never sent.
    drop: float = 0.0
    #: Share of replies sent twice.
    duplicate: float = 0.0
    #: Share of requests not applied but answered with :data:`TEMPORARY_FAILURE`.
    error: float = 0.0
    #: A request chosen for ``error`` fails this many times, then is served (it is temporary);
    #: None: it always fails.
    error_times: int | None = None
    #: Seconds each reply is held back before it is published (other requests go on meanwhile).
    delay: float = 0.0
    #: Share of requests applied and answered with a malformed body (three kinds, in turn).
    malformed: float = 0.0
    #: Exit abruptly (``os._exit(75)``, nothing acked) when this many requests have arrived.
    exit_after: int | None = None
    #: Seconds to finish in-flight replies and acks once ``stop`` is set; the rest is redelivered.
    drain_timeout: float = 30.0
    #: Also serve API calls from this queue (``api_req``), answering on ``api_result_queue``;
    #: None serves ``database_import`` alone.
    api_queue: str | None = None
    api_result_queue: str = "api_resp"
    #: The API token an ``api_req`` body must carry; None accepts any token, or none.
    token: str | None = field(default=None, repr=False)
    #: Answer 402 (tariff limit) once this many profiles have been imported through ``api_req``.
    tariff_limit: int | None = None

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "error", "malformed"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise InputError(f"--{name} is a share of requests: between 0 and 1, not {share}")
        if self.delay < 0:
            raise InputError("--delay cannot be negative")
        if self.prefetch < 1:
            raise InputError("--prefetch must be at least 1")
        if self.exit_after is not None and self.exit_after < 1:
            raise InputError("--exit-after must be at least 1")
        if self.tariff_limit is not None and self.tariff_limit < 0:
            raise InputError("--tariff-limit cannot be negative")
        if self.api_queue is not None and not self.api_result_queue:
            raise InputError("--api-result-queue cannot be empty")


@dataclass
class EmulatorCounts:
    """What a :func:`serve` did; requests unless said otherwise."""

    #: Requests taken from the request queue and handled.
    received: int = 0
    #: Reply messages the broker confirmed (a duplicated reply counts twice).
    replied: int = 0
    #: Requests whose reply (sent, maybe malformed) carries a non-zero error.
    errors: int = 0
    #: Requests whose reply was dropped on purpose.
    dropped: int = 0
    #: Requests replied to twice on purpose.
    duplicated: int = 0
    #: Requests answered with a malformed body on purpose.
    malformed: int = 0
    #: Requests whose body is not a JSON object (answered only if a feedback_id can be read).
    invalid_json: int = 0
    #: ``api_req`` messages taken and handled.
    api_requests: int = 0
    #: Responses on ``api_resp`` the broker confirmed (a duplicated one counts twice).
    api_responses: int = 0
    #: Profiles imported or updated through ``api_req``.
    api_profiles: int = 0
    #: Profiles of a batch (or a single import) answered with an error.
    api_profile_errors: int = 0
    #: API calls whose response (sent, maybe malformed) carries a non-zero error.
    api_errors: int = 0
    #: API calls without a ``request_id``: applied, nothing to answer.
    api_unanswered: int = 0
    #: API calls whose response was dropped, duplicated or malformed on purpose.
    api_dropped: int = 0
    api_duplicated: int = 0
    api_malformed: int = 0
    #: ``api_req`` messages that are not a JSON object.
    api_invalid_json: int = 0


@dataclass(frozen=True, slots=True)
class Fate:
    """What the fault knobs do to one request."""

    drop: bool = False
    duplicate: bool = False
    error: bool = False
    malformed: bool = False


NO_FAULT: Final = Fate()


class Faults:
    """Each request's :class:`Fate`: four independent draws from a keyed hash of its body."""

    def __init__(
        self,
        seed: int = 0,
        drop: float = 0.0,
        duplicate: float = 0.0,
        error: float = 0.0,
        malformed: float = 0.0,
        error_times: int | None = None,
    ) -> None:
        self._key = hashlib.blake2b(str(seed).encode(), digest_size=32).digest()
        self._limits = tuple(round(share * 2**32) for share in (drop, duplicate, error, malformed))
        self.active = any(self._limits)
        self._error_times = error_times
        #: Times each request chosen for an error has failed (with ``error_times``), by its digest.
        self._errored: dict[bytes, int] = {}

    @classmethod
    def of(cls, settings: EmulatorSettings) -> Faults:
        s = settings
        return cls(s.seed, s.drop, s.duplicate, s.error, s.malformed, s.error_times)

    def decide(self, body: bytes) -> Fate:
        if not self.active:
            return NO_FAULT
        digest = hashlib.blake2b(body, key=self._key, digest_size=16).digest()
        a, b, c, d = _FOUR_U32.unpack(digest)
        drop, duplicate, error, malformed = self._limits
        failing = c < error
        if failing and self._error_times is not None:
            times = self._errored.get(digest, 0)
            failing = times < self._error_times
            self._errored[digest] = times + 1
        return Fate(a < drop, b < duplicate, failing, d < malformed)


def malformed_body(reply: dict[str, Any], turn: int) -> bytes:
    """A broken rendering of ``reply``: not JSON, JSON without feedback_id, error as a string."""
    kind = turn % 3
    if kind == 0:
        return f"{{error: {reply['error']}, feedback_id: {reply['feedback_id']}}}".encode()
    if kind == 1:
        return orjson.dumps({k: v for k, v in reply.items() if k != "feedback_id"})
    return orjson.dumps({**reply, "error": str(reply["error"])})


def sniff_feedback_id(body: bytes) -> str | None:
    """The feedback_id of a body that does not parse, when a regex can still find one."""
    found = _FEEDBACK_RE.search(body)
    if found is None:
        return None
    try:
        fid = orjson.loads(b'"' + found.group(1) + b'"')
    except orjson.JSONDecodeError:
        return None
    return fid if isinstance(fid, str) else None


def _message_id(fid: object) -> bytes:
    """The reply's AMQP message_id: the feedback_id, cut to a shortstr's 255 bytes."""
    if not isinstance(fid, str):
        return b""
    return fid.encode("utf-8", "replace")[:255]


Outgoing = tuple[float, list[int], list[bytes], list[bytes]]


class _Responder(ABC):
    """One request queue's worth of serving: deliveries in, a task each to handle, send and ack.

    Replies go out through a :class:`Publisher` on a channel of their own; a request is acked once
    its reply is confirmed (or it needs none). Subclasses say how a batch of requests is handled.
    """

    #: A batch smaller than this waits :data:`GATHER_S` for more requests before it is handled.
    gather_min = GATHER_MIN
    #: Handle at most this many requests at a time (0: all that are waiting).
    batch_limit = 0

    def __init__(self, settings: EmulatorSettings, counts: EmulatorCounts, faults: Faults) -> None:
        self.settings = settings
        self.counts = counts
        self.faults = faults
        self.inbox: list[Delivery] = []
        self.inbox_ready = asyncio.Event()
        #: Reply batches with the loop time they may go out at (constant delay: in time order).
        self.outbox: deque[Outgoing] = deque()
        self.outbox_ready = asyncio.Event()
        self.draining = False
        self.handled_all = False
        self.malformed_turn = 0
        self.consume: aiormq.Channel | None = None
        self.publisher: Publisher | None = None
        # Ack state: every tag up to ``floor`` is settled; ``ahead`` holds settled tags above it.
        self.floor = 0
        self.ahead: set[int] = set()
        self.acked = 0
        #: Requests with more than one reply in flight (duplicates): tag → replies to confirm.
        self.remaining: dict[int, int] = {}
        #: Requests whose reply the broker refused for good: nacked back to the queue, never acked.
        self.failed: set[int] = set()
        self.to_nack: list[int] = []
        self.ack_wake = asyncio.Event()
        self.ack_full = asyncio.Event()

    # -- handling ----------------------------------------------------------------------------

    async def handle_loop(self) -> None:
        while True:
            if not self.inbox:
                if self.draining:
                    break
                self.inbox_ready.clear()
                await self.inbox_ready.wait()
                continue
            if len(self.inbox) < self.gather_min and not self.draining:
                await asyncio.sleep(GATHER_S)
            limit = self.batch_limit
            if limit and len(self.inbox) > limit:
                batch, self.inbox = self.inbox[:limit], self.inbox[limit:]
            else:
                batch, self.inbox = self.inbox, []
            self.handle(batch)
            await asyncio.sleep(0)
        self.handled_all = True
        self.outbox_ready.set()

    @abstractmethod
    def handle(self, batch: list[Delivery]) -> None:
        """Apply a batch of requests and queue their replies."""

    @abstractmethod
    def count_replied(self, n: int) -> None:
        """Count ``n`` replies the broker confirmed."""

    def queue_replies(self, tokens: list[int], bodies: list[bytes], ids: list[bytes]) -> None:
        """Send these replies once the delay has passed."""
        due = asyncio.get_running_loop().time() + self.settings.delay
        self.outbox.append((due, tokens, bodies, ids))
        self.outbox_ready.set()

    # -- sending -----------------------------------------------------------------------------

    async def send_loop(self) -> None:
        publisher = self.publisher
        assert publisher is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self.outbox:
                if self.handled_all:
                    break
                self.outbox_ready.clear()
                await self.outbox_ready.wait()
                continue
            due, tokens, bodies, ids = self.outbox[0]
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self.outbox.popleft()
            await publisher.publish_bodies(tokens, bodies, ids)
        await publisher.flush()

    def on_confirmed(self, tokens: list[int]) -> None:
        self.count_replied(len(tokens))
        remaining = self.remaining
        if not remaining:
            self.settle(tokens)
            return
        settled = []
        for tag in tokens:
            left = remaining.get(tag)
            if left is None:
                settled.append(tag)
            elif left > 1:
                remaining[tag] = left - 1
            else:
                del remaining[tag]
                settled.append(tag)
        self.settle(settled)

    def on_failed(self, tokens: list[int]) -> None:
        """The broker refused these replies for good: requeue their requests (nack), never ack them."""
        log.error("the broker refused %d reply(ies); their requests go back to the queue", len(tokens))
        fresh = [t for t in tokens if t > self.acked and t not in self.failed]
        for tag in fresh:
            self.remaining.pop(tag, None)
            self.failed.add(tag)
            self.to_nack.append(tag)
        self.settle(fresh)

    # -- acking ------------------------------------------------------------------------------

    def settle(self, tags: list[int]) -> None:
        """These requests need nothing more (reply confirmed, or none to send): they may be acked."""
        floor, ahead = self.floor, self.ahead
        for tag in tags:
            if tag == floor + 1:
                floor = tag
                while ahead and floor + 1 in ahead:
                    floor += 1
                    ahead.remove(floor)
            elif tag > floor:
                ahead.add(tag)
        self.floor = floor
        pending = floor - self.acked
        if pending >= ACK_EVERY:
            self.ack_full.set()
            self.ack_wake.set()
        elif pending > 0 or self.to_nack:
            self.ack_wake.set()

    async def ack_loop(self) -> None:
        while True:
            await self.ack_wake.wait()
            self.ack_wake.clear()
            if self.floor - self.acked < ACK_EVERY and not self.to_nack:
                self.ack_full.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ACK_INTERVAL_S):
                        await self.ack_full.wait()
            await self.flush_acks()

    async def flush_acks(self) -> None:
        channel = self.consume
        if channel is None or channel.is_closed:
            return
        nacks, self.to_nack = self.to_nack, []
        target = self.floor
        while target > self.acked and target in self.failed:
            target -= 1
        previous, self.acked = self.acked, max(self.acked, target)
        if self.failed:
            self.failed = {t for t in self.failed if t > self.acked}
        for tag in nacks:
            await channel.basic_nack(tag, multiple=False, requeue=True, wait=False)
        if target > previous:
            await channel.basic_ack(target, multiple=True, wait=False)

    def tasks(self, name: str) -> list[asyncio.Task[None]]:
        """The handle, send and ack tasks, in that order."""
        return [
            asyncio.create_task(self.handle_loop(), name=f"{name}-handle"),
            asyncio.create_task(self.send_loop(), name=f"{name}-send"),
            asyncio.create_task(self.ack_loop(), name=f"{name}-ack"),
        ]

    def drain(self) -> None:
        """Handle what was delivered, then let the handle and send tasks end."""
        self.draining = True
        self.inbox_ready.set()


class _Jobs(_Responder):
    """``database_import`` → ``database_import_result``: one reply per request."""

    def __init__(
        self, settings: EmulatorSettings, store: ProfileStore, counts: EmulatorCounts, faults: Faults
    ) -> None:
        super().__init__(settings, counts, faults)
        self.store = store

    # -- the consumer callback (aiormq runs one task per delivery: keep it trivial) -----------

    def deliver(self, batch: list[Delivery]) -> None:
        """Deliveries of one socket read, from the connection's tap (no task per message)."""
        self.inbox.extend(batch)
        self.inbox_ready.set()

    def count_replied(self, n: int) -> None:
        self.counts.replied += n

    def handle(self, batch: list[Delivery]) -> None:
        """Apply a batch of requests and queue their replies (the store is flushed first)."""
        s, counts, decide, active = self.settings, self.counts, self.faults.decide, self.faults.active
        apply, dumps, loads = self.store.apply, orjson.dumps, orjson.loads
        tokens: list[int] = []
        bodies: list[bytes] = []
        ids: list[bytes] = []
        settled: list[int] = []
        for message in batch:
            tag = message.delivery_tag
            counts.received += 1
            if s.exit_after is not None and counts.received >= s.exit_after:
                log.error(
                    "exit_after: exiting abruptly at request %d, nothing in flight acked", counts.received
                )
                os._exit(EXIT_AFTER_CODE)
            body = message.body
            fate = decide(body) if active else NO_FAULT
            request: Any
            try:
                request = loads(body)
            except orjson.JSONDecodeError:
                request = None
                code = NOT_JSON
            else:
                code = NOT_AN_OBJECT
            if type(request) is not dict:
                counts.invalid_json += 1
                fid: Any = sniff_feedback_id(body)
                log.warning(
                    "request %d is not a JSON object (%s): %s: %r",
                    tag,
                    "unparseable" if code == NOT_JSON else type(request).__name__,
                    "acked, answered" if fid is not None else "acked, no feedback_id to answer",
                    body[:120],
                )
                if fid is None:
                    settled.append(tag)
                    continue
                reply = error_reply(code, fid)
            elif fate.error:
                matching = request.get("matching") or "email"
                fid = request.get("feedback_id")
                reply = error_reply(
                    TEMPORARY_FAILURE, "" if fid is None else fid, matching if type(matching) is str else ""
                )
            else:
                reply = apply(request)
            if fate.drop:
                counts.dropped += 1
                settled.append(tag)
                continue
            if reply["error"]:
                counts.errors += 1
            if fate.malformed:
                counts.malformed += 1
                out = malformed_body(reply, self.malformed_turn)
                self.malformed_turn += 1
            else:
                out = dumps(reply)
            message_id = _message_id(reply["feedback_id"])
            tokens.append(tag)
            bodies.append(out)
            ids.append(message_id)
            if fate.duplicate:
                counts.duplicated += 1
                self.remaining[tag] = 2
                tokens.append(tag)
                bodies.append(out)
                ids.append(message_id)
        # A reply says the profile is stored: write the store before any reply or ack goes out.
        self.store.flush()
        if settled:
            self.settle(settled)
        if tokens:
            self.queue_replies(tokens, bodies, ids)


class _Api(_Responder):
    """``api_req`` → ``api_resp``: an API call per message, answered when it has a request_id."""

    #: Calls come one message at a time, each with up to 10,000 profiles: no waiting for more, and
    #: a few at a time, so that ``database_import`` requests are not held up behind many.
    gather_min = 1
    batch_limit = 4

    def __init__(
        self, settings: EmulatorSettings, store: ProfileStore, counts: EmulatorCounts, faults: Faults
    ) -> None:
        super().__init__(settings, counts, faults)
        self.store = store
        self.service = ApiService(
            store, token=settings.token, tariff_limit=settings.tariff_limit, imported=counts.api_profiles
        )

    async def deliver(self, message: DeliveredMessage) -> None:
        """aiormq's consumer callback: one task per delivery, which API calls can afford."""
        tag = message.delivery_tag
        assert tag is not None
        self.inbox.append(
            Delivery(tag, bool(getattr(message.delivery, "redelivered", False)), message.body, b"")
        )
        self.inbox_ready.set()

    def count_replied(self, n: int) -> None:
        self.counts.api_responses += n

    def handle(self, batch: list[Delivery]) -> None:
        """Apply a few API calls and queue their responses (the store is flushed first)."""
        counts, service, decide, active = self.counts, self.service, self.faults.decide, self.faults.active
        tokens: list[int] = []
        bodies: list[bytes] = []
        ids: list[bytes] = []
        settled: list[int] = []
        for message in batch:
            tag, body = message.delivery_tag, message.body
            counts.api_requests += 1
            fate = decide(body) if active else NO_FAULT
            answer = service.handle(body, fail=fate.error)
            counts.api_profiles += answer.imported
            counts.api_profile_errors += answer.failed
            if not answer.valid:
                counts.api_invalid_json += 1
                log.warning(
                    "api request %d is not a JSON object: %s: %r",
                    tag,
                    "acked, answered" if answer.request_id is not None else "acked, no request_id to answer",
                    body[:120],
                )
            if answer.request_id is None:
                counts.api_unanswered += 1
                settled.append(tag)
                continue
            if fate.drop:
                counts.api_dropped += 1
                settled.append(tag)
                continue
            if answer.body["error"]:
                counts.api_errors += 1
            if fate.malformed:
                counts.api_malformed += 1
                out = malformed_response(answer, self.malformed_turn)
                self.malformed_turn += 1
            else:
                out = answer.render()
            message_id = _message_id(answer.request_id)
            tokens.append(tag)
            bodies.append(out)
            ids.append(message_id)
            if fate.duplicate:
                counts.api_duplicated += 1
                self.remaining[tag] = 2
                tokens.append(tag)
                bodies.append(out)
                ids.append(message_id)
        self.store.flush()
        freeze_garbage_collection()
        if settled:
            self.settle(settled)
        if tokens:
            self.queue_replies(tokens, bodies, ids)


class _Server:
    """One connection's worth of serving: ``database_import`` and, if asked, ``api_req``."""

    def __init__(self, settings: EmulatorSettings, store: ProfileStore, counts: EmulatorCounts) -> None:
        self.settings = settings
        self.store = store
        self.counts = counts
        faults = Faults.of(settings)
        self.jobs = _Jobs(settings, store, counts, faults)
        self.api = _Api(settings, store, counts, faults) if settings.api_queue else None

    async def _consume(
        self,
        connection: aiormq.Connection,
        responder: _Responder,
        queues: tuple[str, str],
        prefetch: int,
        cancelled: asyncio.Future[str],
        tap: Tap | None = None,
    ) -> tuple[aiormq.Channel, aiormq.Channel, str]:
        """Open the reply and request channels of ``responder`` and start consuming; the tag."""
        b = self.settings.broker
        queue, result_queue = queues
        publish = await broker.open_channel(connection, b, confirms=True)
        consume = await broker.open_channel(connection, b, confirms=False)
        responder.publisher = Publisher(
            result_queue,
            window=max(1024, 2 * prefetch),
            on_confirmed=responder.on_confirmed,
            on_failed=responder.on_failed,
        )
        responder.publisher.attach(publish)

        def on_cancel(frame: spec.Basic.Cancel) -> None:
            if not cancelled.done():
                cancelled.set_result(f"the broker cancelled the consumer of {queue!r} (queue deleted?)")

        consume.on_consumer_cancel_callbacks.add(on_cancel)
        consumer_tag = f"bulk-import-emulator.{uuid.uuid4().hex}"
        responder.consume = consume
        with broker.map_amqp_errors(b):
            await consume.basic_qos(prefetch_count=prefetch)
            if tap is not None:
                assert isinstance(responder, _Jobs)
                tap.attach(consume.number, responder.deliver)
                await consume.basic_consume(queue, untapped, consumer_tag=consumer_tag)
            else:
                assert isinstance(responder, _Api)
                await consume.basic_consume(queue, responder.deliver, consumer_tag=consumer_tag)
        return publish, consume, consumer_tag

    # -- the whole run -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, on_ready: Callable[[], None] | None) -> None:
        s = self.settings
        b = s.broker
        tap = Tap()
        connection = await broker.connect(b, tap=tap)
        tasks: list[asyncio.Task[None]] = []
        watchers: list[asyncio.Future[Any]] = []
        try:
            await broker.ensure_queues(connection, b, b.queue, b.result_queue)
            if s.api_queue:
                try:
                    await broker.ensure_queues(connection, b, s.api_queue, s.api_result_queue)
                except QueueMissing as exc:
                    raise QueueMissing(f"{exc} (--api-queue '' serves database_import alone)") from None
            cancelled: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            publish, consume, consumer_tag = await self._consume(
                connection, self.jobs, (b.queue, b.result_queue), s.prefetch, cancelled, tap
            )
            channels = [consume, publish]
            consumers = [(consume, consumer_tag)]
            served = f"{b.queue} -> {b.result_queue}"
            if self.api is not None and s.api_queue:
                api_publish, api_consume, api_tag = await self._consume(
                    connection, self.api, (s.api_queue, s.api_result_queue), API_PREFETCH, cancelled
                )
                channels += [api_consume, api_publish]
                consumers.append((api_consume, api_tag))
                served += f", {s.api_queue} -> {s.api_result_queue}"
            if on_ready is not None:
                on_ready()
            log.info("serving %s at %s", served, b.safe_url)

            responders: list[_Responder] = [self.jobs] if self.api is None else [self.jobs, self.api]
            per_responder = [r.tasks(f"emulator-{i}") for i, r in enumerate(responders)]
            tasks = [task for group in per_responder for task in group]
            work = [task for group in per_responder for task in group[:2]]
            stopping = asyncio.ensure_future(stop.wait())
            watchers = [stopping, cancelled, connection.closing, *(c.closing for c in channels)]
            await asyncio.wait([*watchers, *tasks], return_when=asyncio.FIRST_COMPLETED)
            self._raise_if_broken(tasks, watchers[1:])

            with broker.map_amqp_errors(b):
                for channel, tag in consumers:
                    await channel.basic_cancel(tag)
            await asyncio.sleep(0)  # deliveries read before the Cancel-Ok reach the inbox
            for responder in responders:
                responder.drain()
            await self._drain(work, watchers[1:], responders)
        finally:
            for task in tasks:
                task.cancel()
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*tasks, *watchers, return_exceptions=True)
            await broker.close_quietly(connection)

    async def _drain(
        self,
        work: list[asyncio.Task[None]],
        watchers: list[asyncio.Future[Any]],
        responders: list[_Responder],
    ) -> None:
        """Handle what was delivered, publish every reply, wait for the confirms, send the acks."""
        try:
            async with asyncio.timeout(self.settings.drain_timeout):
                pending: set[asyncio.Future[Any]] = set(work)
                while pending:
                    _, pending = await asyncio.wait(
                        [*pending, *watchers], return_when=asyncio.FIRST_COMPLETED
                    )
                    pending &= set(work)
                    self._raise_if_broken(work, watchers)
        except TimeoutError:
            log.warning(
                "replies still unconfirmed after %.0f s: their requests stay unacked and will be "
                "delivered again",
                self.settings.drain_timeout,
            )
            return
        with broker.map_amqp_errors(self.settings.broker):
            for responder in responders:
                await responder.flush_acks()

    def _raise_if_broken(self, tasks: list[asyncio.Task[None]], watchers: list[asyncio.Future[Any]]) -> None:
        """Raise a task's error, or :class:`ConnectionLost` if the broker side went away."""
        for task in tasks:
            if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                if isinstance(exc, aiormq.exceptions.AMQPError | ConnectionError):
                    with broker.map_amqp_errors(self.settings.broker):
                        raise exc
                raise exc
        for watcher in watchers:
            if watcher.done():
                reason: object = None if watcher.cancelled() else watcher.exception() or watcher.result()
                raise ConnectionLost(
                    f"the emulator lost the broker at {self.settings.broker.safe_url} ({reason or 'closed'})"
                )


async def serve(
    settings: EmulatorSettings,
    stop: asyncio.Event,
    on_ready: Callable[[], None] | None = None,
    *,
    store: ProfileStore | None = None,
    counts: EmulatorCounts | None = None,
) -> EmulatorCounts:
    """Serve until ``stop`` is set, then drain; the counts. A lost broker raises a BrokerError.

    A caller that reconnects and calls again passes its own ``store`` (kept open, so an in-memory
    store's profiles survive) and ``counts`` (added to in place, also when this raises).
    """
    own_store = store is None
    if store is None:
        store = open_store(settings.store_path)
    server = _Server(settings, store, EmulatorCounts() if counts is None else counts)
    try:
        await server.run(stop, on_ready)
    finally:
        if own_store:
            store.close()
        else:
            store.flush()
    return server.counts


async def serve_until_stopped(
    settings: EmulatorSettings, stop: asyncio.Event, on_ready: Callable[[], None] | None = None
) -> EmulatorCounts:
    """:func:`serve`, connecting again (with growing pauses) whenever the broker goes away.

    The platform's job server outlives broker restarts, so the stand-in does too; the store and the
    counts carry over. Errors that waiting cannot mend (credentials, a missing queue) still raise.
    """
    counts = EmulatorCounts()
    store = open_store(settings.store_path)
    delay = 0.5
    try:
        while True:
            try:
                return await serve(settings, stop, on_ready, store=store, counts=counts)
            except (ConnectionLost, BrokerUnreachable) as exc:
                if stop.is_set():
                    return counts
                log.warning("emulator: %s; connecting again in %.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return counts
            delay = min(delay * 2, 5.0)
    finally:
        store.close()


def open_store(path: Path | None) -> ProfileStore:
    """The profile store of ``settings.store_path``; a file that cannot be used is an InputError."""
    try:
        return ProfileStore(path)
    except (sqlite3.Error, OSError) as exc:
        raise InputError(f"cannot open the profile store {path}: {exc}") from None
