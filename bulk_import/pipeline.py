"""One import run: file → messages → confirms, and replies → ledger → results file.

Reading and building run in worker threads a few batches ahead of publishing. The consumer runs
beside the publisher from the start, so a reply may arrive before its message's confirm. When the
connection drops, the run reconnects with backoff, publishes again what was not confirmed and
consumes again; replies the broker had delivered but not seen acked come again and count once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any, TypeVar

import aiormq
import orjson

from . import broker
from .batches import built_batches, key_frames
from .config import BrokerSettings, ImportOptions
from .consumer import ReplyConsumer
from .delivery import Tap
from .duplicates import Duplicates, find_duplicates
from .errors import (
    EXIT_INCOMPLETE,
    EXIT_OK,
    EXIT_ROWS_FAILED,
    BrokerError,
    BrokerUnreachable,
    BulkImportError,
    ConnectionLost,
    InputError,
    LocalError,
    QueueMissing,
)
from .frames import Wire, encode_messages
from .journal import Journal, journal_dir, run_started
from .lock import hold_run
from .messages import Answers, Batch
from .progress import Observer, Snapshot
from .protocols import Batched, Outgoing, protocol_for
from .publisher import Publisher, Returned
from .reader import Source, first_refused_cell, open_source
from .reconcile import ANSWERED, UNSENT, Ledger
from .relay import RelayedReplies
from .results import default_results_path, write_run_results

log = logging.getLogger(__name__)
T = TypeVar("T")
#: A worker's end of the socket to its coordinator.
Relay = tuple[asyncio.StreamReader, asyncio.StreamWriter]

RECONNECT_FIRST_DELAY_S = 0.5
RECONNECT_MAX_DELAY_S = 10.0
#: Seconds without a reply (at most; a third of ``--reply-timeout`` when that is shorter) before the
#: run asks the broker whether anything consumes the request queue, and says so when nothing does.
IDLE_CHECK_S = 10.0
#: Seconds that check may take (a dead link would hold it up for good).
CONSUMERS_CHECK_S = 5.0
#: A connection up this long is stable again: the next loss starts counting attempts from 1.
STABLE_S = 30.0


@dataclass(frozen=True)
class ImportSummary:
    """What a run did, for the user, for ``--summary`` and for monitoring."""

    run_id: str
    rows: int
    counts: dict[str, int]
    elapsed_s: float
    rows_per_s: float
    publish_rows_per_s: float
    results: Path
    exit_code: int
    journal: Path | None = None
    interrupted: bool = False
    reason: str = ""
    duplicate_replies: int = 0
    #: Replies of other runs seen in the shared result queue (each given back, never acked).
    foreign_replies: int = 0
    #: Those replies by the run id their feedback_id names (or "(no run id)").
    foreign_owners: dict[str, int] = field(default_factory=dict)
    #: How often they were delivered to this run in all (each went back at once or after a hold).
    foreign_deliveries: int = 0
    malformed_replies: int = 0
    reconnects: int = 0
    #: Rows sent again because their reply's error was one of ``--retry-errors`` (each time counted).
    retried: int = 0

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["results"] = str(self.results)
        doc["journal"] = str(self.journal) if self.journal else None
        return doc

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def summary_exit_code(counts: dict[str, int]) -> int:
    """4 when rows lack a final answer, 1 when some failed, else 0."""
    if counts.get("not_sent", 0) or counts.get("not_confirmed", 0) or counts.get("no_reply", 0):
        return EXIT_INCOMPLETE
    if counts.get("error", 0) or counts.get("rejected", 0):
        return EXIT_ROWS_FAILED
    return EXIT_OK


def sent_rate(counts: dict[str, int], elapsed: float) -> float:
    """Rows a second over the run, of the rows that went out (not the rejected or never sent)."""
    sent = sum(n for status, n in counts.items() if status not in UNSENT)
    return round(sent / elapsed, 1) if elapsed else 0.0


class Session:
    """The run's connection, with a channel each to publish and to consume.

    A worker of ``--workers`` only publishes; its coordinator only consumes.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        publishing: bool = True,
        consuming: bool = True,
        stop: asyncio.Event | None = None,
        queues: tuple[str, str] | None = None,
    ) -> None:
        self.settings = settings
        #: The request and the result queue it checks (or creates) on every connect.
        self.queues = queues or (settings.queue, settings.result_queue)
        self.stop = stop or asyncio.Event()
        #: Reconnect attempts in the current streak, and since when the connection has been up.
        self.attempts = 0
        self.up_since = time.monotonic()
        self.publishing, self.consuming = publishing, consuming
        self.connection: aiormq.Connection | None = None
        self.publish: aiormq.Channel | None = None
        self.consume: aiormq.Channel | None = None
        self.tap = Tap()
        self.reconnects = 0

    @property
    def lost(self) -> bool:
        if self.connection is None or self.connection.is_closed:
            return True
        channel = self.consume if self.consuming else self.publish
        return channel is None or channel.is_closed

    async def open(self) -> None:
        s = self.settings
        self.connection = await broker.connect(s, tap=self.tap)
        await broker.ensure_queues(self.connection, s, *self.queues)
        if self.publishing:
            self.publish = await broker.open_channel(self.connection, s, confirms=True)
            await broker.check_write(self.publish, s, self.stop)
        if self.consuming:
            self.consume = await broker.open_channel(self.connection, s, confirms=False)

    async def reopen(self, cause: Exception) -> None:
        """Connect again with growing pauses; :class:`BrokerUnreachable` when attempts run out.

        Attempts add up across reconnects that fail again soon (within :data:`STABLE_S`), so a
        connection that opens and drops at once is not retried for ever. A set ``stop`` ends it.
        """
        await broker.close_quietly(self.connection)
        now = time.monotonic()
        if now - self.up_since >= STABLE_S:
            self.attempts = 0
        limit = self.settings.reconnect_attempts
        delay = min(RECONNECT_FIRST_DELAY_S * 2**self.attempts, RECONNECT_MAX_DELAY_S)
        while self.attempts < limit:
            self.attempts += 1
            log.warning(
                "connection lost (%s); reconnecting, attempt %d of %d in %.1fs",
                cause,
                self.attempts,
                limit,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
            if self.stop.is_set():
                raise BrokerUnreachable(f"stopped while reconnecting: {cause}")
            try:
                await self.open()
            except BrokerUnreachable as exc:
                cause = exc
                delay = min(delay * 2, RECONNECT_MAX_DELAY_S)
                continue
            self.reconnects += 1
            self.up_since = time.monotonic()
            log.warning("reconnected to %s", self.settings.safe_url)
            return
        raise BrokerUnreachable(f"gave up after {limit} reconnect attempts: {cause}")

    async def close(self) -> None:
        await broker.close_quietly(self.connection)


@dataclass
class _Prepared:
    """A batch ready to send: its rows still unanswered, as messages framed for ``wire``."""

    end_row: int
    rejected_rows: list[int]
    outgoing: Outgoing
    messages: list[bytes]
    wire: Wire


@dataclass
class _Clock:
    started: float = field(default_factory=time.monotonic)
    first_publish: float | None = None
    last_confirm: float | None = None
    #: Rows whose message the broker confirmed (a batch message confirms all its rows).
    rows_confirmed: int = 0


class Run:
    """Everything one run holds; :meth:`execute` is the whole of it."""

    def __init__(
        self,
        source: Source,
        options: ImportOptions,
        settings: BrokerSettings,
        results_path: Path,
        stop: asyncio.Event,
        observer: Observer,
        relay: Relay | None = None,
    ) -> None:
        self.source = source
        self.observer = observer
        self.options = options
        self.settings = settings
        self.results_path = results_path
        self.stop = stop
        self.relay = relay
        self.protocol = protocol_for(options, settings)
        queues = (self.protocol.request_queue, self.protocol.result_queue)
        self.session = Session(settings, consuming=relay is None, stop=stop, queues=queues)
        self.ledger = Ledger()
        self.clock = _Clock()
        self.rows_read = 0
        #: Rows not sent because another row of their key is (``--on-duplicate-key``).
        self.duplicates = Duplicates.none()
        #: Rows whose latest reply carries an error of ``--retry-errors``, and the rows a retry
        #: round sends (None outside one: every row not answered goes).
        self.retryable: set[int] = set()
        #: When the last "nothing consumes the request queue" check was made (the reply clock then),
        #: and the task making it.
        self.idle_checked_at: float | None = None
        self.consumers_check: asyncio.Task[None] | None = None
        self.resending: set[int] | None = None
        self.retried = 0
        self.journal: Journal | None = None
        self.consumer: ReplyConsumer | RelayedReplies | None = None
        self.publisher: Publisher | None = None
        self.failure: str = ""
        #: A refusal by the broker (permissions, a queue's arguments): stop, never reconnect.
        self.refused: BrokerError | None = None
        #: What stops the run at once, whatever it waits on: a journal that cannot be written, a
        #: request or result queue deleted under the run.
        self.halted: BaseException | None = None
        #: Whether the drain time ran out after a stop and the waiting was cut short.
        self.cut = False
        #: Why the input could not be read to its end (the rows before it were sent).
        self.unreadable: InputError | None = None
        self.replied = asyncio.Event()

    def _identity(self) -> dict[str, Any]:
        stat = self.source.path.stat()
        o = self.options
        return {
            "input": str(self.source.path.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "account_id": o.account_id,
            "db_id": o.db_id,
            "matching": o.matching,
            "key": o.key,
            "shard": list(o.shard) if o.shard else None,
            "rename": dict(o.rename),
            "exclude": list(o.exclude),
            # Everything else that shapes a message or how the file is read.
            "update_only": o.update_only,
            "skip_triggers": o.skip_triggers,
            "resource_id": o.resource_id,
            "nulls": o.nulls,
            "types": dict(o.types),
            "delimiter": o.delimiter,
            "encoding": o.encoding,
            "null_values": list(o.null_values),
            "file_format": o.file_format,
            "via": o.via,
            "mode": o.mode,
            "detect_geo": o.detect_geo,
            "on_duplicate_key": o.on_duplicate_key,
            "date_format": o.date_format,
            "datetime_format": o.datetime_format,
        }

    async def execute(self) -> ImportSummary:
        path = journal_dir(self.results_path)
        o = self.options
        # A worker of --workers runs under the lock its coordinator took and passed on to it.
        held = (
            hold_run(self.results_path, resume=o.resume, restart=o.restart, workers=o.workers)
            if o.shard is None
            else contextlib.nullcontext()
        )
        with held:
            Journal.check(path, resume=o.resume)
            self.duplicates = await asyncio.get_running_loop().run_in_executor(None, self._find_duplicates)
            try:
                await self.session.open()
                return await self._run()
            finally:
                await self.session.close()

    def _find_duplicates(self) -> Duplicates:
        """Read the whole file for keys on more than one row, before anything is sent."""
        return find_duplicates(self.source.path, self.options, partial(key_frames, self.source, self.options))

    def _reopen_retryable(self, journal: Journal) -> None:
        """Resumed with ``--retry-errors``: rows an earlier attempt ended with those codes go again."""
        codes = self.options.retry_errors
        if not (self.options.resume and codes):
            return
        reopened = self.ledger.reopen(journal.rows_last_answered_with(codes))
        if reopened:
            shown = ", ".join(map(str, sorted(codes)))
            log.info("resuming: %d rows answered with error %s are sent again", reopened, shown)

    def _skip_duplicates(self) -> None:
        rows = self.duplicates.rows
        if self.options.shard is not None:
            k, n = self.options.shard
            rows = rows.filter(rows % n == k)
        self.ledger.skip(rows.to_list())
        if len(rows):
            which = self.options.on_duplicate_key
            log.info(
                "%d rows have a key a %s row of the file has: only that row is sent, they are "
                "skipped_duplicate (--on-duplicate-key %s)",
                len(rows),
                "later" if which == "last" else "earlier",
                which,
            )

    async def _run(self) -> ImportSummary:
        path = journal_dir(self.results_path)
        journal = self.journal = Journal.open(
            path, self._identity(), resume=self.options.resume, run_id=self.options.run_id
        )
        # Rows an earlier attempt may have sent: their late replies are answers too.
        self.ledger.sent_before = journal.sent_before
        try:
            self._restore(journal)
            self._reopen_retryable(journal)
            self._skip_duplicates()
            if self.options.resume:
                self._warn_if_expired(journal)
            expand = self.protocol.expand
            self.publisher = Publisher(
                self.protocol.request_queue,
                window=self.options.window,
                on_confirmed=lambda tokens: self._on_confirmed(expand(tokens)),
                on_failed=lambda tokens: self.ledger.fail(expand(tokens)),
                nack_retries=self.options.nack_retries,
                done=self.ledger.is_answered,
                on_returned=self._on_returned,
            )
            if self.relay is None:
                self.consumer = ReplyConsumer(
                    journal.run_id,
                    self.protocol.result_queue,
                    read=self.protocol.read,
                    on_replies=self._on_replies,
                    before_ack=journal.sync,
                    on_failure=self._halt,
                )
            else:
                self.consumer = RelayedReplies(
                    *self.relay,
                    journal.run_id,
                    on_replies=self._on_replies,
                    before_ack=journal.sync,
                    on_closed=self.stop.set,
                )
            try:
                with broker.map_amqp_errors(self.settings):
                    await self._attach()
            except BrokerError:
                if not self.options.resume:
                    journal.remove()  # refused before anything was sent: nothing to resume
                raise
            # The broker took the run: its first line says what it is.
            log.info("%s", self._start_line(journal.run_id))
            consuming = asyncio.create_task(self.consumer.run())
            ticking = asyncio.create_task(self._tick())
            work = asyncio.ensure_future(self._publish_and_wait())
            cutoff = asyncio.create_task(self._cut_after_drain(work))
            try:
                await work
            except asyncio.CancelledError:
                if not self.cut:
                    raise
                self.failure = f"stopped: the drain time ({self.options.drain_timeout:.0f}s) ran out"
                log.warning("%s", self.failure)
            except BrokerUnreachable as exc:
                self.failure = str(exc)
                log.error("%s", exc)
            except BrokerError as exc:
                self.failure = str(exc)
                self.refused = exc
            finally:
                cutoff.cancel()
                ticking.cancel()
                checking = [self.consumers_check] if self.consumers_check is not None else []
                for task in checking:
                    task.cancel()
                await asyncio.gather(ticking, cutoff, *checking, return_exceptions=True)
                self.observer.close()
                self.consumer.stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(consuming), 2 if self.cut else 10)
                consuming.cancel()
                await asyncio.gather(consuming, return_exceptions=True)
                await self._flush_acks()
            if self.halted is not None:
                raise _local_error(self.halted)
            nothing_sent = not self.ledger.answered and not self.publisher.confirmed
            if self.refused is not None and nothing_sent and not self.options.resume:
                journal.remove()  # nothing went out: nothing to resume
                raise self.refused
            if (self.stop.is_set() or self.failure) and self.unreadable is None:
                await self._read_rest()
            summary = self._finish(journal, keep_journal=self.unreadable is not None)
            stopped_by = self.refused or self.unreadable
            if stopped_by is not None:
                summary = replace(summary, exit_code=stopped_by.exit_code)
            return summary
        finally:
            journal.close()

    def _start_line(self, run_id: str) -> str:
        """What the run is, in the first line of its log: enough to tell one night's job from another."""
        o, s = self.options, self.settings
        where = f"to {self.protocol.request_queue} at {s.safe_url}"
        if o.via == "calls":
            return f"run {run_id}: the calls of {self.source.path}, account {o.account_id}, {where}"
        key = f"{o.matching} {o.field_name}" if o.field_name else o.matching
        return (
            f"run {run_id}{' (resumed)' if o.resume else ''}: {self.source.path} into db {o.db_id}, "
            f"account {o.account_id}, matching {key} (column {o.key}), --via {o.via}, {where}"
        )

    def _warn_if_expired(self, journal: Journal) -> None:
        """Say before sending that replies the queue no longer keeps mean imports done twice."""
        started = run_started(journal.run_id)
        if started is None:
            started = (journal.path / "run.json").stat().st_mtime
        age = time.time() - started
        ttl = self.settings.result_ttl
        if not ttl or age <= ttl:
            return
        triggers = "" if self.options.skip_triggers else " and their triggers fire again"
        log.warning(
            "the run being resumed started %.1f hours ago, longer than the result queue keeps a reply "
            "(%.1f hours, --result-ttl): replies to what it sent have expired, so every row without a "
            "recorded reply (%d rows have one) is sent again; profiles the platform already took from "
            "it are imported a second time%s",
            age / 3600,
            ttl / 3600,
            self.ledger.answered,
            triggers,
        )

    async def _publish_and_wait(self) -> None:
        try:
            await self._publish_all()
        except InputError as exc:
            # The rest of the file cannot be read: what was sent still gets its replies and results.
            self.unreadable = exc
            self.failure = str(exc)
            log.error(
                "%s; no more rows are sent, waiting for the replies to the %d sent", exc, self.ledger.awaiting
            )
            publisher = self.publisher
            assert publisher is not None
            await self._guarded(publisher.flush)
        await self._await_replies()
        if self.unreadable is None:
            await self._retry()

    async def _retry(self) -> None:
        """Send again, after a growing pause, the rows answered with an error of ``--retry-errors``."""
        o = self.options
        codes = ", ".join(map(str, sorted(o.retry_errors)))
        for attempt in range(1, o.retry_attempts + 1):
            if not self.retryable or self.stop.is_set() or self.failure or self.halted is not None:
                return
            pause = o.retry_backoff * 2 ** (attempt - 1)
            log.info(
                "%d rows were answered with error %s: sending them again in %.0fs (retry %d of %d)",
                len(self.retryable),
                codes,
                pause,
                attempt,
                o.retry_attempts,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), pause)
            if self.stop.is_set():
                return
            rows, self.retryable = self.retryable, set()
            self.retried += self.ledger.reopen(sorted(rows))
            self.resending = rows
            try:
                await self._publish_all()
                await self._await_replies()
            finally:
                self.resending = None

    async def _cut_after_drain(self, work: asyncio.Future[None]) -> None:
        """Once stopped, give what is in flight ``--drain-timeout``, whatever the run is waiting on.

        (A blocked connection, a reconnect, replies that do not come: each would wait longer.)
        """
        await self.stop.wait()
        await asyncio.sleep(self.options.drain_timeout)
        if not work.done():
            self.cut = True
            work.cancel()

    async def _tick(self) -> None:
        """Tell the observer how far the run is, twice a second."""
        ledger, publisher, source = self.ledger, self.publisher, self.source
        assert publisher is not None
        known = source.total_rows
        while True:
            self.observer.update(
                Snapshot(
                    rows_read=self.rows_read,
                    total_rows=known if known is not None else source.estimated_rows(),
                    sent=ledger.awaiting + ledger.answered,
                    confirmed=publisher.confirmed,
                    answered=ledger.answered + ledger.rejected + ledger.skipped,
                    elapsed_s=time.monotonic() - self.clock.started,
                )
            )
            await asyncio.sleep(0.5)

    def _restore(self, journal: Journal) -> None:
        answered = journal.answered_rows()
        if len(answered):
            state = self.ledger.state
            top = int(answered.max())  # type: ignore[arg-type]
            state.extend(bytes(top + 1 - len(state)))
            for row in answered.to_list():
                if state[row] != ANSWERED:
                    state[row] = ANSWERED
                    self.ledger.answered += 1
            log.info("resuming run %s: %d rows already answered", journal.run_id, self.ledger.answered)

    async def _attach(self) -> None:
        s = self.session
        assert self.publisher and self.consumer and s.publish
        self.publisher.attach(s.publish)
        if isinstance(self.consumer, ReplyConsumer):
            assert s.consume
            await self.consumer.attach(s.tap, s.consume)

    async def _guarded(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run a broker operation, reconnecting and retrying it while the connection drops."""
        while True:
            try:
                with broker.map_amqp_errors(self.settings):
                    return await op()
            except ConnectionLost as exc:
                await self._reconnect(exc)

    async def _reconnect(self, cause: Exception) -> None:
        await self.session.reopen(cause)
        with broker.map_amqp_errors(self.settings):
            await self._attach()

    def _on_confirmed(self, rows: list[int]) -> None:
        self.ledger.confirm(rows)
        self.clock.rows_confirmed += len(rows)
        self.clock.last_confirm = time.monotonic()

    def _halt(self, exc: BaseException) -> None:
        """Stop sending and waiting at once (the first cause is the one reported)."""
        if self.halted is None:
            self.halted = exc
        self.replied.set()

    def _on_returned(self, returned: Returned) -> None:
        """A message came back unrouted: the request queue is gone, and so is everything sent now."""
        self._halt(
            QueueMissing(
                f"the broker returned a message sent to {self.protocol.request_queue!r} "
                f"({returned.reply_code} {returned.reply_text}): the queue no longer exists at "
                f"{self.settings.safe_url}; what was sent is in the journal, "
                "--resume goes on once the queue is back"
            )
        )

    def _on_replies(self, answers: Answers) -> None:
        assert self.journal is not None
        taken = self.ledger.answer_all(answers.rows)
        if taken is not None:
            if not taken:
                return
            answers = answers.only(taken)
        self.journal.record_replies(answers)
        self.replied.set()
        if codes := self.options.retry_errors:
            retryable = self.retryable
            retryable.update(
                row for row, error in zip(answers.rows, answers.error, strict=True) if error in codes
            )

    async def _batches(self) -> AsyncIterator[_Prepared]:
        """Prepared batches, read and built in worker threads ahead of the caller."""
        assert self.journal is not None
        journal, ledger, publisher, protocol = self.journal, self.ledger, self.publisher, self.protocol
        run_id = journal.run_id
        assert publisher is not None

        def prepare(batches: Iterator[Batch]) -> _Prepared | None:
            batch = next(batches, None)
            if batch is None:
                return None
            journal.record_keys(batch.first_row, batch.keys)
            rows, bodies, ids = batch.rows, batch.bodies, batch.ids
            keep: list[int] | None = None
            if (resending := self.resending) is not None:
                keep = [i for i, r in enumerate(rows) if r in resending]
            elif ledger.any_answered(rows):
                keep = [i for i, r in enumerate(rows) if not ledger.is_answered(r)]
            if keep is not None:
                rows, bodies = [rows[i] for i in keep], [bodies[i] for i in keep]
                ids = [ids[i] for i in keep] if ids else ids
            wire = publisher.wire
            assert wire is not None
            out = protocol.messages(rows, bodies, ids, run_id)
            messages = encode_messages(wire, out.bodies, out.ids)
            # Framed, the bodies and ids are in the messages: holding them too would double the batch.
            return _Prepared(
                batch.end_row, batch.rejected_rows, replace(out, bodies=[], ids=[]), messages, wire
            )

        # The next batch is prepared while this one is sent: building more ahead only holds memory.
        batches = built_batches(
            self.source, self.options, run_id, lookahead=0, build=protocol.build, skipped=self.duplicates
        )
        loop = asyncio.get_running_loop()
        ahead = loop.run_in_executor(None, prepare, batches)
        try:
            while (prepared := await ahead) is not None:
                ahead = loop.run_in_executor(None, prepare, batches)
                yield prepared
        finally:
            # Let the batch being built finish, then stop the builders.
            await asyncio.gather(ahead, return_exceptions=True)
            await loop.run_in_executor(None, batches.close)

    async def _publish_all(self) -> None:
        publisher = self.publisher
        assert publisher is not None
        limit = self.options.pending_limit
        async for p in self._batches():
            self.rows_read = p.end_row
            self.ledger.reject(p.rejected_rows)
            out = p.outgoing
            per_message = 1 if out.counts is None else self.protocol_batch_rows
            step = max(1, min(limit, 1024) // per_message) if limit else max(1, len(out.tokens))
            for start in range(0, len(out.tokens), step):
                end = start + step
                rows = out.rows(start, end)
                if limit and not await self._wait_for_replies(
                    partial(self._room_for, len(rows), limit), draining=False
                ):
                    break
                tokens, messages = out.tokens[start:end], p.messages[start:end]
                # The publisher keeps what it may send again; the batch lets go of what went out.
                p.messages[start:end] = repeat(b"", len(messages))
                self.ledger.send(rows)
                if self.clock.first_publish is None:
                    self.clock.first_publish = time.monotonic()
                await self._guarded(lambda t=tokens, m=messages, w=p.wire: publisher.publish(t, m, w))  # type: ignore[misc]
                if self.stop.is_set() or self.halted:
                    break
            if self.stop.is_set() or self.failure or self.halted:
                break
        if self.stop.is_set():
            log.warning("stopping: no more rows are sent; waiting for what is in flight")
        if self.halted is not None:
            return
        drain = self.options.drain_timeout if self.stop.is_set() else None
        try:
            async with asyncio.timeout(drain):
                await self._guarded(publisher.flush)
        except TimeoutError:
            log.warning("%d messages still unconfirmed after the drain time", publisher.in_flight)

    def _room_for(self, rows: int, limit: int) -> bool:
        """Room under ``--max-pending``; a batch larger than it goes out alone."""
        awaiting = self.ledger.awaiting
        return awaiting + rows <= limit or not awaiting

    @property
    def protocol_batch_rows(self) -> int:
        return self.protocol.batch_size if isinstance(self.protocol, Batched) else 1

    async def _await_replies(self) -> None:
        await self._wait_for_replies(lambda: self.ledger.awaiting == 0, draining=True)

    async def _wait_for_replies(self, enough: Callable[[], bool], *, draining: bool) -> bool:
        """Wait until ``enough()``; False when stopped, or when no reply came for ``reply_timeout``.

        While waiting, a lost connection is reconnected, and what the publisher holds unsent (nacked,
        or unconfirmed before a reconnect) goes out: those rows are among the ones waited for.
        """
        consumer, publisher = self.consumer, self.publisher
        assert consumer is not None and publisher is not None
        since = time.monotonic()
        deadline = float("inf")
        while not enough():
            if self.halted is not None:
                return False
            now = time.monotonic()
            if self.stop.is_set():
                if not draining:
                    return False
                deadline = min(deadline, now + self.options.drain_timeout)
                if now >= deadline:
                    log.warning("drain time over: %d rows still without a reply", self.ledger.awaiting)
                    return False
            quiet_since = max(consumer.last_reply_at, since)
            if now - quiet_since > min(IDLE_CHECK_S, self.options.reply_timeout / 3):
                self._check_consumers(quiet_since)
            if now - quiet_since > self.options.reply_timeout:
                self.failure = f"no reply came for {self.options.reply_timeout:.0f}s"
                log.warning(
                    "%s: %d rows waiting are left no_reply%s",
                    self.failure,
                    self.ledger.awaiting,
                    "" if draining else ", and no more rows are sent",
                )
                return False
            if self.session.lost:
                await self._reconnect(ConnectionLost("the connection closed"))
                since = time.monotonic()
            if publisher.unsent:
                await self._guarded(publisher.send_unsent)
            publisher.note_blocked()  # a block that came after the last write is said here
            self.replied.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.replied.wait(), 0.05)
        return True

    def _check_consumers(self, quiet_since: float) -> None:
        """Once a quiet spell, in a task of its own (a dead link must not hold the waiting up):
        when the request queue has no consumer, say so long before the reply timeout."""
        running = self.consumers_check is not None and not self.consumers_check.done()
        if running or self.idle_checked_at == quiet_since or self.session.lost:
            return
        self.idle_checked_at = quiet_since
        self.consumers_check = asyncio.create_task(self._say_if_nothing_consumes(quiet_since))

    async def _say_if_nothing_consumes(self, quiet_since: float) -> None:
        connection, queue = self.session.connection, self.protocol.request_queue
        if connection is None:
            return
        try:
            async with asyncio.timeout(CONSUMERS_CHECK_S):
                consumers = await broker.consumer_count(connection, self.settings, queue)
        except (TimeoutError, BrokerError, aiormq.exceptions.AMQPError, OSError):
            return
        if consumers == 0:
            log.warning(
                "no reply for %.0fs and nothing consumes %r (0 consumers): is the platform's job server "
                "running on this vhost? Rows still waiting become no_reply after %.0fs without a reply",
                time.monotonic() - quiet_since,
                queue,
                self.options.reply_timeout,
            )

    async def _flush_acks(self) -> None:
        if self.consumer is None:
            return
        try:
            with broker.map_amqp_errors(self.settings):
                async with asyncio.timeout(5):
                    await self.consumer.flush_acks(final=True)
        except (ConnectionLost, BrokerUnreachable):
            pass  # unacked replies are delivered again and count once; foreign ones go back on close

    async def _read_rest(self) -> None:
        """Record the keys of rows never read, so the results file still has every row."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._record_remaining_keys)

    def _record_remaining_keys(self) -> None:
        assert self.journal is not None
        rest = built_batches(
            self.source,
            self.options,
            self.journal.run_id,
            self.rows_read,
            build=self.protocol.build,
            skipped=self.duplicates,
        )
        for batch in rest:
            self.journal.record_keys(batch.first_row, batch.keys)
            self.ledger.reject(batch.rejected_rows)
            self.rows_read = batch.end_row

    def _finish(self, journal: Journal, *, keep_journal: bool = False) -> ImportSummary:
        if self.ledger.unexpected:
            log.warning(
                "%d replies named rows this run has not sent (the first: row %s); they were ignored",
                self.ledger.unexpected,
                self.ledger.first_unexpected,
            )
        journal.sync(force=True)
        rows = self.rows_read
        counts = write_run_results(
            journal, self.ledger, rows, self.results_path, self.options.shard, self.protocol.columns
        )
        exit_code = summary_exit_code(counts)
        incomplete = exit_code == EXIT_INCOMPLETE or keep_journal
        if not incomplete:
            journal.remove()
        elapsed = time.monotonic() - self.clock.started
        clock = self.clock
        publish_s = (
            (clock.last_confirm - clock.first_publish) if clock.first_publish and clock.last_confirm else 0.0
        )
        confirmed = clock.rows_confirmed
        consumer = self.consumer
        return ImportSummary(
            run_id=journal.run_id,
            rows=rows,
            counts=counts,
            elapsed_s=round(elapsed, 3),
            rows_per_s=sent_rate(counts, elapsed),
            publish_rows_per_s=round(confirmed / publish_s, 1) if publish_s else 0.0,
            results=self.results_path,
            exit_code=exit_code,
            journal=journal.path if incomplete else None,
            interrupted=self.stop.is_set(),
            reason=self.failure,
            duplicate_replies=self.ledger.duplicates,
            foreign_replies=consumer.counts.foreign if consumer else 0,
            foreign_owners=dict(consumer.strangers.owners.most_common())
            if isinstance(consumer, ReplyConsumer)
            else {},
            foreign_deliveries=consumer.strangers.deliveries if isinstance(consumer, ReplyConsumer) else 0,
            malformed_replies=consumer.counts.malformed if consumer else 0,
            reconnects=self.session.reconnects,
            retried=self.retried,
        )


def _local_error(exc: BaseException) -> BulkImportError:
    """What failed on this machine, as the error the user sees (exit 4: --resume goes on)."""
    if isinstance(exc, BulkImportError):
        return exc
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return LocalError(f"cannot write the run's journal{where}: {exc.strerror or exc}; stopped at once")
    raise exc


def open_checked(path: Path, options: ImportOptions) -> Source:
    """The input, readable and holding the key column: every input error before connecting."""
    original = {new: old for old, new in options.rename.items()}
    source = open_source(
        path,
        options.file_format,
        batch_rows=options.batch_rows,
        types={original.get(c, c): t for c, t in options.types.items()},
        delimiter=options.delimiter,
        encoding=options.encoding,
        # Under --nulls skip a quoted empty cell ("") is no value either: it would blank the field.
        null_values=options.null_values + (("",) if options.nulls == "skip" else ()),
        formats={
            name: fmt
            for name, fmt in (("date", options.date_format), ("datetime", options.datetime_format))
            if fmt
        },
    )
    check_columns(source, options)
    if options.strict and (refused := first_refused_cell(source)) is not None:
        row, reason = refused
        raise InputError(f"{path}: row {row}: {reason}; nothing was sent (--strict)")
    return source


def check_columns(source: Source, options: ImportOptions) -> None:
    """The columns the options name exist (by their names after ``--rename``), once each."""
    listed = f"(columns: {', '.join(source.columns[:20])})"
    for name in options.rename:
        if name not in source.columns:
            raise InputError(f"{source.path}: no column {name!r} to rename {listed}")
    names = [options.rename.get(c, c) for c in source.columns]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"{source.path}: after --rename, more than one column is named {', '.join(twice)}")
    for name in options.exclude:
        if name not in names:
            raise InputError(f"{source.path}: no column {name!r} to exclude {listed}")
    for name in options.types:
        if name not in names:
            raise InputError(f"{source.path}: no column {name!r} for --type {listed}")
    if options.key in options.exclude:
        raise InputError(f"--exclude {options.key}: the key column is always sent")
    if options.key not in names:
        what = "--field" if options.matching == "custom" and not options.key_column else "key column"
        raise InputError(
            f"{source.path}: no column {options.key!r} for the {what} {listed}{_separator_hint(source)}"
        )


def _separator_hint(source: Source) -> str:
    """A CSV read as one column whose name holds another separator: say which to pass."""
    if source.file_format != "csv" or len(source.columns) != 1:
        return ""
    for sep, shown in ((";", "';'"), ("\t", "'\\t'"), ("|", "'|'")):
        if sep in source.columns[0] and sep != source.delimiter:
            return f"; the header looks {shown}-separated: try --delimiter {shown}"
    return ""


def open_input(path: Path, options: ImportOptions) -> Source:
    """The run's input: a file of API calls, or the import file with its columns checked."""
    return open_source(path, "jsonl") if options.via == "calls" else open_checked(path, options)


def results_path_for(path: Path, options: ImportOptions) -> Path:
    return options.results_path or default_results_path(path)


async def run_in_process(
    path: Path,
    options: ImportOptions,
    settings: BrokerSettings,
    *,
    stop: asyncio.Event,
    observer: Observer,
    relay: Relay | None = None,
) -> ImportSummary:
    """The whole run in this process (a worker of ``--workers`` gets its replies over ``relay``)."""
    source = open_input(path, options)
    results_path = results_path_for(path, options)
    return await Run(source, options, settings, results_path, stop, observer, relay).execute()
