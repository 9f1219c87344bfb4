"""Batched import (--via api) under the faults the per-message path survives."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import polars as pl
import pytest

from tests.faults import broker_control
from tests.faults.test_faults import ROWS, accounted, exited, when_replies_reach
from tests.helpers import Queues, cli, emulator, run_cli, status_counts

pytestmark = [pytest.mark.broker, pytest.mark.faults]
TOKEN = "t0ken-for-faults"


def run_args(data: Path, queues: Queues, results: Path, *extra: str) -> list[str | Path]:
    return [
        "run", data, "--db", "1", *queues.args(), *queues.api_args(), "--via", "api", "--token", TOKEN,
        "--results", results, "--batch-size", "200", "--max-pending", "2000", *extra,
    ]  # fmt: skip


@pytest.fixture
def data(samples: dict[str, Path]) -> Path:
    return samples["20k.parquet"]


def third_of_the_way(data: Path, queues: Queues, results: Path) -> subprocess.Popen[str]:
    """A batched run started, once a third of its rows are answered."""
    proc = subprocess.Popen(
        cli(*run_args(data, queues, results)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    when_replies_reach(results, ROWS // 3, proc)
    return proc


def test_sigkill_then_resume_in_batches(data: Path, queues: Queues, tmp_path: Path) -> None:
    results = tmp_path / "r.csv"
    with emulator(queues, "--token", TOKEN):
        proc = third_of_the_way(data, queues, results)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        done = run_cli(*run_args(data, queues, results, "--resume"))
    assert exited(done) == 0, done.stderr
    assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}


def test_connections_closed_mid_batched_run(data: Path, queues: Queues, tmp_path: Path) -> None:
    results = tmp_path / "r.csv"
    with emulator(queues, "--token", TOKEN):
        proc = third_of_the_way(data, queues, results)
        broker_control.close_all_connections()
        _, err = proc.communicate(timeout=600)
    assert exited(proc) == 0, err
    assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}


def test_sigkill_then_resume_a_file_of_calls(queues: Queues, tmp_path: Path) -> None:
    """`api --requests`: a killed run goes on with --resume; every call ends answered once."""
    calls = tmp_path / "calls.jsonl"
    body = '{"request":"api/v1.1/profiles/import","body":{"db_id":1,"matching":"email","email":"c%d@example.com","data":{}}}'
    calls.write_text("".join(body % i + "\n" for i in range(ROWS)))
    results = tmp_path / "calls.results.csv"
    argv = ["api", "--requests", calls, *queues.api_args(), "--token", TOKEN, "--max-pending", "2000"]
    with emulator(queues, "--token", TOKEN):
        proc = subprocess.Popen(cli(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        when_replies_reach(results, ROWS // 3, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        done = run_cli(*argv, "--resume")
    assert exited(done) == 0, done.stderr
    frame = pl.read_csv(results, infer_schema=False)
    assert frame["row"].to_list() == [str(i) for i in range(ROWS)]
    assert status_counts(frame) == {"ok": ROWS}
    assert frame["request_id"].n_unique() == ROWS
