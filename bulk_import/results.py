"""The results file: one row per input row, in input order, with what became of it.

Built by polars from the journal (each batch's keys, the recorded replies) and the ledger's row
states, written to a temporary file in the same folder and renamed, so a reader never sees half a
file. Columns: ``row, key, feedback_id, status, error, error_text, matching_field, profile_id``; of a
file of API calls ``row, request, request_id, status, error, error_text, response``.
When it cannot be written (disk full), no temporary file is left, the journal is kept, and a
:class:`~.errors.LocalError` says so in one line: ``--resume`` writes it once there is room.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .errors import InputError, LocalError
from .journal import REPLY_SCHEMA, Journal, cannot_write, keys_end, recorded_journals
from .messages import SKIPPED_REASON
from .protocols import CALL_COLUMNS, IMPORT_COLUMNS
from .reconcile import ANSWERED, REJECTED, SKIPPED, STATUSES, UNANSWERED_STATUS, Ledger

#: The columns of an import's results file.
COLUMNS = IMPORT_COLUMNS


def named(columns: Mapping[str, str]) -> list[pl.Expr]:
    """The run's columns picked and named for a results file (the run's name → the file's)."""
    return [pl.col(run).alias(name) for run, name in columns.items()]


def default_results_path(input_path: Path) -> Path:
    return input_path.with_name(f"{input_path.stem}.results.csv")


#: Rows of the results file built at once: what writing it holds in memory, whatever the run's size.
RANGE_ROWS = 1 << 15
#: A journal of at most this many blocks of replies is read into memory, not spilled to disk.
IN_MEMORY_BLOCKS = 2
#: States of rows that never went out: they have no feedback id.
NEVER_SENT = (REJECTED, SKIPPED)
_KEYS_SCHEMA = pl.Schema({"row": pl.Int64(), "key": pl.String(), "reason": pl.String()})


def write_run_results(
    journal: Journal,
    ledger: Ledger,
    rows: int,
    path: Path,
    shard: tuple[int, int] | None = None,
    columns: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """The results file of a run (only the shard's rows with ``shard``), a range of rows at a time;
    the rows per status. ``columns`` picks and names the columns (the run's name → the file's).

    Replies are recorded in arrival order, so they are first spilled to Parquet files by range;
    each range then joins its states, keys and replies and is appended to the file in row order.
    """
    with (
        local_failures(
            f"the results file {path}", "the journal is kept: make room, then run again with --resume"
        ),
        tempfile.TemporaryDirectory(dir=journal.path, prefix="results-") as folder,
    ):
        spill = Path(folder)
        blocks = journal.reply_blocks()
        held = list(itertools.islice(blocks, IN_MEMORY_BLOCKS + 1))
        # A journal of a few blocks (a small run) is split in memory; a larger one through the disk.
        small = len(held) <= IN_MEMORY_BLOCKS
        in_memory = _by_range(pl.concat(held)) if small and held else {}
        for i, block in enumerate(() if small else itertools.chain(held, blocks)):
            for index, part in _by_range(block).items():
                part.write_parquet(spill / f"{index}-{i:08}.parquet")
        key_files = sorted(journal.keys_dir.glob("*.parquet"))
        firsts = [int(f.stem) for f in key_files]
        ends = [*firsts[1:], rows]

        def replies_of(index: int) -> pl.LazyFrame:
            if index in in_memory:
                return in_memory[index].lazy()
            files = sorted(spill.glob(f"{index}-*.parquet"))
            return pl.scan_parquet(files) if files else pl.LazyFrame(schema=REPLY_SCHEMA)

        def ranges() -> Iterator[pl.DataFrame]:
            for start in range(0, rows, RANGE_ROWS):
                end = min(rows, start + RANGE_ROWS)
                keys = [f for f, a, b in zip(key_files, firsts, ends, strict=True) if a < end and b > start]
                replies = replies_of(start // RANGE_ROWS)
                frame = _range_frame(journal.run_id, ledger, start, end, keys, replies, shard)
                yield frame.select(named(shown))

        shown = columns or dict(zip(COLUMNS, COLUMNS, strict=True))
        return write_frames(ranges(), path, list(shown.values()))


def _by_range(block: pl.DataFrame) -> dict[int, pl.DataFrame]:
    """A block of replies split by the range of rows each falls in, in the order recorded."""
    ranged = block.with_columns(_range=pl.col("row") // RANGE_ROWS)
    return {
        index: part.drop("_range") for (index,), part in ranged.partition_by("_range", as_dict=True).items()
    }


def _range_frame(
    run_id: str,
    ledger: Ledger,
    start: int,
    end: int,
    key_files: list[Path],
    replies: pl.LazyFrame,
    shard: tuple[int, int] | None,
) -> pl.DataFrame:
    """The results of rows ``start`` to ``end``."""
    keys = pl.scan_parquet(key_files) if key_files else pl.LazyFrame(schema=_KEYS_SCHEMA)
    state = bytes(ledger.state[start:end]).ljust(end - start, b"\0")
    states = pl.LazyFrame(
        {
            "row": pl.int_range(start, end, dtype=pl.Int64, eager=True),
            "state": pl.Series(state, dtype=pl.UInt8),
        }
    )
    if shard is not None:
        states = states.filter(pl.col("row") % shard[1] == shard[0])
    in_range = pl.col("row").is_between(start, end, closed="left")
    unanswered = pl.col("state").replace_strict(UNANSWERED_STATUS, default=None, return_dtype=pl.String)
    answered = pl.col("state") == ANSWERED
    return (
        states.join(keys.filter(in_range).select("row", "key", "reason"), on="row", how="left")
        # A row sent again (--retry-errors) has its latest reply, the one recorded last.
        .join(replies.unique("row", keep="last", maintain_order=True), on="row", how="left")
        .with_columns(
            # An API request's id names the rows it carried; a database_import reply's, its row.
            feedback_id=pl.when(~pl.col("state").is_in(NEVER_SENT)).then(
                pl.coalesce("request_id", pl.lit(f"{run_id}-") + pl.col("row").cast(pl.String))
            ),
            status=pl.when(answered)
            .then(pl.when(pl.col("error") == 0).then(pl.lit("ok")).otherwise(pl.lit("error")))
            .otherwise(unanswered),
            error=pl.when(answered).then(pl.col("error")),
            error_text=pl.when(answered).then(pl.col("error_text")).otherwise(pl.col("reason")),
        )
        .drop("state", "reason", "request_id")
        .sort("row")
        .collect(engine="in-memory")  # a range is small: the streaming engine's buffers cost more
    )


def keep_partial_results(recorded: Path, results_path: Path) -> list[Path]:
    """Before ``--restart`` discards an unfinished run: its answered and rejected rows, in a file
    of their own beside the results (``<stem>.<run id>.partial<suffix>``, one per worker's journal).

    Rows read but without a reply are left out: whether they went out is not known.
    """
    journals = recorded_journals(recorded)
    kept: list[Path] = []
    for journal in journals:
        answered = journal.answered_rows()
        keys = sorted(journal.keys_dir.glob("*.parquet"))
        rows = max(int(answered.max()) + 1 if len(answered) else 0, keys_end(journal.keys_dir))  # type: ignore[arg-type]
        if not rows:
            continue
        ledger = Ledger(state=bytearray(rows))
        ledger.reject(_rejected_rows(keys))
        for row in answered.to_list():
            ledger.state[row] = ANSWERED
        part = "" if len(journals) == 1 else f".{len(kept) + 1}"
        out = results_path.with_name(
            f"{results_path.stem}.{journal.run_id}{part}.partial{results_path.suffix}"
        )
        columns = CALL_COLUMNS if journal.identity.get("via") == "calls" else None
        with tempfile.TemporaryDirectory(dir=results_path.parent, prefix=".partial-") as tmp:
            whole = Path(tmp) / f"all{results_path.suffix}"
            write_run_results(journal, ledger, rows, whole, columns=columns)
            known = read_results(whole).filter(pl.col("status").is_in(["ok", "error", "rejected"]))
            write_results(known, out)
        kept.append(out)
    return kept


def _rejected_rows(keys: list[Path]) -> list[int]:
    if not keys:
        return []
    reason = pl.col("reason")
    refused = reason.is_not_null() & ~reason.str.starts_with(SKIPPED_REASON)
    return pl.scan_parquet(keys).filter(refused).select("row").collect()["row"].to_list()


def merge_parts(parts: list[Path], path: Path) -> dict[str, int]:
    """One results file from the parts of ``--workers``, a range at a time; the rows per status.

    Part *k* holds rows *k*, *k + n*, *k + 2n*... in order, so the same positions of every part
    hold one range of rows: each range is sorted alone, and memory stays bounded.
    """
    scans = [pl.scan_parquet(p).select(COLUMNS) for p in parts]
    longest = max((s.select(pl.len()).collect().item() for s in scans), default=0)
    step = max(1, RANGE_ROWS // len(parts))
    kept = f"the workers' parts are kept: make room, then run again with --resume --workers {len(parts)}"
    with local_failures(f"the results file {path}", kept):
        return write_frames(
            (
                pl.concat([s.slice(at, step) for s in scans]).sort("row").collect()
                for at in range(0, longest, step)
            ),
            path,
        )


@contextlib.contextmanager
def local_failures(what: str, then: str) -> Iterator[None]:
    """A failure of the file system (disk full) while writing ``what`` as one line, saying ``then``."""
    try:
        yield
    except (OSError, pl.exceptions.PolarsError) as exc:
        error = cannot_write(what, exc)
        if error is None:
            raise
        raise LocalError(f"{error}; {then}") from exc


def write_frames(
    frames: Iterable[pl.DataFrame], path: Path, columns: Sequence[str] = COLUMNS
) -> dict[str, int]:
    """Frames one after another into one file, CSV or Parquet by the suffix, atomically; the rows
    per status, counted on the way (reading a large file back would cost more memory)."""
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    frames = _counted(frames, counts)
    if _is_parquet(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as folder:
            pieces = []
            for i, frame in enumerate(frames):
                pieces.append(Path(folder) / f"{i:06d}.parquet")
                frame.write_parquet(pieces[-1])
            write_results(pl.scan_parquet(pieces) if pieces else _empty(columns).lazy(), path)
        return counts
    with replacing(path) as tmp, tmp.open("wb") as fh:
        header = True
        for frame in frames:
            frame.write_csv(fh, include_header=header)
            header = False
        if header:
            _empty(columns).write_csv(fh)
    return counts


def _counted(frames: Iterable[pl.DataFrame], counts: dict[str, int]) -> Iterator[pl.DataFrame]:
    for frame in frames:
        for status, n in frame["status"].value_counts().iter_rows():
            counts[status] += n
        yield frame


def _empty(columns: Sequence[str]) -> pl.DataFrame:
    return pl.DataFrame(schema=dict.fromkeys(columns, pl.String) | {"row": pl.Int64, "error": pl.Int64})


def write_results(frame: pl.LazyFrame, path: Path) -> None:
    """Write CSV, or Parquet for a ``.parquet`` path, atomically (streamed: no sort here)."""
    with replacing(path) as tmp:
        if _is_parquet(path):
            frame.sink_parquet(tmp)
        else:
            frame.sink_csv(tmp)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` that replaces it once written: no reader sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def count_statuses(path: Path) -> dict[str, int]:
    """Rows per status in a results file."""
    scan = pl.scan_parquet(path) if _is_parquet(path) else pl.scan_csv(path)
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
    parquet = _is_parquet(path)
    try:
        scan = pl.scan_parquet(path) if parquet else pl.scan_csv(path, infer_schema=False)
        names = scan.collect_schema().names()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{path}: cannot be read: {str(exc).splitlines()[0]}") from None
    if names not in (list(COLUMNS), list(CALL_COLUMNS.values())):
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
