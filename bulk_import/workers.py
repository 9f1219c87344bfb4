"""``--workers N``: N processes share the rows, each with its own connection, into one results file.

For when the client is the limit (a remote broker, TLS). Each worker is a ``bulk-import worker``
process that reads the file and sends the rows whose number modulo N is its own, with its own
journal and a results part (Parquet) in ``<results>.workers/``. This process, the coordinator,
consumes the replies and relays each to its worker (:mod:`.relay`), adds their progress up, passes
signals on, and joins the parts into the results file. ``--resume`` resumes each unfinished worker
from its journal and keeps the parts already finished (when every part is, it only joins them).

The coordinator takes the results file's lock (:mod:`.lock`) before anything else and holds it to
the end; each worker inherits it rather than taking it, so the lock is free only once the
coordinator and every worker it started are gone. The workers' folder is the same unfinished run
as a one-process journal (:func:`~.lock.check_recorded`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from . import broker, logs
from .config import BrokerSettings, ImportOptions
from .errors import EXIT_INCOMPLETE, BrokerUnreachable, IncompleteRun, InputError
from .journal import journal_dir, new_run_id, recorded_workers, workers_dir
from .lock import RunLock, hold_run
from .pipeline import ImportSummary, Session, run_in_process, sent_rate, summary_exit_code
from .progress import Observer, Snapshot
from .reader import Source
from .relay import (
    FINAL,
    PROGRESS,
    SETTLED,
    SPEC,
    RelayProgress,
    ShardRouter,
    decode_settled,
    frame,
    read_frame,
)
from .results import merge_parts

log = logging.getLogger(__name__)


def part_path(folder: Path, shard: int, workers: int) -> Path:
    return folder / f"part-{shard}-of-{workers}.parquet"


@dataclass
class _Worker:
    shard: int
    process: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    progress: Snapshot | None = None
    summary: dict[str, Any] | None = None


async def run_workers(
    source: Source,
    options: ImportOptions,
    settings: BrokerSettings,
    results_path: Path,
    stop: asyncio.Event,
    observer: Observer,
) -> ImportSummary:
    """Run the import as ``options.workers`` worker processes and coordinate them."""
    o = options
    with hold_run(results_path, resume=o.resume, restart=o.restart, workers=o.workers) as lock:
        return await _coordinate(source, options, settings, results_path, stop, observer, lock)


async def _coordinate(
    source: Source,
    options: ImportOptions,
    settings: BrokerSettings,
    results_path: Path,
    stop: asyncio.Event,
    observer: Observer,
    lock: RunLock,
) -> ImportSummary:
    n = options.workers
    folder = workers_dir(results_path)
    parts = [part_path(folder, k, n) for k in range(n)]
    run_id = _prepare(folder, parts, options)
    todo = [k for k in range(n) if not (options.resume and _finished(parts[k]))]
    started = time.monotonic()
    if not todo:
        observer.close()
        log.info("every part of run %s is finished: joining them", run_id)
        return _finish([], parts, results_path, run_id, None, "", stop.is_set(), started)
    session = Session(settings, publishing=False, stop=stop)
    await session.open()
    if not folder.exists():  # only once the broker is there: nothing to resume before
        folder.mkdir(parents=True)
        _write_run(folder, run_id, n)
    workers: list[_Worker] = []
    try:
        writers: list[asyncio.StreamWriter | None] = [None] * n
        # Bounded, so that a shared result queue full of other runs' replies is not taken in at once.
        router = ShardRouter(run_id, settings.result_queue, writers)
        router.finished.update(k for k in range(n) if k not in todo)
        for k in todo:
            spec = dataclasses.replace(
                options,
                workers=1,
                shard=(k, n),
                run_id=run_id,
                results_path=parts[k],
                summary_path=None,
                resume=options.resume and journal_dir(parts[k]).exists(),
                restart=False,
            )
            workers.append(await _spawn(source.path, spec, settings, lock))
            writers[k] = workers[-1].writer
        log.info("run %s: %d workers, replies relayed to each", run_id, len(workers))
        assert session.consume
        await router.attach(session.tap, session.consume)
        consuming = asyncio.create_task(router.run())
        consuming.add_done_callback(_report_end)
        listening = [asyncio.create_task(_listen(w, router)) for w in workers]
        failure = await _supervise(workers, session, router, stop, observer, source.total_rows, started)
        await asyncio.gather(*listening, return_exceptions=True)
        router.stop()
        # The workers are done: what is left to ack or pass on must not hold the run up.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(consuming), 10)
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
        with contextlib.suppress(Exception), broker.map_amqp_errors(settings):
            async with asyncio.timeout(10):
                await router.flush_acks(final=True)
    finally:
        observer.close()
        for w in workers:
            if w.process.returncode is None:
                w.process.kill()
                await w.process.wait()
        await session.close()
    return _finish(workers, parts, results_path, run_id, router, failure, stop.is_set(), started)


def _report_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("consuming replies stopped: %r", task.exception())


def _prepare(folder: Path, parts: list[Path], options: ImportOptions) -> str:
    """Check the folder of parts against --resume (:func:`check_recorded` checked the rest, and did
    --restart); the run id to use."""
    if not options.resume:
        return options.run_id or new_run_id()
    if not folder.exists():
        raise InputError(f"nothing to resume: no workers' journals at {folder}")
    recorded = recorded_workers(folder)
    others = {p.name for p in folder.glob("part-*")} - {p.name for p in parts}
    others -= {journal_dir(p).name for p in parts}
    if others or recorded not in (None, len(parts)):
        ran = f" ({recorded})" if recorded else ""
        raise InputError(
            f"cannot resume: {folder} holds a run with another number of --workers{ran}: "
            f"pass --resume --workers {recorded or 'N'}"
        )
    for meta in [folder / "run.json", *(journal_dir(p) / "run.json" for p in parts)]:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return str(orjson.loads(meta.read_bytes())["run_id"])
    if all(_finished(p) for p in parts):
        return ""
    raise InputError(f"nothing to resume: no workers' journals at {folder}")


def _write_run(folder: Path, run_id: str, workers: int) -> None:
    """What a resume needs to know before any worker has a journal: the run id and the workers."""
    meta = folder / "run.json"
    tmp = meta.with_name(meta.name + ".tmp")
    tmp.write_bytes(orjson.dumps({"run_id": run_id, "workers": workers}))
    os.replace(tmp, meta)


def _finished(part: Path) -> bool:
    return part.exists() and not journal_dir(part).exists()


async def _spawn(path: Path, options: ImportOptions, settings: BrokerSettings, lock: RunLock) -> _Worker:
    """Start ``bulk-import worker`` on a socket pair and send it what to import.

    A session of its own: a terminal's Ctrl-C reaches only the coordinator, which passes one
    SIGTERM on per signal it gets. It inherits the results file's lock, and is named in it.
    """
    assert options.shard is not None
    ours, theirs = socket.socketpair()
    level = logging.getLogger().getEffectiveLevel()
    name = f"worker {options.shard[0] + 1}/{options.shard[1]}"
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bulk_import",
            "worker",
            "--relay-fd",
            str(theirs.fileno()),
            "--log-level",
            str(level),
            "--name",
            name,
            "--log-format",
            logs.current_format(),
            pass_fds=(theirs.fileno(), lock.fd),
            start_new_session=True,
        )
    finally:
        theirs.close()
    lock.add(process.pid)
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    writer.write(frame(SPEC, encode_spec(path, options, settings)))
    return _Worker(options.shard[0], process, reader, writer)


def encode_spec(path: Path, options: ImportOptions, settings: BrokerSettings) -> bytes:
    """What a worker is to import, for its ``S`` frame (the socket keeps the password off argv)."""
    # The coordinator has read the whole file for --strict already.
    doc = dataclasses.asdict(dataclasses.replace(options, strict=False))
    for name in ("results_path", "summary_path"):
        doc[name] = str(doc[name]) if doc[name] is not None else None
    doc["retry_errors"] = sorted(doc["retry_errors"])
    return orjson.dumps({"path": str(path), "options": doc, "settings": dataclasses.asdict(settings)})


def decode_spec(payload: bytes) -> tuple[Path, ImportOptions, BrokerSettings]:
    """What a worker is to import, from its coordinator's ``S`` frame."""
    spec = orjson.loads(payload)
    doc = spec["options"]
    for name in ("results_path", "summary_path"):
        doc[name] = Path(doc[name]) if doc[name] is not None else None
    doc["shard"] = tuple(doc["shard"]) if doc["shard"] is not None else None
    doc["exclude"] = tuple(doc["exclude"])
    doc["null_values"] = tuple(doc["null_values"])
    doc["retry_errors"] = frozenset(doc["retry_errors"])
    return Path(spec["path"]), ImportOptions(**doc), BrokerSettings(**spec["settings"])


async def _listen(worker: _Worker, router: ShardRouter) -> None:
    """Take a worker's settlements, progress and summary until it closes its end."""
    while (got := await read_frame(worker.reader)) is not None:
        kind, payload = got
        if kind == SETTLED:
            router.settle_relayed(*decode_settled(payload))
        elif kind == PROGRESS:
            worker.progress = Snapshot(**orjson.loads(payload))
        elif kind == FINAL:
            worker.summary = orjson.loads(payload)
            if worker.summary and worker.summary.get("exit_code") == 0:
                router.finished.add(worker.shard)
    router.workers[worker.shard] = None
    worker.writer.close()


async def _supervise(
    workers: list[_Worker],
    session: Session,
    router: ShardRouter,
    stop: asyncio.Event,
    observer: Observer,
    total_rows: int | None,
    started: float,
) -> str:
    """Until every worker has exited: pass signals on, keep the connection, report progress."""
    waits = {asyncio.ensure_future(w.process.wait()) for w in workers}
    passed_on = False
    failure = ""
    while waits:
        if stop.is_set() and not passed_on:
            passed_on = True
            for w in workers:
                if w.process.returncode is None:
                    w.process.send_signal(signal.SIGTERM)
        if session.lost and not failure:
            try:
                await session.reopen(ConnectionError("the connection closed"))
                assert session.consume
                async with asyncio.timeout(30):
                    await router.attach(session.tap, session.consume)
            except (BrokerUnreachable, TimeoutError) as exc:
                failure = str(exc) or "consuming again timed out"
                log.error("%s; the workers finish without replies", failure)
        observer.update(_total(workers, total_rows, started))
        _, waits = await asyncio.wait(waits, timeout=0.5)
    return failure


def _total(workers: list[_Worker], total_rows: int | None, started: float) -> Snapshot:
    snaps = [w.progress for w in workers if w.progress is not None]
    return Snapshot(
        rows_read=min((s.rows_read for s in snaps), default=0),
        total_rows=total_rows,
        sent=sum(s.sent for s in snaps),
        confirmed=sum(s.confirmed for s in snaps),
        answered=sum(s.answered for s in snaps),
        elapsed_s=time.monotonic() - started,
    )


def _finish(
    workers: list[_Worker],
    parts: list[Path],
    results_path: Path,
    run_id: str,
    router: ShardRouter | None,
    failure: str,
    interrupted: bool,
    started: float,
) -> ImportSummary:
    """Join the parts into the results file and add the workers' summaries up."""
    for w in workers:
        if w.summary is None or not parts[w.shard].exists():
            raise IncompleteRun(
                f"worker {w.shard + 1} of {len(parts)} stopped without its results "
                f"(exit code {w.process.returncode}); run again with --resume to finish"
            )
    counts = merge_parts(parts, results_path)
    exit_code = summary_exit_code(counts)
    folder = workers_dir(results_path)
    if exit_code != EXIT_INCOMPLETE:
        shutil.rmtree(folder, ignore_errors=True)
    summaries = [w.summary for w in workers if w.summary]
    rows = sum(counts.values())
    elapsed = time.monotonic() - started
    reasons = sorted({s["reason"] for s in summaries if s["reason"]} | ({failure} if failure else set()))
    return ImportSummary(
        run_id=run_id,
        rows=rows,
        counts=counts,
        elapsed_s=round(elapsed, 3),
        rows_per_s=sent_rate(counts, elapsed),
        publish_rows_per_s=round(sum(s["publish_rows_per_s"] for s in summaries), 1),
        results=results_path,
        exit_code=exit_code,
        journal=folder if exit_code == EXIT_INCOMPLETE else None,
        interrupted=interrupted,
        reason="; ".join(reasons),
        duplicate_replies=sum(s["duplicate_replies"] for s in summaries)
        + (router.late_duplicates if router else 0),
        foreign_replies=router.counts.foreign if router else 0,
        malformed_replies=router.counts.malformed if router else 0,
        reconnects=sum(s["reconnects"] for s in summaries),
    )


async def serve_worker(fd: int, stop: asyncio.Event) -> ImportSummary:
    """A worker's whole life: the spec from the coordinator, the run, the summary back."""
    by_hand = InputError("a worker is started by `bulk-import run --workers N`, not by hand")
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        raise by_hand from None
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    got = await read_frame(reader)
    if got is None or got[0] != SPEC:
        raise by_hand
    path, options, settings = decode_spec(got[1])
    assert options.shard is not None
    k, n = options.shard
    log.info("sending rows %d, %d, %d, ... of %s (run %s)", k, k + n, k + 2 * n, path, options.run_id)
    summary = await run_in_process(
        path, options, settings, stop=stop, observer=RelayProgress(writer), relay=(reader, writer)
    )
    # A coordinator that is gone gets no summary; the worker still ends as its run did.
    with contextlib.suppress(ConnectionError, RuntimeError):
        if not writer.is_closing():
            writer.write(frame(FINAL, summary.to_json()))
            await writer.drain()
    writer.close()
    return summary
