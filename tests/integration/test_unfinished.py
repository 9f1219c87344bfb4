"""The night after an unfinished one: what was left is described, kept, and cron can decide."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pytest

from tests.helpers import Queues, assert_every_row_accounted, emulator, run_cli, status_counts

pytestmark = pytest.mark.broker

ROWS = 2_000


def export(path: Path, suffix: str = "") -> None:
    pl.DataFrame(
        {"email": [f"u{i}@example.com" for i in range(ROWS)], "city": [f"c{i}{suffix}" for i in range(ROWS)]}
    ).write_csv(path)


def unfinished_night(data: Path, queues: Queues) -> dict[str, int]:
    """A run that ends with replies missing (exit 4): its journal stays."""
    with emulator(queues, "--drop", "0.2", "--seed", "5"):
        done = run_cli("run", data, "--db", "1", *queues.args(), "--reply-timeout", "2")
    assert done.returncode == 4, done.stderr
    return status_counts(assert_every_row_accounted(ROWS, data.with_name("c.results.csv")))


def test_a_new_export_over_an_unfinished_run_is_described_and_auto_restarts_it(
    queues: Queues, tmp_path: Path
) -> None:
    data = tmp_path / "c.csv"
    export(data)
    night = unfinished_night(data, queues)
    plain = run_cli("run", data, "--db", "1", *queues.args())
    assert plain.returncode == 2
    assert f"{night['ok']} rows answered, {data} is unchanged): pass --resume" in plain.stderr
    time.sleep(0.01)
    export(data, "-new")  # the next night's export, under the same name
    again = run_cli("run", data, "--db", "1", *queues.args())
    assert again.returncode == 2
    assert f"{data} has changed since (a new export?)" in again.stderr
    with emulator(queues):
        auto = run_cli("run", data, "--db", "1", *queues.args(), "--on-unfinished", "auto")
    assert auto.returncode == 0, auto.stderr
    assert "--on-unfinished auto restarts it" in auto.stderr
    assert status_counts(assert_every_row_accounted(ROWS, tmp_path / "c.results.csv")) == {"ok": ROWS}
    [partial] = list(tmp_path.glob("c.results.*.partial.csv"))
    kept = pl.read_csv(partial)
    assert kept.height == night["ok"]
    assert kept["status"].unique().to_list() == ["ok"]
    assert f"the rows the unfinished run answered are kept in {partial}" in auto.stderr


def test_auto_resumes_the_same_export(queues: Queues, tmp_path: Path) -> None:
    data = tmp_path / "c.csv"
    export(data)
    unfinished_night(data, queues)
    with emulator(queues):
        auto = run_cli("run", data, "--db", "1", *queues.args(), "--on-unfinished", "auto")
    assert auto.returncode == 0, auto.stderr
    assert "--on-unfinished auto resumes it" in auto.stderr
    assert status_counts(assert_every_row_accounted(ROWS, tmp_path / "c.results.csv")) == {"ok": ROWS}
    assert not list(tmp_path.glob("*.partial.csv"))
