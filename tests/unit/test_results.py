"""The results file from a journal and the ledger: every row once, in order, built range by range."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulk_import import journal as journal_module
from bulk_import import results
from bulk_import.journal import Journal
from bulk_import.messages import Reply
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
