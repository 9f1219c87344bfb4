"""`--retry-errors`: rows answered with a temporary error go again, and end ok when it passes."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import polars as pl
import pytest

from bulk_import.emulator.profiles import TEMPORARY_FAILURE
from tests.helpers import Queues, assert_every_row_accounted, emulator, run_cli, status_counts

pytestmark = pytest.mark.broker

ROWS = 2_000
CODE = str(TEMPORARY_FAILURE)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "c.csv"
    pl.DataFrame({"email": [f"u{i}@example.com" for i in range(ROWS)], "n": range(ROWS)}).write_csv(path)
    return path


def run(data: Path, queues: Queues, *extra: str) -> tuple[int, str, dict[str, int], dict[str, object]]:
    summary = data.with_name("s.json")
    done = run_cli("run", data, "--db", "1", *queues.args(), "--summary", summary, *extra)
    counts = status_counts(assert_every_row_accounted(ROWS, data.with_name("c.results.csv")))
    return done.returncode, done.stderr, counts, orjson.loads(summary.read_bytes())


def stand_in_errors(output: str) -> int:
    """Error replies the stand-in sent, from the counts it prints on exit."""
    found = re.findall(r"\berrors=(\d+)", output)
    assert found, output
    return int(found[-1])


def test_a_temporary_error_that_passes_ends_ok(data: Path, queues: Queues) -> None:
    """A fifth of the rows fail once: without retries they stay error; with them every row is ok."""
    with emulator(queues, "--error", "0.2", "--error-times", "1", "--seed", "4"):
        code, _, counts, doc = run(data, queues)
    assert code == 1
    assert 300 < counts["error"] < 500, counts
    assert doc["retried"] == 0
    with emulator(queues, "--error", "0.2", "--error-times", "1", "--seed", "4") as emu:
        code, err, counts, doc = run(data, queues, "--retry-errors", f"999,{CODE}", "--retry-backoff", "0.2")
    assert code == 0, err
    assert counts == {"ok": ROWS}
    failed = stand_in_errors(emu.output)
    assert 300 < failed < 500
    assert doc["retried"] == failed
    assert (
        f"{failed} rows were answered with error {CODE}, 999: sending them again in 0s (retry 1 of 3)" in err
    )
    assert "retry 2 of" not in err


def test_attempts_run_out_and_the_rows_stay_error(data: Path, queues: Queues) -> None:
    with emulator(queues, "--error", "0.1", "--error-times", "5", "--seed", "2"):
        code, err, counts, doc = run(
            data, queues, "--retry-errors", CODE, "--retry-attempts", "2", "--retry-backoff", "0"
        )
    assert code == 1, err
    assert counts["error"] > 100
    assert doc["retried"] == 2 * counts["error"]
    assert "(retry 2 of 2)" in err and "(retry 3 of" not in err


def test_resume_sends_the_rows_an_earlier_attempt_ended_with_those_codes(data: Path, queues: Queues) -> None:
    """An unfinished run (replies dropped) with errors: --resume --retry-errors sends both kinds."""
    with emulator(queues, "--error", "0.1", "--drop", "0.05", "--seed", "9"):
        code, _, counts, _ = run(data, queues, "--reply-timeout", "2")
    assert code == 4
    assert counts["error"] > 100 and counts["no_reply"] > 50, counts
    with emulator(queues):
        code, err, counts, _ = run(data, queues, "--resume", "--retry-errors", CODE)
    assert code == 0, err
    assert counts == {"ok": ROWS}
    assert "rows answered with error" in err
