"""`bulk-import run --workers N`: worker processes share the rows, one results file comes out."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from tests.helpers import (
    Queues,
    assert_every_row_accounted,
    cli,
    emulator,
    queue_state,
    replies_recorded,
    run_cli,
    status_counts,
)

pytestmark = pytest.mark.broker


@pytest.mark.parametrize(("name", "workers"), [("20k.parquet", 2), ("small.csv", 3)])
def test_workers_share_the_rows_into_one_results_file(
    name: str, workers: int, samples: dict[str, Path], queues: Queues, tmp_path: Path
) -> None:
    """Every row once, all ok, one run id; the workers' parts and journals are cleaned up."""
    rows = 20_000 if name == "20k.parquet" else 500
    results, summary = tmp_path / "out.results.csv", tmp_path / "s.json"
    with emulator(queues):
        done = run_cli(
            "run", samples[name], "--db", "1", *queues.args(), "--workers", str(workers),
            "--results", results, "--summary", summary,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    frame = assert_every_row_accounted(rows, results)
    assert status_counts(frame) == {"ok": rows}
    doc = orjson.loads(summary.read_bytes())
    assert frame["feedback_id"].to_list() == [f"{doc['run_id']}-{r}" for r in range(rows)]
    assert doc["rows"] == rows and doc["exit_code"] == 0 and doc["foreign_replies"] == 0
    for k in range(1, workers + 1):
        assert f"[worker {k}/{workers}]" in done.stderr
    assert not (tmp_path / "out.results.csv.workers").exists()
    assert queue_state(queues.result)[0] == 0


def test_sigterm_then_resume_with_workers(samples: dict[str, Path], queues: Queues, tmp_path: Path) -> None:
    """A stopped coordinator stops its workers and keeps their journals; --resume finishes every row,
    and resuming with another number of workers is refused."""
    results = tmp_path / "out.results.csv"
    args = [
        "run",
        samples["20k.parquet"],
        "--db",
        "1",
        *queues.args(),
        "--results",
        results,
        "--workers",
        "2",
    ]
    with emulator(queues, "--delay", "0.5"):
        proc = subprocess.Popen(cli(*args, "--max-pending", "1024"), stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while replies_recorded(results) < 2000:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 4, err
        assert (tmp_path / "out.results.csv.workers").is_dir()
        other = run_cli(*args[:-1], "3", "--resume")
        assert other.returncode == 2, other.stderr
        assert "another number of --workers" in other.stderr
        done = run_cli(*args, "--resume")
    assert done.returncode == 0, done.stderr
    frame = assert_every_row_accounted(20_000, results)
    assert status_counts(frame) == {"ok": 20_000}
    assert not (tmp_path / "out.results.csv.workers").exists()


def test_no_broker_leaves_nothing_to_resume(samples: dict[str, Path], tmp_path: Path) -> None:
    """Nothing listening: exit 3, and no workers' folder that a next run would take for a crash."""
    results = tmp_path / "out.results.csv"
    args = ["run", samples["small.csv"], "--db", "1", "--workers", "2", "--results", results]
    done = run_cli(*args, "--amqp-url", "amqp://guest:guest@127.0.0.1:1/")
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.results.csv.workers").exists()
