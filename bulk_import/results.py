"""The results file: one row per input row, in input order, with what became of it.

Built by polars from the journal (each batch's keys, the recorded replies) and the ledger's row
states, written to a temporary file in the same folder and renamed, so a reader never sees half a
file. Columns: ``row, key, feedback_id, status, error, error_text, matching_field, profile_id``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .errors import InputError
from .journal import Journal
from .reconcile import ANSWERED, STATUSES, UNANSWERED_STATUS, Ledger

COLUMNS = (
    "row",
    "key",
    "feedback_id",
    "status",
    "error",
    "error_text",
    "matching_field",
    "profile_id",
)


def default_results_path(input_path: Path) -> Path:
    return input_path.with_name(f"{input_path.stem}.results.csv")


def results_frame(
    journal: Journal, ledger: Ledger, rows: int, shard: tuple[int, int] | None = None
) -> pl.LazyFrame:
    """The results as a lazy frame, sorted by row; only the shard's rows with ``shard``."""
    key_files = sorted(journal.keys_dir.glob("*.parquet"))
    keys = (
        pl.scan_parquet(key_files)
        if key_files
        else pl.LazyFrame(schema={"row": pl.Int64, "key": pl.String, "reason": pl.String})
    )
    states = pl.LazyFrame(
        {"row": pl.int_range(0, rows, dtype=pl.Int64, eager=True), "state": _states(ledger, rows)}
    )
    if shard is not None:
        states = states.filter(pl.col("row") % shard[1] == shard[0])
    replies = journal.read_replies().unique("row", keep="first", maintain_order=False)
    unanswered = pl.col("state").replace_strict(UNANSWERED_STATUS, default=None, return_dtype=pl.String)
    status = (
        pl.when(pl.col("state") == ANSWERED)
        .then(pl.when(pl.col("error") == 0).then(pl.lit("ok")).otherwise(pl.lit("error")))
        .otherwise(unanswered)
    )
    sent = pl.col("state") != 1
    return (
        states.join(keys.select("row", "key", "reason"), on="row", how="left")
        .join(replies, on="row", how="left")
        .with_columns(
            feedback_id=pl.when(sent).then(pl.lit(f"{journal.run_id}-") + pl.col("row").cast(pl.String)),
            status=status,
            error=pl.when(pl.col("state") == ANSWERED).then(pl.col("error")),
            error_text=pl.when(pl.col("state") == ANSWERED)
            .then(pl.col("error_text"))
            .otherwise(pl.col("reason")),
        )
        .select(COLUMNS)
        .sort("row")
    )


def _states(ledger: Ledger, rows: int) -> pl.Series:
    state = ledger.state[:rows]
    if len(state) < rows:
        state = state + bytes(rows - len(state))
    return pl.Series("state", state, dtype=pl.UInt8)


def write_results(frame: pl.LazyFrame, path: Path) -> None:
    """Write CSV, or Parquet for a ``.parquet`` path, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame.sink_parquet(tmp)
        else:
            frame.sink_csv(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def count_statuses(path: Path) -> dict[str, int]:
    """Rows per status in a results file."""
    scan = pl.scan_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pl.scan_csv(path)
    counted = scan.group_by("status").len().collect()
    return dict(zip(counted["status"].to_list(), counted["len"].to_list(), strict=True))


@dataclass(frozen=True)
class ResultsReport:
    """What a results file says, for ``bulk-import report``."""

    rows: int
    counts: dict[str, int]
    #: ``(status, error, error_text, rows)`` of the rows not ok, commonest first.
    problems: list[tuple[str, str, str, int]]


def read_results(path: Path) -> pl.LazyFrame:
    """A results file written by a run, checked to be one (an :class:`InputError` otherwise)."""
    if not path.is_file():
        raise InputError(f"{path}: no such results file")
    parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        scan = pl.scan_parquet(path) if parquet else pl.scan_csv(path, infer_schema=False)
        names = scan.collect_schema().names()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{path}: cannot be read: {str(exc).splitlines()[0]}") from None
    if names != list(COLUMNS):
        raise InputError(f"{path}: not a results file (its columns are {', '.join(names[:10])})")
    return scan.with_columns(pl.col("error").cast(pl.String))


def report_results(path: Path, top: int = 10) -> ResultsReport:
    scan = read_results(path)
    counts = dict.fromkeys(STATUSES, 0) | count_statuses(path)
    problems = (
        scan.filter(pl.col("status") != "ok")
        .group_by("status", "error", "error_text")
        .len()
        .sort(
            ["len", "status", "error", "error_text"], descending=[True, False, False, False], nulls_last=True
        )
        .head(top)
        .collect()
    )
    return ResultsReport(
        rows=sum(counts.values()),
        counts=counts,
        problems=[(s, e or "", t or "", n) for s, e, t, n in problems.iter_rows()],
    )


def write_failed(path: Path, out: Path) -> int:
    """The rows of a results file that are not ok, written to ``out``; how many."""
    failed = read_results(path).filter(pl.col("status") != "ok")
    write_results(failed, out)
    return sum(count_statuses(out).values())
