"""What the integration and fault tests share: queues, the stand-in, the CLI run as a user runs it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiormq
import orjson
import polars as pl

from bulk_import.reconcile import STATUSES
from bulk_import.results import COLUMNS

AMQP_URL = os.environ.get("BULK_IMPORT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
RESULT_COLUMNS = list(COLUMNS)


@dataclass(frozen=True)
class Queues:
    """A request and a reply queue of one test's own."""

    request: str
    result: str

    @classmethod
    def fresh(cls) -> Queues:
        tag = uuid.uuid4().hex[:10]
        return cls(f"t_{tag}_import", f"t_{tag}_result")

    def args(self) -> list[str]:
        return ["--queue", self.request, "--result-queue", self.result]

    @property
    def api(self) -> tuple[str, str]:
        """The test's own api_req and api_resp."""
        return f"{self.request}_api", f"{self.result}_api"

    def api_args(self) -> list[str]:
        return ["--api-queue", self.api[0], "--api-result-queue", self.api[1]]


async def _queue_op(
    op: str, *names: str, url: str = AMQP_URL, arguments: dict[str, object] | None = None
) -> list[tuple[int, int]]:
    connection = await aiormq.connect(url)
    counts: list[tuple[int, int]] = []
    try:
        for name in names:
            channel = await connection.channel()
            try:
                if op == "declare":
                    ok = await channel.queue_declare(name, durable=True, arguments=arguments)  # type: ignore[arg-type]
                    counts.append((ok.message_count or 0, ok.consumer_count or 0))
                elif op == "count":
                    ok = await channel.queue_declare(name, passive=True)
                    counts.append((ok.message_count or 0, ok.consumer_count or 0))
                elif op == "delete":
                    await channel.queue_delete(name)
            except aiormq.exceptions.ChannelNotFoundEntity:
                counts.append((-1, -1))
            finally:
                if not channel.is_closed:
                    await channel.close()
    finally:
        await connection.close()
    return counts


def declare(*names: str, arguments: dict[str, object] | None = None) -> None:
    asyncio.run(_queue_op("declare", *names, arguments=arguments))


def delete(*names: str) -> None:
    asyncio.run(_queue_op("delete", *names))


def queue_state(name: str) -> tuple[int, int]:
    """(messages, consumers) of a queue; (-1, -1) if it does not exist."""
    return asyncio.run(_queue_op("count", name))[0]


def publish(queue: str, bodies: list[bytes], url: str = AMQP_URL) -> None:
    """Put messages on a queue the plain way (persistent, confirmed)."""

    async def go() -> None:
        connection = await aiormq.connect(url)
        channel = await connection.channel()
        for body in bodies:
            await channel.basic_publish(
                body,
                routing_key=queue,
                properties=aiormq.spec.Basic.Properties(delivery_mode=2),
            )
        await connection.close()

    asyncio.run(go())


def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "bulk_import", *map(str, args)]


def run_cli(
    *args: str | Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``bulk-import ARGS`` in a child process, as cron would."""
    return subprocess.run(
        cli(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


class Emulator:
    """``bulk-import emulate`` running in a child process on a test's queues."""

    def __init__(self, queues: Queues, *args: str | Path) -> None:
        self.queues = queues
        self.proc = subprocess.Popen(
            cli("emulate", *queues.args(), *queues.api_args(), "--declare", *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.output = ""

    def wait_ready(self, timeout: float = 30) -> Emulator:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the emulator exited: {self.proc.communicate()}")
            _, consumers = queue_state(self.queues.request)
            if consumers > 0:
                return self
            time.sleep(0.1)
        raise RuntimeError("the emulator did not start consuming")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self.output = out + err
        return self.output


@contextmanager
def emulator(queues: Queues, *args: str | Path) -> Iterator[Emulator]:
    emu = Emulator(queues, *args).wait_ready()
    try:
        yield emu
    finally:
        emu.stop()


def read_results(path: Path) -> pl.DataFrame:
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    return pl.read_csv(path, infer_schema=False).with_columns(pl.col("row").cast(pl.Int64))


def assert_every_row_accounted(input_rows: int, results: Path) -> pl.DataFrame:
    """The results file has each input row exactly once, in order, with one documented status."""
    frame = read_results(results)
    assert frame.columns == RESULT_COLUMNS
    assert frame.height == input_rows
    assert frame["row"].to_list() == list(range(input_rows))
    assert set(frame["status"].unique().to_list()) <= set(STATUSES)
    assert frame["status"].null_count() == 0
    return frame


def status_counts(frame: pl.DataFrame) -> dict[str, int]:
    counted = frame.group_by("status").len()
    return dict(zip(counted["status"].to_list(), counted["len"].to_list(), strict=True))


def replies_recorded(results: Path) -> int:
    """Rows with a reply in the run's journal, or in its workers' journals (``--workers``)."""
    journals = [results.with_name(results.name + ".journal")]
    journals += results.with_name(results.name + ".workers").glob("*.journal")
    count = 0
    for journal in journals:
        with contextlib.suppress(FileNotFoundError):
            data = (journal / "replies.ndjson").read_bytes()
            # A line is one row, or a batch's rows (first and count, or listed); a half-written last
            # line is not counted.
            for line in data.split(b"\n")[:-1]:
                doc = orjson.loads(line)
                row = doc.get("row")
                count += doc["count"] if row is None else len(row) if isinstance(row, list) else 1
    return count


def dry_run_doc(data: Path, *args: str) -> tuple[int, str, dict[str, Any]]:
    """``run DATA --db 1 --dry-run ARGS`` in this process: its exit code, output and summary."""
    from click.testing import CliRunner

    from bulk_import.cli import cli as command

    summary = data.with_name(f"{data.name}.dry-run.json")
    got = CliRunner().invoke(
        command, ["run", str(data), "--db", "1", "--dry-run", "--summary", str(summary), *args]
    )
    doc = orjson.loads(summary.read_bytes()) if summary.exists() else {}
    return got.exit_code, got.output, doc
