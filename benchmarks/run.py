"""The benchmark driver: ``make bench`` (full, 40-60 min) and ``make bench-quick`` (``--quick``, CI).

Everything is measured in one run against one broker, because absolute rates move from day to day
and only ratios within a run mean something:

1. read + build, no broker (Parquet and CSV): rows/s and CPU
2. ``bulk-import run`` publishing with confirms, no stand-in (exit 4, no replies, is expected)
3. the peer publishers of benchmarks/peers/ on the same messages and window
4. bulk-import's publish window sweep
5. end to end with the stand-in job server (``bulk-import emulate``) on the same machine
6. reply consumption alone (replies.py: ReplyConsumer on a pre-filled queue)
7. peak RSS of read + build, of writing the results file, and of a whole run with the stand-in
   (CSV, replies, journal and results file included), at two sizes (a whole run: one in --quick)
8. batched import through api_req (``--via api``): publish-only and end to end with the stand-in,
   against phases 2 and 5, and a sweep of ``--batch-size`` (rows/s and the run's peak RSS)

Phases 1-6 run in R rounds, every measurement once per round, odd rounds in reverse order, and
each figure is the median over the rounds. Writes benchmarks/results/ (--quick: results/quick/):
results.md, results.json, results.png. Exit status: 0 when every measurement ran, whatever the
targets say; 1 when a measurement broke; 2 when the bench's dependencies are missing; 3 when the
broker cannot be reached.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import operator
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from report import Row, fmt_value, markdown, write_json, write_png

from bulk_import.config import BATCH_ROWS, DEFAULT_BATCH_SIZE

try:
    import psutil
    from measure import Background, CommandTimeout, Measured, find_broker, run_measured
except ModuleNotFoundError:  # the bench extra is missing: main() says how to install it
    pass

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
PY = sys.executable
BULK_IMPORT = [PY, "-m", "bulk_import"]
#: import name → the package pip installs (the ``bench`` extra of pyproject.toml).
BENCH_DEPS = {"psutil": "psutil", "matplotlib": "matplotlib", "pika": "pika", "aio_pika": "aio-pika"}
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
SEED = 1
#: The peer publishers of benchmarks/peers/, in table order, and how to start each.
PEER_COMMANDS: dict[str, list[str | Path]] = {
    "go-amqp091": [PEERS / "bin" / "go-peer"],
    "node-amqplib": [PEERS / "bin" / "node-peer"],
    "aio-pika": [PY, PEERS / "aiopika_publish.py"],
    "aiormq": [PY, PEERS / "aiormq_publish.py"],
    "pika": [PY, PEERS / "pika_publish.py"],
    "no-confirm": [PY, PEERS / "noconfirm_publish.py"],
}
#: Publishing target: this times the Go client's rate at the same window, with at most this much CPU.
PUBLISH_RATIO, PUBLISH_CLIENT_CPU = 1.10, 10.0
#: Batched targets: rows/s over the per-message path's, end to end and publish-only.
API_E2E_RATIO, API_PUBLISH_RATIO = 10.0, 20.0
RSS_LIMIT_MIB = 250e6 / 2**20  # the target is 250 MB
RSS_FLAT = 1.2  # "flat": the larger file peaks at most this much above the smaller


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of a full or a quick run."""

    quick: bool
    rounds: int
    read_rows: int
    publish_rows: int
    pika_rows: int
    window: int
    sweep: tuple[int, ...]
    e2e_rows: int
    reply_rows: int
    rss_rows: tuple[int, int]
    #: Sizes of the end-to-end peak RSS runs: a smaller one, and optionally a larger one held to it.
    e2e_rss_rows: tuple[int, ...]
    #: Rows of the batched (api_req) runs, and the batch sizes swept.
    api_rows: int
    batch_sweep: tuple[int, ...]


FULL = Plan(
    quick=False,
    rounds=3,
    read_rows=1_000_000,
    publish_rows=200_000,
    pika_rows=20_000,
    window=1024,
    sweep=(256, 1024, 4096, 8192),
    e2e_rows=100_000,
    reply_rows=100_000,
    rss_rows=(1_000_000, 10_000_000),
    e2e_rss_rows=(1_000_000, 10_000_000),  # at ~6k rows/s, the larger takes ~30 min
    api_rows=1_000_000,
    batch_sweep=(100, 1_000, 5_000, 10_000),
)
QUICK = Plan(
    quick=True,
    rounds=1,
    read_rows=100_000,
    publish_rows=20_000,
    pika_rows=5_000,
    window=1024,
    sweep=(1024, 4096),
    e2e_rows=20_000,
    reply_rows=20_000,
    rss_rows=(100_000, 1_000_000),
    e2e_rss_rows=(100_000,),
    api_rows=200_000,
    batch_sweep=(100, 1_000, 10_000),
)


class BenchError(Exception):
    """A measurement that did not run as it should: the bench exits non-zero."""


@dataclass
class Outcome:
    """One repetition of one measurement."""

    value: float
    cpu: dict[str, float | None]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    key: str
    phase: int
    label: str
    n: int
    unit: str
    run: Callable[[], Outcome]
    note: str = ""


@dataclass(frozen=True)
class Publisher:
    """How to start one publisher and read its rate: a peer, or ``bulk-import run`` itself."""

    name: str
    argv: Callable[[str, str, Path], list[str | Path]]  # (queue, result queue, scratch dir)
    rate: Callable[[Measured, Path], float]  # checks the output; raises BenchError
    ok_codes: tuple[int, ...] = (0,)
    #: Rows a message holds at most (a batch of --via api): a batch never spans two of the file's
    #: read batches (BATCH_ROWS rows), so each of those ends in a shorter one.
    per_message: int = 1


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def json_line(m: Measured) -> dict[str, Any]:
    """The last JSON object a command printed on stdout."""
    for line in reversed(m.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return dict(json.loads(line))
            except ValueError:
                break
    raise BenchError(
        f"{Path(m.argv[1] if m.argv[0] == PY else m.argv[0]).name} printed no result: {m.tail()}"
    )


class Broker:
    """The bench's own connection to RabbitMQ (pika, blocking): fresh queues, depths, clean-up."""

    def __init__(self, url: str, tag: str) -> None:
        import pika

        self._pika = pika
        self.params = pika.URLParameters(url)
        self.params.heartbeat = 0  # idle for minutes while a phase runs without the broker
        self.tag = tag
        self.created: list[str] = []
        self._count = 0
        self._conn: Any = None
        self._channel: Any = None
        self._ch()  # fail now, with a clear message, if the broker is not there

    @property
    def server_version(self) -> str:
        props = self._conn._impl.server_properties if self._conn else {}
        version = props.get("version", b"?")
        return version.decode() if isinstance(version, bytes) else str(version)

    def _ch(self) -> Any:
        if self._conn is None or self._conn.is_closed:
            self._conn = self._pika.BlockingConnection(self.params)
            self._channel = None
        if self._channel is None or self._channel.is_closed:
            self._channel = self._conn.channel()
        return self._channel

    def _passive(self, name: str) -> Any:
        """The queue's Declare-Ok, or None when it is missing or the broker did not answer."""
        try:
            return self._ch().queue_declare(name, passive=True).method
        except self._pika.exceptions.AMQPError:
            self._channel = None
            return None

    def fresh(self, what: str) -> str:
        """A new durable queue named ``bench_<tag>_<n>_<what>``, deleted by :meth:`close` at the latest."""
        self._count += 1
        name = f"bench_{self.tag}_{self._count}_{slug(what)}"
        self.created.append(name)
        self._ch().queue_declare(name, durable=True)
        return name

    def depth(self, name: str) -> int | None:
        ok = self._passive(name)
        return None if ok is None else ok.message_count

    def consumers(self, name: str) -> int | None:
        ok = self._passive(name)
        return None if ok is None else ok.consumer_count

    def delete(self, *names: str) -> None:
        for name in names:
            try:
                self._ch().queue_delete(name)
            except self._pika.exceptions.AMQPError as exc:
                self._channel = None
                log(f"could not delete queue {name}: {exc!r}")
                continue
            if name in self.created:
                self.created.remove(name)

    def wait_up(self, timeout: float) -> bool:
        """Whether the broker answers (a passive declare), waiting up to ``timeout`` s for it to come back."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._ch().exchange_declare("amq.direct", passive=True)
                return True
            except self._pika.exceptions.AMQPError:
                self._conn = self._channel = None
                if time.monotonic() > deadline:
                    return False
                time.sleep(1.0)

    def close(self) -> None:
        """Delete every queue this run made; if the broker is away, wait a minute for it first."""
        self.delete(*list(self.created))
        if self.created and self.wait_up(60):
            self.delete(*list(self.created))
        if self.created:
            log(f"could not delete {', '.join(self.created)}: delete them with rabbitmqctl delete_queue")
        with contextlib.suppress(self._pika.exceptions.AMQPError):
            if self._conn is not None and not self._conn.is_closed:
                self._conn.close()


def quiesce(beam: psutil.Process | None, limit: float = 3.0) -> None:
    """Wait (at most ``limit`` s) for the broker to go idle, so one run's clean-up does not tax the next."""
    if beam is None:
        return
    deadline = time.monotonic() + limit
    try:
        beam.cpu_percent(None)
        while time.monotonic() < deadline:
            time.sleep(0.25)
            if beam.cpu_percent(None) < 15:
                return
    except psutil.Error:
        return


class Bench:
    """The measurements, each a method returning one :class:`Outcome` (or raising BenchError)."""

    def __init__(self, plan: Plan, url: str, broker: Broker, work: Path) -> None:
        self.plan = plan
        self.url = url
        self.broker = broker
        self._beam: psutil.Process | None = None
        self.work = work
        self.notes: list[str] = []
        self._scratch = 0

    @property
    def beam(self) -> psutil.Process | None:
        """The broker's process, found again if it was restarted (the broker is shared)."""
        if self._beam is None or not self._beam.is_running():
            self._beam = find_broker()
        return self._beam

    # --- inputs ---------------------------------------------------------------------------------

    def sample(self, rows: int, fmt: str) -> Path:
        """Generated contacts (kept in benchmarks/work/ between runs: same rows, same seed, same file)."""
        path = self.work / f"contacts-{rows}.{fmt}"
        if not path.exists():
            log(f"generating {path.name}")
            argv = [*BULK_IMPORT, "sample", str(rows), str(path), "--seed", str(SEED)]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            if done.returncode:
                raise BenchError(f"bulk-import sample failed: {done.stderr.strip()[-500:]}")
        return path

    def bodies(self, rows: int) -> Path:
        """The peers' input: bodies built by bulk-import from the same rows, one a line."""
        path = self.work / f"bodies-{rows}.ndjson"
        if not path.exists():
            tmp = path.with_name(f".{path.name}.tmp")
            argv: list[str | Path] = [
                PY,
                HERE / "read_build.py",
                self.sample(rows, "parquet"),
                "--bodies",
                tmp,
            ]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            if done.returncode:
                raise BenchError(f"writing the body file failed: {done.stderr.strip()[-500:]}")
            tmp.replace(path)
        return path

    def scratch(self) -> Path:
        self._scratch += 1
        path = self.work / "runs" / f"{self.broker.tag}-{self._scratch}"
        path.mkdir(parents=True)
        return path

    def prepare(self, phases: set[int]) -> None:
        """Generate the inputs the chosen phases need before any clock starts."""
        p = self.plan
        if phases & {1}:
            for fmt in ("parquet", "csv"):
                self.sample(p.read_rows, fmt)
        if phases & {2, 4}:
            self.sample(p.publish_rows, "parquet")
        if phases & {3}:
            self.bodies(p.publish_rows)
        if phases & {5, 8}:
            self.sample(p.e2e_rows, "parquet")
        if phases & {8}:
            self.sample(p.api_rows, "parquet")
        if phases & {7}:
            for fmt in ("parquet", "csv"):
                for rows in p.rss_rows:
                    self.sample(rows, fmt)
            for rows in p.e2e_rss_rows:
                self.sample(rows, "csv")

    def peers(self) -> dict[str, list[str | Path]]:
        """The peers that can run: builds the Go and Node ones if missing, skips them (noted) on failure."""

        def built() -> dict[str, bool]:
            node = PEERS / "node" / "node_modules" / "amqplib"
            return {
                "go-amqp091": (PEERS / "bin" / "go-peer").exists(),
                "node-amqplib": (PEERS / "bin" / "node-peer").exists() and node.is_dir(),
            }

        ready, why = built(), ""
        if not all(ready.values()):
            log("building the Go and Node peers: benchmarks/peers/build.sh")
            try:
                limit = 180 if self.plan.quick else 900  # CI's budget for --quick is ~4 minutes
                done = subprocess.run([PEERS / "build.sh"], capture_output=True, text=True, timeout=limit)
                why = done.stderr.strip().splitlines()[-1] if done.returncode and done.stderr.strip() else ""
            except (OSError, subprocess.TimeoutExpired) as exc:
                why = str(exc)
            ready = built()
        peers = {}
        for name, argv in PEER_COMMANDS.items():
            if ready.get(name, True):
                peers[name] = argv
            else:
                reason = why or "see its output"
                self.notes.append(f"{name} skipped: benchmarks/peers/build.sh could not build it ({reason})")
        return peers

    # --- measurements ---------------------------------------------------------------------------

    def run_publisher(self, pub: Publisher, count: int) -> Outcome:
        """A publisher command on fresh, empty queues under the sampler: its rate, and CPU over its window.

        The window ends when the queue depth (polled with each sample) reached N and is as long as
        the publisher's own clock says: the same for every publisher, leaving out start-up, the
        file read before the first publish and the tail after the last confirm.
        """
        queue, results = self.broker.fresh(pub.name), self.broker.fresh(f"{pub.name}-replies")
        scratch = self.scratch()
        try:
            quiesce(self.beam)
            m = run_measured(
                pub.argv(queue, results, scratch),
                timeout=120 + count / 200,
                watch={"broker": self.beam},
                probe=lambda: self.broker.depth(queue),
            )
            if m.returncode not in pub.ok_codes:
                raise BenchError(f"{pub.name} exited {m.returncode}: {m.tail()}")
            rate = pub.rate(m, scratch)
            held, messages = self.broker.depth(queue), messages_for(count, pub.per_message)
            if held != messages:
                raise BenchError(f"{pub.name}: the queue holds {held} messages, not {messages}")
            end = m.depth.reached(messages) or m.ended
            cpu = m.cpu_pct(end - count / rate, end)
            return Outcome(rate, cpu, {"publish_s": count / rate, "wall_s": m.ended - m.started})
        finally:
            self.broker.delete(queue, results)
            shutil.rmtree(scratch, ignore_errors=True)

    def peer(self, name: str, argv: list[str | Path], count: int) -> Publisher:
        def command(queue: str, _results: str, _scratch: Path) -> list[str | Path]:
            body_file = self.bodies(self.plan.publish_rows)
            opts = ["--url", self.url, "--queue", queue, "--count", str(count)]
            return [*argv, *opts, "--window", str(self.plan.window), "--body-file", body_file]

        def rate(m: Measured, _scratch: Path) -> float:
            line = json_line(m)
            if line.get("confirmed") != count or line.get("nacked"):
                raise BenchError(
                    f"{name}: {line.get('confirmed')} of {count} confirmed, {line.get('nacked')} nacked"
                )
            return float(line["msg_per_s"])

        return Publisher(name, command, rate)

    def bulk_argv(
        self,
        file: Path,
        window: int,
        queue: str,
        results: str,
        scratch: Path,
        *,
        reply_timeout: float | None,
        batch: int | None = None,
    ) -> list[str | Path]:
        """``bulk-import run`` on fresh queues, summary and results in the scratch folder; with
        ``batch``, ``--via api`` in batches of that many rows."""
        # Publish-only (a reply timeout, no stand-in): --max-pending 0, or the run stops sending after
        # 8192 unanswered rows. End to end keeps the defaults, as a user runs it.
        extra = ["--reply-timeout", str(reply_timeout), "--max-pending", "0"] if reply_timeout else []
        via = ["--via", "api", "--batch-size", str(batch), "--token", "bench-token"] if batch else []
        return [
            *BULK_IMPORT, "run", file, "--db", "1", "--amqp-url", self.url,
            *queue_args(queue, results, api=batch is not None), *via,
            "--declare", "--window", str(window), *extra,
            "--summary", scratch / "summary.json", "--results", scratch / "results.csv", "-q",
        ]  # fmt: skip

    def bulk_publisher(self, window: int, *, batch: int | None = None) -> Publisher:
        count = self.plan.api_rows if batch else self.plan.publish_rows
        file = self.sample(count, "parquet")

        def rate(m: Measured, scratch: Path) -> float:
            summary = read_summary(m, scratch)
            counts = summary["counts"]
            if counts["not_confirmed"] or counts["no_reply"] != count:
                raise BenchError(f"bulk-import publish: unexpected counts {counts}")
            return float(summary["publish_rows_per_s"])

        argv = partial(self.bulk_argv, file, window, reply_timeout=1, batch=batch)
        return Publisher("bulk-import", argv, rate, ok_codes=(4,), per_message=batch or 1)

    def end_to_end(
        self, workers: int = 1, *, fmt: str = "parquet", rows: int | None = None, batch: int | None = None
    ) -> Outcome:
        """``bulk-import run`` with the stand-in replying: rows/s from the summary, CPU of all three,
        and the run's peak RSS (of the client process: its workers' are their own). With ``batch``,
        ``--via api`` in batches of that many rows, the stand-in serving api_req."""
        count, window = rows or self.plan.e2e_rows, self.plan.window
        file = self.sample(count, fmt)
        queue, results = self.broker.fresh("e2e"), self.broker.fresh("e2e-replies")
        idle = [self.broker.fresh("idle"), self.broker.fresh("idle-replies")] if batch else []
        scratch = self.scratch()
        # Batched, the stand-in's database_import queues are fresh ones nobody uses.
        served = queue_args(queue, results, api=bool(batch))
        if batch:
            served += queue_args(*idle, api=False)
        standin_argv = [*BULK_IMPORT, "emulate", "--amqp-url", self.url, *served, "--declare", "-q"]
        try:
            quiesce(self.beam)
            with Background(standin_argv) as standin:
                self.wait_for_consumer(queue, standin)
                argv = self.bulk_argv(file, window, queue, results, scratch, reply_timeout=None, batch=batch)
                m = run_measured(
                    [*argv, "--workers", str(workers)],
                    timeout=180 + count / 200,
                    watch={"broker": self.beam, "standin": standin.ps},
                )
            if m.returncode != 0:
                raise BenchError(f"bulk-import run (end to end) exited {m.returncode}: {m.tail()}")
            summary = read_summary(m, scratch)
            if summary["counts"]["ok"] != count:
                raise BenchError(f"end to end: unexpected counts {summary['counts']}")
            got = re.search(r"received=(\d+)", standin.stderr)
            cpu = m.cpu_pct(m.ended - summary["elapsed_s"], m.ended)
            extra = {
                "standin_received": int(got.group(1)) if got else None,
                "elapsed_s": summary["elapsed_s"],
                "peak_rss_mib": m.max_rss_mib,
            }
            return Outcome(float(summary["rows_per_s"]), cpu, extra)
        finally:
            self.broker.delete(queue, results, *idle)
            shutil.rmtree(scratch, ignore_errors=True)

    def wait_for_consumer(self, queue: str, standin: Background, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while (self.broker.consumers(queue) or 0) == 0:
            if not standin.alive():
                standin.stop()
                raise BenchError(f"the stand-in exited {standin.returncode}: {standin.stderr.strip()[-500:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"the stand-in did not consume {queue} within {timeout:.0f}s")
            time.sleep(0.05)

    def replies(self) -> Outcome:
        """ReplyConsumer alone on a queue pre-filled with N valid replies: msg/s and CPU."""
        count = self.plan.reply_rows
        queue = self.broker.fresh("replies")
        script: list[str | Path] = [PY, HERE / "replies.py", "--url", self.url, "--queue", queue]
        script += ["--count", str(count)]
        try:
            fill = run_measured([*script, "fill"], timeout=120 + count / 200)
            if fill.returncode or self.broker.depth(queue) != count:
                raise BenchError(f"filling the reply queue failed ({fill.returncode}): {fill.tail()}")
            quiesce(self.beam)
            prefetch = str(max(256, self.plan.window))  # as bulk-import run sets it
            m = run_measured(
                [*script, "consume", "--prefetch", prefetch],
                timeout=120 + count / 200,
                watch={"broker": self.beam},
            )
            if m.returncode:
                raise BenchError(f"replies.py consume exited {m.returncode}: {m.tail()}")
            line = json_line(m)
            if line["replies"] != count or line["foreign"] or line["malformed"] or line["duplicates"]:
                raise BenchError(f"reply consumption: unexpected counts {line}")
            left = self.broker.depth(queue)
            if left:
                raise BenchError(f"reply consumption: {left} replies were not acked")
            return Outcome(float(line["msg_per_s"]), m.cpu_pct(line["t0"], line["t1"]))
        finally:
            self.broker.delete(queue)

    def read_build(self, fmt: str, rows: int, *, frame: bool = False, via: str = "queue") -> Outcome:
        """read_build.py over the whole file: rows/s, CPU over its timed loop, peak RSS of the process;
        ``via`` the protocol built for (``api``: batch requests, fewer messages than rows)."""
        path = self.sample(rows, fmt)
        argv: list[str | Path] = [
            PY,
            HERE / "read_build.py",
            path,
            "--via",
            via,
            *(["--frame"] if frame else []),
        ]
        m = run_measured(argv, timeout=120 + rows / 20_000)
        if m.returncode:
            raise BenchError(f"read_build.py {path.name} exited {m.returncode}: {m.tail()}")
        line = json_line(m)
        if line["rows"] != rows or (via == "queue" and line["messages"] != rows):
            raise BenchError(f"read_build.py {path.name}: {line['rows']} rows, {line['messages']} bodies")
        extra = {"peak_rss_mib": m.max_rss_mib, "bytes": line["bytes"]}
        return Outcome(float(line["rows_per_s"]), m.cpu_pct(line["t0"], line["t1"]), extra)

    def peak_rss(self, fmt: str, rows: int) -> Outcome:
        read = self.read_build(fmt, rows)
        return Outcome(read.extra["peak_rss_mib"], read.cpu, {"rows_per_s": read.value})

    def e2e_rss(self, rows: int) -> Outcome:
        """A whole run of the N-row CSV with the stand-in (as phase 5): the client's peak RSS."""
        run = self.end_to_end(fmt="csv", rows=rows)
        extra = {"rows_per_s": run.value, "elapsed_s": run.extra["elapsed_s"]}
        return Outcome(run.extra["peak_rss_mib"], run.cpu, extra)

    def results_rss(self, rows: int) -> Outcome:
        """results_file.py: the results file of a finished N-row run, written alone; its peak RSS."""
        journal = self.work / f"journal-{rows}"
        if not journal.exists():
            log(f"recording a synthetic journal of {rows:,} rows")
            made = run_measured([PY, HERE / "results_file.py", journal, str(rows), "--make"], timeout=600)
            if made.returncode:
                raise BenchError(f"results_file.py --make exited {made.returncode}: {made.tail()}")
        m = run_measured([PY, HERE / "results_file.py", journal, str(rows)], timeout=120 + rows / 20_000)
        if m.returncode:
            raise BenchError(f"results_file.py exited {m.returncode}: {m.tail()}")
        line = json_line(m)
        return Outcome(m.max_rss_mib, m.cpu_pct(line["t0"], line["t1"]), {"rows_per_s": line["rows_per_s"]})

    # --- the plan -------------------------------------------------------------------------------

    def round_jobs(self) -> list[Job]:
        """Phases 1-6: every measurement of one round."""
        p = self.plan
        jobs = [
            Job(
                f"read:{fmt}",
                1,
                f"read+build {fmt}",
                p.read_rows,
                "rows/s",
                partial(self.read_build, fmt, p.read_rows),
            )
            for fmt in ("parquet", "csv")
        ]
        jobs.append(
            Job(
                "read:parquet:framed",
                1,
                "read+build parquet, framed",
                p.read_rows,
                "rows/s",
                partial(self.read_build, "parquet", p.read_rows, frame=True),
                "AMQP frames too, as a run makes them before publishing",
            )
        )

        jobs += [
            Job(
                f"read:{fmt}:api",
                1,
                f"read+build {fmt}, framed, --via api",
                p.read_rows,
                "rows/s",
                partial(self.read_build, fmt, p.read_rows, frame=True, via="api"),
                f"requests of {DEFAULT_BATCH_SIZE:,} profiles, framed as a run makes them",
            )
            for fmt in ("parquet", "csv")
        ]

        def bulk(phase: int, window: int, label: str) -> Job:
            run = partial(self.run_publisher, self.bulk_publisher(window), p.publish_rows)
            return Job(f"publish:bulk-import:w{window}", phase, label, p.publish_rows, "msg/s", run)

        jobs.append(bulk(2, p.window, f"bulk-import publish, window {p.window}"))
        for name, argv in self.peers().items():
            count = p.pika_rows if name == "pika" else p.publish_rows
            note = {
                "pika": "one message at a time (window 1)",
                "no-confirm": "no confirms: counted in the queue",
            }.get(name, "")
            run = partial(self.run_publisher, self.peer(name, argv, count), count)
            jobs.append(Job(f"publish:{name}", 3, f"{name} publish", count, "msg/s", run, note))
        jobs += [bulk(4, w, f"bulk-import publish, window {w}") for w in p.sweep if w != p.window]
        jobs.append(Job("e2e", 5, "end to end with the stand-in", p.e2e_rows, "rows/s", self.end_to_end))
        label = "end to end with the stand-in, --workers 2"
        jobs.append(Job("e2e:w2", 5, label, p.e2e_rows, "rows/s", partial(self.end_to_end, 2)))
        jobs.append(
            Job("replies", 6, "reply consumption (ReplyConsumer)", p.reply_rows, "msg/s", self.replies)
        )
        return jobs + self.batched_jobs()

    def batched_jobs(self) -> list[Job]:
        """Phase 8: ``--via api`` publish-only and end to end at the default batch size (on phase 5's
        file, to compare), then end to end over the larger file for each batch size swept."""
        p = self.plan
        publish = partial(
            self.run_publisher, self.bulk_publisher(p.window, batch=DEFAULT_BATCH_SIZE), p.api_rows
        )
        label = f"--via api, batches of {DEFAULT_BATCH_SIZE:,}"
        jobs = [
            Job("publish:api", 8, f"{label}, publish", p.api_rows, "rows/s", publish),
            Job(
                "e2e:api",
                8,
                f"{label}, end to end",
                p.e2e_rows,
                "rows/s",
                partial(self.end_to_end, batch=DEFAULT_BATCH_SIZE),
            ),
        ]
        for size in p.batch_sweep:
            run = partial(self.end_to_end, rows=p.api_rows, batch=size)
            jobs.append(
                Job(
                    f"e2e:api:b{size}",
                    8,
                    f"--via api, batches of {size:,}, end to end",
                    p.api_rows,
                    "rows/s",
                    run,
                )
            )
        return jobs

    def rss_jobs(self) -> list[Job]:
        """Phase 7, once: peak RSS is not a rate, it does not drift with the machine's load."""
        p = self.plan
        jobs = [
            Job(
                f"rss:{fmt}:{rows}",
                7,
                f"peak RSS, read+build {fmt}",
                rows,
                "MiB",
                partial(self.peak_rss, fmt, rows),
            )
            for fmt in ("parquet", "csv")
            for rows in p.rss_rows
        ]
        jobs += [
            Job(
                f"rss:results:{rows}",
                7,
                "peak RSS, results file",
                rows,
                "MiB",
                partial(self.results_rss, rows),
            )
            for rows in p.rss_rows
        ]
        label = "peak RSS, end to end with the stand-in, csv"
        jobs += [
            Job(f"rss:e2e:{rows}", 7, label, rows, "MiB", partial(self.e2e_rss, rows))
            for rows in p.e2e_rss_rows
        ]
        return jobs


def messages_for(rows: int, per_message: int) -> int:
    """The messages ``rows`` rows of a Parquet file make, ``per_message`` at most in each."""
    full, rest = divmod(rows, BATCH_ROWS)
    return full * -(-BATCH_ROWS // per_message) + -(-rest // per_message)


def queue_args(queue: str, results: str, *, api: bool) -> list[str]:
    """The options naming the request and the result queue: database_import's, or api_req's."""
    prefix = "--api-" if api else "--"
    return [f"{prefix}queue", queue, f"{prefix}result-queue", results]


def read_summary(m: Measured, scratch: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((scratch / "summary.json").read_text()))
    except (OSError, ValueError) as exc:
        raise BenchError(f"bulk-import wrote no summary ({exc}): {m.tail()}") from None


def run_once(job: Job) -> Outcome | str:
    """The job's outcome, or what went wrong."""
    try:
        return job.run()
    except CommandTimeout as exc:
        return f"timed out: {exc}"
    except BenchError as exc:
        return str(exc)
    except Exception as exc:
        traceback.print_exc()
        return f"{type(exc).__name__}: {exc}"


def run_jobs(jobs: list[Job], rounds: int, recover: Callable[[], object]) -> dict[str, list[Outcome | str]]:
    """Every job once per round (odd rounds in reverse order); a failure is recorded, not raised.

    A failed job is tried once more, after ``recover`` (waits for the broker): the broker is shared,
    and a transient hiccup (someone closing connections or restarting it) is not a broken
    measurement. Two failures in a row are.
    """
    done: dict[str, list[Outcome | str]] = {job.key: [] for job in jobs}
    for r in range(rounds):
        for job in jobs if r % 2 == 0 else jobs[::-1]:
            where = f"[{r + 1}/{rounds}] {job.label}"
            started = time.monotonic()
            result = run_once(job)
            if isinstance(result, str):
                log(f"{where}: failed, trying once more: {result}")
                recover()
                first_error, result = result, run_once(job)
                if isinstance(result, Outcome):
                    result.extra["retried_after"] = first_error
            done[job.key].append(result)
            if isinstance(result, str):
                log(f"{where}: FAILED: {result}")
                continue
            cpu = ", ".join(f"{k} {v:.0f}%" for k, v in result.cpu.items() if v is not None)
            took = time.monotonic() - started
            log(f"{where}: {fmt_value(result.value, job.unit)} ({cpu}) in {took:.0f}s")
    return done


def summarize(job: Job, outcomes: list[Outcome | str]) -> Row:
    """Medians of the value and of each CPU figure over the repetitions that ran."""
    ok = [o for o in outcomes if isinstance(o, Outcome)]
    errors = [o for o in outcomes if isinstance(o, str)]
    row = Row(job.key, job.phase, job.label, job.n, job.unit, note=job.note)
    if ok:
        row.runs = [o.value for o in ok]
        row.value = statistics.median(row.runs)
        roles = {role for o in ok for role in o.cpu}
        for role in sorted(roles):
            values = [v for o in ok if (v := o.cpu.get(role)) is not None]
            row.cpu[role] = statistics.median(values) if values else None
        row.detail = [{"value": o.value, "cpu": o.cpu, **o.extra} for o in ok]
    if row.cpu.get("standin") is not None:
        row.note = f"stand-in CPU {row.cpu['standin']:.0f}%"
    retried = sum("retried_after" in o.extra for o in ok)
    if retried:
        row.note = "; ".join(x for x in (row.note, f"{retried} run(s) retried after a failure") if x)
    if errors:
        row.error = errors[0] + (
            f" ({len(errors)} of {len(outcomes)} runs failed)" if len(outcomes) > 1 else ""
        )
    return row


def judge(rows: list[Row], plan: Plan) -> list[str]:
    """Ratios to Go, targets and whether they were met; returns notes for the report."""
    by_key = {r.key: r for r in rows}
    go = by_key.get("publish:go-amqp091")
    ours = by_key.get(f"publish:bulk-import:w{plan.window}")
    for r in rows:
        if r.phase in (2, 3, 4) and go and go.value and r.value:
            r.ratio_go = r.value / go.value

    def target(key: str, text: str, check: Callable[[float], bool | None]) -> None:
        r = by_key.get(key)
        if r is not None:
            r.target = text
            r.met = None if r.value is None else check(r.value)

    for built in ("", ":api"):  # a message per row, and --via api's requests framed
        target(f"read:parquet{built}", "≥ 1M rows/s", lambda v: v >= 1e6)
        target(f"read:csv{built}", "≥ 0.8M rows/s", lambda v: v >= 0.8e6)
    if ours is not None:
        ratio, client = ours.ratio_go, ours.cpu.get("client")
        target(
            ours.key,
            f"≥ {PUBLISH_RATIO:.2f}× Go, client ≤ {PUBLISH_CLIENT_CPU:.0f}%",
            lambda v: (
                None
                if ratio is None or client is None
                else ratio >= PUBLISH_RATIO and client <= PUBLISH_CLIENT_CPU
            ),
        )
        base = ours.value
        for key in ("read:parquet", "read:csv", "read:parquet:framed"):
            read = by_key.get(key)
            if read is not None and read.value and base:
                asked = " (≥ 40× asked)" if key != "read:parquet:framed" else ""
                read.note = "; ".join(x for x in (f"{read.value / base:.0f}× publish{asked}", read.note) if x)
        target("e2e", "≥ 0.45× publish-only", lambda v: None if not base else v >= 0.45 * base)
        e2e = by_key.get("e2e")
        if e2e is not None and e2e.value and base:
            e2e.note = "; ".join(x for x in (f"{e2e.value / base:.2f}× publish-only", e2e.note) if x)
        shared = by_key.get("e2e:w2")
        if shared is not None and shared.value and e2e is not None and e2e.value:
            shared.note = "; ".join(
                x for x in (f"{shared.value / e2e.value:.2f}× one process", shared.note) if x
            )
    judge_batched(by_key, ours, plan)
    sizes = dict.fromkeys(("parquet", "csv", "results"), plan.rss_rows) | {"e2e": plan.e2e_rss_rows}
    for what, (small, *larger) in sizes.items():
        target(f"rss:{what}:{small}", "≤ 250 MB", lambda v: v <= RSS_LIMIT_MIB)
        low = by_key.get(f"rss:{what}:{small}")
        flat_limit = RSS_FLAT * low.value if low and low.value else RSS_LIMIT_MIB
        limit = min(RSS_LIMIT_MIB, flat_limit)
        for large in larger:
            target(
                f"rss:{what}:{large}",
                f"≤ 250 MB, ≤ {RSS_FLAT}× the {small:,}-row peak",
                partial(operator.ge, limit),
            )
    notes = []
    sweep = {int(r.key.rsplit(":w", 1)[1]): r for r in rows if r.key.startswith("publish:bulk-import:w")}
    rated = {w: r.value for w, r in sorted(sweep.items()) if r.value}
    if rated:
        best = max(rated, key=lambda w: rated[w])
        listed = ", ".join(f"{w}: {fmt_value(v, 'msg/s')}" for w, v in rated.items())
        notes.append(f"best bulk-import publish window: {best} ({listed})")
    phases = {r.phase for r in rows}
    explain = {
        2: "publish rows: CPU over the publisher's own clock (first publish → last confirm), ending when "
        "the queue depth reached N; each run on fresh, empty queues, deleted afterwards. bulk-import runs "
        "with --reply-timeout 1 --max-pending 0 and reads and encodes the file inside its clock (exit 4, "
        "no replies, is expected); the peers load their bodies (built by bulk-import from the same rows) "
        "before theirs",
        5: "end to end: `bulk-import run` with its defaults but the window (so --max-pending 8192), "
        "the stand-in on this machine; rows/s and CPU over the run's own elapsed time (summary)",
        6: "reply consumption: ReplyConsumer + Ledger on a run's connection, without the journal's disk "
        f"writes; prefetch {max(256, plan.window)} as in a run",
        8: "batched: `bulk-import run --via api` on api_req queues of its own; publish-only as phase 2 "
        "(the queue holds N / batch size messages), end to end as phase 5 with the stand-in serving "
        "api_req (so --max-pending is eight batches' rows). Rows/s are set against phase 2's msg/s (a "
        "message per row there) and phase 5's rows/s",
        7: "peak RSS: ru_maxrss of a process that only reads and builds the whole file (read_build.py), "
        "or only writes the results file of a finished run from its journal (results_file.py: every "
        "row answered, replies in shuffled order), or of `bulk-import run` over the whole CSV with the "
        "stand-in replying, as in phase 5 (reading, publishing, replies, journal and results file); "
        "interpreter and polars included; run once",
    }
    notes += [text for phase, text in explain.items() if phase in phases or (phase == 2 and 3 in phases)]
    return notes


def judge_batched(by_key: dict[str, Row], publish: Row | None, plan: Plan) -> None:
    """Phase 8 against the per-message figures of the same run, and each swept size's peak RSS."""
    pairs = (
        ("publish:api", publish, API_PUBLISH_RATIO, "publish"),
        ("e2e:api", by_key.get("e2e"), API_E2E_RATIO, "end to end"),
    )
    for key, base, ratio, what in pairs:
        row = by_key.get(key)
        if row is None:
            continue
        row.target = f"≥ {ratio:.0f}× per-message {what}"
        if row.value and base is not None and base.value:
            times = row.value / base.value
            row.met = times >= ratio
            row.note = "; ".join(x for x in (f"{times:.1f}× per-message {what}", row.note) if x)
    for size in plan.batch_sweep:
        row = by_key.get(f"e2e:api:b{size}")
        if row is not None and row.detail:
            peak = max(d["peak_rss_mib"] for d in row.detail)
            row.note = "; ".join(x for x in (f"peak RSS {peak:.0f} MiB", row.note) if x)


def machine_info(broker: Broker) -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        done = subprocess.run(["rabbitmqctl", "version"], capture_output=True, text=True, timeout=60)
        rabbitmq = (
            done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else broker.server_version
        )
    except (OSError, subprocess.TimeoutExpired):
        rabbitmq = broker.server_version
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "rabbitmq": rabbitmq,
        "python": platform.python_version(),
        "polars": importlib.metadata.version("polars"),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def missing_deps() -> list[str]:
    return [pkg for module, pkg in BENCH_DEPS.items() if importlib.util.find_spec(module) is None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, one round: the CI smoke run (< 4 min)"
    )
    parser.add_argument("--rounds", type=int, help="repetitions of phases 1-6 (default: 3, quick: 1)")
    parser.add_argument("--phases", default="1,2,3,4,5,6,7,8", help="comma-separated phases to run")
    parser.add_argument("--url", default=os.environ.get("BULK_IMPORT_AMQP_URL", DEFAULT_URL))
    args = parser.parse_args()

    missing = missing_deps()
    if missing:
        print(
            f"error: missing benchmark dependencies: {', '.join(missing)}\n"
            f"  install the bench extra (from {HERE.parent}):  {PY} -m pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2
    plan = QUICK if args.quick else FULL
    rounds = args.rounds or plan.rounds
    phases = {int(p) for p in args.phases.split(",") if p.strip()}
    (HERE / "work").mkdir(exist_ok=True)
    # SIGTERM unwinds like Ctrl-C, so queues are deleted and the stand-in stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    try:
        broker = Broker(args.url, secrets.token_hex(4))
    except Exception as exc:
        print(
            f"error: cannot reach RabbitMQ at {args.url}: {exc!r}\n"
            "  start it with `make broker` (or `rabbitmq-server -detached`)",
            file=sys.stderr,
        )
        return 3
    started = time.monotonic()
    date = dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="seconds")
    try:
        machine = machine_info(broker)
        bench = Bench(plan, args.url, broker, HERE / "work")
        if bench.beam is None:
            bench.notes.append("broker CPU not measured: no beam.smp process found on this machine")
        bench.prepare(phases)
        jobs = [j for j in bench.round_jobs() if j.phase in phases]
        rss = [j for j in bench.rss_jobs() if j.phase in phases]
        log(f"{len(jobs)} measurements × {rounds} round(s), then {len(rss)} peak-RSS runs")
        recover = partial(broker.wait_up, 120)
        outcomes = run_jobs(jobs, rounds, recover) | run_jobs(rss, 1, recover)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        broker.close()
        shutil.rmtree(HERE / "work" / "runs", ignore_errors=True)

    rows = [summarize(job, outcomes[job.key]) for job in [*jobs, *rss]]
    rows.sort(key=lambda r: r.phase)
    meta = {
        "command": shlex.join(sys.orig_argv),
        "cwd": os.getcwd(),
        "date": date,
        "runtime_s": time.monotonic() - started,
        "quick": plan.quick,
        "rounds": rounds,
        "plan": asdict(plan),
        "machine": machine,
    }
    write_outputs(
        HERE / "results" / ("quick" if plan.quick else ""), meta, rows, judge(rows, plan) + bench.notes
    )
    broken = [r for r in rows if r.error]
    if broken:
        log(f"{len(broken)} measurement(s) broke: {', '.join(r.key for r in broken)}")
    return 1 if broken else 0


def write_outputs(out: Path, meta: dict[str, Any], rows: list[Row], notes: list[str]) -> None:
    """results.md, results.json and results.png in ``out``; the markdown also to stdout."""
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(meta, rows, notes)
    (out / "results.md").write_text(text)
    write_json(out / "results.json", meta, rows, notes)
    n = meta["plan"]["publish_rows"]
    write_png(out / "results.png", rows, f"confirmed publish rate, {n:,} messages, {meta['date'][:10]}", n)
    print(text)
    log(f"wrote {out.relative_to(HERE.parent)}/results.md, results.json, results.png")


if __name__ == "__main__":
    sys.exit(main())
