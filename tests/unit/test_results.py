"""The results file from a journal and the ledger: every row once, in order, built range by range."""

from __future__ import annotations

import errno
import io
import os
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulk_import import journal as journal_module
from bulk_import import results
from bulk_import.errors import LocalError
from bulk_import.journal import Journal
from bulk_import.messages import Answers, Reply
from bulk_import.reconcile import ANSWERED, CONFIRMED, FAILED, REJECTED, Ledger, final_status

STATES = [REJECTED, CONFIRMED, FAILED, ANSWERED]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    states=st.lists(st.sampled_from(STATES), max_size=60),
    batch=st.integers(1, 9),
    range_rows=st.integers(1, 16),
    seed=st.integers(0, 1000),
    suffix=st.sampled_from([".csv", ".parquet"]),
    workers=st.sampled_from([None, 3]),
)
def test_every_row_once_in_order_whatever_the_ranges(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    states: list[int],
    batch: int,
    range_rows: int,
    seed: int,
    suffix: str,
    workers: int | None,
) -> None:
    """Replies in any order, some twice, read back in small blocks; ranges cut across key batches."""
    monkeypatch.setattr(results, "RANGE_ROWS", range_rows)
    monkeypatch.setattr(journal_module, "REPLY_BLOCK_BYTES", 200)
    folder = tmp_path_factory.mktemp("run")
    journal = Journal.open(folder / "r.journal", {}, resume=False, run_id="run1")
    n = len(states)
    for first in range(0, n, batch):
        rows = list(range(first, min(n, first + batch)))
        reasons = ["bad key" if states[r] == REJECTED else None for r in rows]
        keys = pl.DataFrame({"row": rows, "key": [f"k{r}" for r in rows], "reason": reasons})
        journal.record_keys(first, keys.cast({"row": pl.Int64, "reason": pl.String}))
    answered = [r for r in range(n) if states[r] == ANSWERED]
    order = answered + random.Random(seed).sample(answered, len(answered) // 2)
    random.Random(seed).shuffle(order)
    for r in order:
        journal.record_reply(r, Reply(f"run1-{r}", r % 3, f"text {r}", "email", f"p{r}"))
    journal.sync(force=True)
    ledger = Ledger(state=bytearray(states))
    shard = None if workers is None else (1, workers)
    out = folder / f"out{suffix}"
    counts = results.write_run_results(journal, ledger, n, out, shard)

    got = pl.read_parquet(out) if suffix == ".parquet" else pl.read_csv(out)
    assert got.columns == list(results.COLUMNS)
    expected_rows = [r for r in range(n) if shard is None or r % shard[1] == shard[0]]
    assert got["row"].to_list() == expected_rows
    assert {k: v for k, v in counts.items() if v} == dict(Counter(got["status"].to_list()))
    for line in got.iter_rows(named=True):
        r, state = line["row"], states[line["row"]]
        assert line["status"] == final_status(state, r % 3 if state == ANSWERED else None)
        assert line["key"] == f"k{r}"
        if state == ANSWERED:
            assert (line["error"], line["error_text"], line["profile_id"]) == (r % 3, f"text {r}", f"p{r}")
        else:
            assert line["error"] is None and line["profile_id"] is None
        assert line["feedback_id"] == (None if state == REJECTED else f"run1-{r}")
    journal.close()


def test_an_empty_run_writes_the_header(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "r.journal", {}, resume=False)
    out = tmp_path / "out.csv"
    results.write_run_results(journal, Ledger(), 0, out)
    assert out.read_text().strip() == ",".join(results.COLUMNS)
    journal.close()


def test_parts_of_workers_merge_in_row_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of interleaved rows become one file in row order, ranges smaller than a part included."""
    monkeypatch.setattr(results, "RANGE_ROWS", 4)
    n, workers = 23, 3
    frame = pl.DataFrame(
        {c: [f"{c}{r}" for r in range(n)] for c in results.COLUMNS}
        | {"row": list(range(n)), "error": [0] * n}
    ).with_columns(status=pl.lit("ok"))
    parts = []
    for k in range(workers):
        parts.append(tmp_path / f"part-{k}.parquet")
        frame.filter(pl.col("row") % workers == k).write_parquet(parts[-1])
    counts = results.merge_parts(parts, tmp_path / "all.csv")
    got = pl.read_csv(tmp_path / "all.csv")
    assert got["row"].to_list() == list(range(n))
    assert got["key"].to_list() == [f"key{r}" for r in range(n)]
    assert counts["ok"] == n


NO_SPACE = "No space left on device (os error 28)"


def _small_run(folder: Path, rows: int = 10) -> tuple[Journal, Ledger]:
    journal = Journal.open(folder / "r.csv.journal", {}, resume=False, run_id="run1")
    keys = pl.DataFrame(
        {"row": list(range(rows)), "key": [f"k{r}" for r in range(rows)], "reason": [None] * rows}
    )
    journal.record_keys(0, keys.cast({"row": pl.Int64, "reason": pl.String}))
    for r in range(rows):
        journal.record_reply(r, Reply(f"run1-{r}", 0, "", "email", f"p{r}"))
    journal.sync(force=True)
    return journal, Ledger(state=bytearray([ANSWERED]) * rows)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_results_file_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    """No room for the results file: one LocalError line (exit 4), no temporary file, the journal kept."""
    journal, ledger = _small_run(tmp_path)
    out = tmp_path / f"r{suffix}"

    def csv_half_written(frame: pl.DataFrame, fh: Any, **_: Any) -> None:
        fh.write(b"row,key\n0,k0\n")
        raise OSError(NO_SPACE)

    def parquet_refused(*_: Any, **__: Any) -> None:
        raise pl.exceptions.ComputeError(
            f"parquet: File out of specification: underlying IO error: {NO_SPACE}"
        )

    monkeypatch.setattr(pl.DataFrame, "write_csv", csv_half_written)
    monkeypatch.setattr(pl.LazyFrame, "sink_parquet", parquet_refused)
    with pytest.raises(LocalError) as failed:
        results.write_run_results(journal, ledger, 10, out)
    assert str(failed.value) == (
        f"cannot write the results file {out}: No space left on device; "
        "the journal is kept: make room, then run again with --resume"
    )
    assert failed.value.exit_code == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv.journal"]
    assert sorted(p.name for p in journal.path.iterdir()) == ["keys", "replies.ndjson", "run.json"]
    monkeypatch.undo()
    assert results.write_run_results(journal, ledger, 10, out)["ok"] == 10
    journal.close()


def test_joining_parts_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = []
    for k in range(2):
        parts.append(tmp_path / f"part-{k}-of-2.parquet")
        pl.DataFrame(
            {c: ["x"] for c in results.COLUMNS} | {"row": [k], "error": [0], "status": ["ok"]}
        ).write_parquet(parts[-1])

    def full(*_: Any, **__: Any) -> None:
        raise OSError(NO_SPACE)

    monkeypatch.setattr(pl.DataFrame, "write_csv", full)
    with pytest.raises(LocalError, match=r"No space left on device; .* run again with --resume --workers 2$"):
        results.merge_parts(parts, tmp_path / "all.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-0-of-2.parquet", "part-1-of-2.parquet"]


def test_other_failures_are_not_taken_for_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal, ledger = _small_run(tmp_path)

    def bug(*_: Any, **__: Any) -> None:
        raise pl.exceptions.SchemaError("a column of the wrong type")

    monkeypatch.setattr(pl.DataFrame, "write_csv", bug)
    with pytest.raises(pl.exceptions.SchemaError):
        results.write_run_results(journal, ledger, 10, tmp_path / "r.csv")
    journal.close()


def test_journal_writes_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each journal write that the disk refuses is a LocalError naming the file and the OS's reason."""
    journal, _ = _small_run(tmp_path)

    def keys_refused(*_: Any, **__: Any) -> None:
        raise pl.exceptions.ComputeError(f"parquet: underlying IO error: {NO_SPACE}")

    with monkeypatch.context() as m:
        m.setattr(pl.DataFrame, "write_parquet", keys_refused)
        with pytest.raises(LocalError) as failed:
            journal.record_keys(10, pl.DataFrame({"row": [10], "key": ["k"], "reason": [None]}))
    target = journal.keys_dir / "000000000010.parquet"
    assert str(failed.value) == f"cannot write the run's journal ({target}): No space left on device"
    assert sorted(p.name for p in journal.keys_dir.iterdir()) == ["000000000000.parquet"]

    class FullFile(io.BytesIO):
        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    replies = journal._replies
    journal._replies = FullFile()
    expected = f"cannot write the run's journal ({journal.replies_path}): No space left on device"
    with pytest.raises(LocalError, match=re.escape(expected)):
        journal.record_reply(11, Reply("run1-11", 0, "", "email", "p"))
    journal._dirty = True
    with pytest.raises(LocalError, match=re.escape(expected)):
        journal.sync(force=True)
    journal._replies = replies
    journal.close()


def test_resume_takes_replies_for_rows_any_earlier_attempt_read(tmp_path: Path) -> None:
    """The rows read before bound the rows an earlier attempt may have sent, over every attempt."""
    path = tmp_path / "r.csv.journal"
    keys = pl.DataFrame({"row": list(range(20)), "key": ["k"] * 20, "reason": [None] * 20}).cast(
        {"row": pl.Int64, "reason": pl.String}
    )
    first = Journal.open(path, {}, resume=False, run_id="run1")
    assert first.sent_before == 0
    first.record_keys(0, keys.head(10))
    first.record_keys(10, keys.tail(10))
    first.close()
    second = Journal.open(path, {}, resume=True)
    assert second.sent_before == 20
    assert list(second.keys_dir.iterdir()) == []
    second.record_keys(0, keys.head(5))
    second.close()
    third = Journal.open(path, {}, resume=True)
    assert third.sent_before == 20
    third.close()


def test_a_journal_of_single_rows_and_batches_reads_as_a_row_each(tmp_path: Path) -> None:
    """A reply of one row is a line of values, a batch's a line of columns; both read back."""
    journal = Journal.open(tmp_path / "j", {"input": "x"}, resume=False)
    old = b'{"row":0,"error":0,"error_text":"ok","matching_field":"email","profile_id":"p0"}\n'
    journal.replies_path.write_bytes(old)
    journal.record_replies(Answers([1, 2], [1, 2], ["t1", "t2"], ["p1", "p2"], "email", "run1-1-2"))
    journal.record_reply(3, Reply("run1-3", 0, "", "email", "p3"))
    journal.record_replies(Answers(range(4, 7), [0] * 3, ["ok"] * 3, ["p4", "p5", "p6"], "email", "run1-4-3"))
    journal.close()
    # A batch's line of lists, as earlier versions wrote them, reads back too.
    with journal.replies_path.open("ab") as fh:
        fh.write(b'{"row":[8,7],"error":[0,0],"error_text":["",""],"matching_field":["email","email"],')
        fh.write(b'"profile_id":["p8","p7"],"request_id":"run1-7-2"}\n')
    got = pl.concat(list(journal.reply_blocks())).sort("row")
    assert got["row"].to_list() == list(range(9))
    assert got["profile_id"].to_list() == [f"p{r}" for r in range(9)]
    assert got["request_id"].to_list() == [
        None,
        "run1-1-2",
        "run1-1-2",
        None,
        *["run1-4-3"] * 3,
        *["run1-7-2"] * 2,
    ]
    assert got["error"].to_list() == [0, 1, 2, 0, 0, 0, 0, 0, 0]
    assert got["error_text"].to_list()[4:7] == ["ok"] * 3 and set(got["matching_field"]) == {"email"}
    assert b'"first":4,"count":3,"error":0,"error_text":"ok"' in journal.replies_path.read_bytes()


def test_replies_read_back_in_the_order_they_were_recorded(tmp_path: Path) -> None:
    """Lines of one row and lines of a batch interleaved come back in the journal's order, so a row
    sent again alone after its batch (or in a batch after alone) ends with its latest reply."""
    journal = Journal.open(tmp_path / "j", {"input": "x"}, resume=False)
    journal.record_reply(5, Reply("run1-5", 503, "busy", "email", ""))
    journal.record_replies(Answers([4, 5], [503, 0], ["busy", ""], ["", "p5"], "email", "run1-4-2"))
    journal.record_reply(4, Reply("run1-4", 0, "", "email", "p4"))
    journal.close()
    got = pl.concat(list(journal.reply_blocks()))
    assert list(zip(got["row"], got["error"], strict=True)) == [(5, 503), (4, 503), (5, 0), (4, 0)]
    latest = got.unique("row", keep="last", maintain_order=True).sort("row")
    assert latest["profile_id"].to_list() == ["p4", "p5"]


def test_a_row_sent_again_has_its_latest_reply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--retry-errors: the reply recorded last wins, across the journal's blocks and many of them."""
    monkeypatch.setattr(journal_module, "REPLY_BLOCK_BYTES", 200)
    journal, ledger = _small_run(tmp_path, rows=12)
    for attempt in (1, 2, 3):
        for r in (3, 7):
            error = 503 if attempt < 3 or r == 7 else 0
            journal.record_reply(r, Reply(f"run1-{r}", error, f"try {attempt}", "email", f"p{r}"))
    journal.sync(force=True)
    assert journal.rows_last_answered_with(frozenset({503})) == [7]
    assert journal.rows_last_answered_with(frozenset({1})) == []
    ledger = Ledger(state=bytearray([ANSWERED]) * 12)
    results.write_run_results(journal, ledger, 12, tmp_path / "r.csv")
    got = pl.read_csv(tmp_path / "r.csv")
    assert got["error_text"][3] == "try 3" and got["status"][3] == "ok"
    assert got["error_text"][7] == "try 3" and got["status"][7] == "error"
    assert got["status"].to_list().count("ok") == 11


def test_reopen_takes_back_answered_rows_only() -> None:
    ledger = Ledger(state=bytearray([ANSWERED, REJECTED, CONFIRMED, ANSWERED]), answered=2)
    assert ledger.reopen([0, 1, 2, 3, 40]) == 2
    assert ledger.answered == 0
    assert list(ledger.state) == [0, REJECTED, CONFIRMED, 0]
