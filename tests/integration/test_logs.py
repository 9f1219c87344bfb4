"""What a cron job's log holds: stamped text lines, or one JSON object a line with the counts."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.helpers import Queues, cli, emulator

pytestmark = pytest.mark.broker

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d ")


def as_cron(log: Path, *args: str | Path) -> int:
    """``bulk-import ARGS < /dev/null > log 2>&1``."""
    with log.open("wb") as out:
        done = subprocess.run(
            cli(*args), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=300, check=False,
            env=dict(os.environ),
        )  # fmt: skip
    return done.returncode


def test_every_line_of_a_cron_log_is_stamped(
    samples: dict[str, Path], queues: Queues, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    with emulator(queues):
        code = as_cron(
            log, "run", samples["20k.parquet"], "--db", "1", *queues.args(), "--results", tmp_path / "r.csv"
        )
    assert code == 0, log.read_text()
    lines = log.read_text().splitlines()
    assert len(lines) >= 3
    assert [line for line in lines if not STAMP.match(line)] == []
    assert "\x1b" not in log.read_text()  # no terminal codes in a file


@pytest.mark.parametrize("workers", ["1", "2"])
def test_json_logs_are_one_object_a_line_with_the_counts(
    samples: dict[str, Path], queues: Queues, tmp_path: Path, workers: str
) -> None:
    log = tmp_path / "log"
    args = ["--db", "1", *queues.args(), "--results", tmp_path / "r.csv", "--log-format", "json"]
    with emulator(queues):
        code = as_cron(log, "run", samples["20k.parquet"], *args, "--workers", workers)
    assert code == 0, log.read_text()
    events = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    for event in events:
        assert {"timestamp", "level", "logger", "event"} <= event.keys(), event
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", event["timestamp"])
    summary = next(e for e in events if "counts" in e)
    assert summary["counts"]["ok"] == 20_000 and summary["rows"] == 20_000
    assert summary["exit_code"] == 0 and summary["run_id"] in summary["event"]
    assert next(e for e in events if "results" in e)["results"] == str(tmp_path / "r.csv")
    if workers == "2":
        assert {e.get("worker") for e in events} >= {"worker 1/2", "worker 2/2"}


def test_a_refused_input_is_a_json_error_line(tmp_path: Path) -> None:
    log = tmp_path / "log"
    assert as_cron(log, "run", tmp_path / "missing.csv", "--db", "1", "--log-format", "json") == 2
    [event] = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert event["level"] == "error" and event["exit_code"] == 2
    assert event["event"] == f"error: {tmp_path / 'missing.csv'}: no such file"
