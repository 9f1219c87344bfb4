"""Hostile input stays input: odd line ends, thousands of columns, control characters in keys.

Each case runs the real CLI against the real broker and the stand-in, on queues of its own, and
checks that the results file accounts for every row once, with the status the row deserves.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from bulk_import.sample import write_sample
from tests.faults.test_faults import accounted, exited, received
from tests.helpers import Queues, emulator, run_cli, status_counts

pytestmark = [pytest.mark.broker, pytest.mark.faults]

ROWS = 2_000


def run(data: Path, queues: Queues, results: Path, *extra: str) -> tuple[int | None, str, int]:
    """``bulk-import run`` of ``data`` with the stand-in answering: exit code, stderr, requests taken."""
    with emulator(queues) as emu:
        done = run_cli("run", data, "--db", "1", *queues.args(), "--results", results, *extra)
    return exited(done), done.stderr, received(emu)


@pytest.fixture
def contacts(tmp_path: Path) -> pl.DataFrame:
    """Sample contacts as text, with a note in each row that holds \\r\\n and a lone \\r."""
    path = tmp_path / "contacts.csv"
    write_sample(ROWS, path, seed=3)
    frame = pl.read_csv(path, infer_schema=False)
    return frame.with_columns(note=pl.format("line one\r\nline {} two\rend", pl.col("CRM_ID")))


def csv_bytes(frame: pl.DataFrame, ends: list[bytes]) -> bytes:
    """``frame`` as CSV, every cell quoted, record ``i`` (the header is 0) ending in ``ends[i % len]``."""

    def cell(value: str | None) -> str:
        return "" if value is None else '"' + value.replace('"', '""') + '"'

    records = [frame.columns, *frame.iter_rows()]
    return b"".join(
        ",".join(map(cell, record)).encode() + ends[i % len(ends)] for i, record in enumerate(records)
    )


@pytest.mark.parametrize("ends", [[b"\r"], [b"\n", b"\r\n", b"\r"]], ids=["cr", "mixed"])
def test_old_mac_and_mixed_line_ends(
    contacts: pl.DataFrame, ends: list[bytes], queues: Queues, tmp_path: Path
) -> None:
    """Lines ending in \\r alone, or in \\n, \\r\\n and \\r by turns: every row sent as it was, all ok."""
    data = tmp_path / "ends.csv"
    data.write_bytes(csv_bytes(contacts, ends))
    results = tmp_path / "r.csv"
    code, err, intake = run(data, queues, results)
    assert code == 0, err
    frame = accounted(ROWS, results)
    assert status_counts(frame) == {"ok": ROWS}
    assert frame["key"].to_list() == contacts["email"].to_list()
    assert intake == ROWS


def test_five_thousand_columns(queues: Queues, tmp_path: Path) -> None:
    """A 5,000-column export, hundreds of rows in several blocks: every row sent and answered ok."""
    rows, columns = 600, 5_000
    i = pl.int_range(0, rows, dtype=pl.Int64)
    cells = [
        pl.when((i + j) % 7 != 0).then(pl.format("{}-{}", i, j)).alias(f"q{j}") for j in range(1, columns)
    ]
    frame = pl.select(pl.format("wide{}@example.com", i).alias("email"), *cells)
    data = tmp_path / "wide.csv"
    frame.write_csv(data)
    assert data.stat().st_size > 2 * (3 << 20), "the file should span several blocks"
    results = tmp_path / "r.csv"
    code, err, intake = run(data, queues, results)
    assert code == 0, err
    assert status_counts(accounted(rows, results)) == {"ok": rows}
    assert intake == rows


def test_nul_in_an_email_key(contacts: pl.DataFrame, queues: Queues, tmp_path: Path) -> None:
    """Emails holding a NUL are rejected with the reason, never sent; the other rows are ok; exit 1."""
    poisoned = pl.int_range(0, ROWS) % 10 == 3
    frame = contacts.with_columns(
        email=pl.when(poisoned).then(pl.col("email").str.replace("@", "\x00@")).otherwise("email")
    )
    data = tmp_path / "nul.csv"
    data.write_bytes(csv_bytes(frame, [b"\n"]))
    results = tmp_path / "r.csv"
    code, err, intake = run(data, queues, results)
    assert code == 1, err
    out = accounted(ROWS, results)
    bad = ROWS // 10
    assert status_counts(out) == {"ok": ROWS - bad, "rejected": bad}
    rejected = out.filter(pl.col("status") == "rejected")
    assert rejected["row"].to_list() == list(range(3, ROWS, 10))
    assert set(rejected["error_text"].to_list()) == {"NUL character in email"}
    assert intake == ROWS - bad
