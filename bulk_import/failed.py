"""The morning-after file: the rows that did not go through, as the input had them, to send again.

``report --failed`` joins the rows of a results file that are not ``ok`` with the input's own rows
(its columns, their types in Parquet, their text in CSV) and adds what became of each in
``bulk_import_*`` columns, which ``run`` never sends. After a fix, the night's command run on that
file imports exactly those rows, as they were. The input is read a batch at a time, so memory
grows with the failed rows' outcomes, not with the file.
"""

from __future__ import annotations

import codecs
import contextlib
import glob
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from .config import RESERVED_PREFIX
from .errors import InputError
from .messages import ROW
from .reader import Source, detect_format, open_source
from .results import local_failures, read_results, replacing

#: What the results file says of a row, and the column it takes in the failed file.
OUTCOME_COLUMNS = {
    "row": f"{RESERVED_PREFIX}row",
    "status": f"{RESERVED_PREFIX}status",
    "error": f"{RESERVED_PREFIX}error",
    "error_text": f"{RESERVED_PREFIX}error_text",
}
_OUTCOME = list(OUTCOME_COLUMNS.values())[1:]
_RESULTS_SUFFIXES = (".results.csv", ".results.parquet")


def input_of(results: Path) -> Path:
    """The file a run read, found beside its results file when that has the default name.

    ``contacts.parquet`` is written ``contacts.results.csv``: the input is the one file beside it
    named ``contacts.<something>`` that the tool reads.
    """
    stem = next((results.name[: -len(s)] for s in _RESULTS_SUFFIXES if results.name.endswith(s)), None)
    if stem is None:
        raise InputError(f"{results}: not a default results name, so its input is unknown; pass --input FILE")
    found = []
    for path in sorted(results.parent.glob(f"{glob.escape(stem)}.*")):
        if path.stem != stem or not path.is_file() or path.name.endswith(_RESULTS_SUFFIXES):
            continue
        with contextlib.suppress(InputError):
            detect_format(path)
            found.append(path)
    if len(found) != 1:
        what = f"{len(found)} files could be it ({', '.join(p.name for p in found)})" if found else "no file"
        raise InputError(f"{results}: {what} beside it named {stem}.*; pass --input FILE")
    return found[0]


def write_failed_rows(
    results: Path, input_path: Path, out: Path, *, delimiter: str = ",", encoding: str = "utf-8"
) -> int:
    """Write the input's rows that are not ok in ``results`` to ``out``, with their outcome; how many.

    A file of API calls gives the failed lines as they were (JSON lines, no outcome columns).
    """
    failed = _failed_outcomes(results)
    source = open_source(input_path, delimiter=delimiter, encoding=encoding)
    if any(c.startswith(RESERVED_PREFIX) for c in source.columns):
        raise InputError(
            f"{input_path}: already has {RESERVED_PREFIX}* columns (a failed file): give the night's input"
        )
    frames = _joined(source, failed)
    with local_failures(f"the failed rows' file {out}", "nothing was written"), replacing(out) as temporary:
        if source.file_format == "jsonl":
            _write_lines(frames, temporary)
        elif out.suffix.lower() in (".parquet", ".pq"):
            _write_parquet(frames, temporary, out)
        else:
            tab = out.suffix.lower() == ".tsv"
            _write_csv(frames, temporary, "\t" if tab else source.delimiter, source.encoding)
    return failed.height


def _failed_outcomes(results: Path) -> pl.DataFrame:
    """``row, status, error, error_text`` of the rows not ok, in row order."""
    scan = read_results(results).filter(pl.col("status") != "ok")
    return (
        scan.select(
            pl.col("row").cast(pl.Int64),
            pl.col("status"),
            pl.col("error").cast(pl.Int64, strict=False),
            pl.col("error_text"),
        )
        .sort("row")
        .collect()
    )


def _joined(source: Source, failed: pl.DataFrame) -> Iterator[pl.DataFrame]:
    """The input's failed rows with their outcome, a batch at a time (none when no row failed)."""
    rows = failed["row"]
    last = rows[-1] if len(rows) else -1
    seen, yielded = 0, False
    empty = pl.DataFrame(schema=dict.fromkeys(source.columns, pl.String))
    for batch in source.batches():
        empty = batch.head(0)
        first, end = batch[ROW][0], batch[ROW][-1] + 1
        seen = end
        lo, hi = rows.search_sorted(first, "left"), rows.search_sorted(end, "left")
        if hi > lo:
            outcome = failed.slice(lo, hi - lo).rename(OUTCOME_COLUMNS)
            picked = batch.join(outcome, left_on=ROW, right_on=OUTCOME_COLUMNS["row"], how="inner")
            yield picked.select(*source.columns, pl.col(ROW).alias(OUTCOME_COLUMNS["row"]), *_OUTCOME)
            yielded = True
        if end > last:
            break
    if seen <= last:
        raise InputError(
            f"{source.path}: has {seen} rows, but the results name row {last}: not the file of that run"
        )
    if not yielded:  # a header (or a schema) all the same
        outcome = failed.head(0).rename(OUTCOME_COLUMNS)
        yield pl.concat([empty.select(source.columns), outcome], how="horizontal")


def _write_csv(frames: Iterator[pl.DataFrame], path: Path, delimiter: str, encoding: str) -> None:
    """CSV in the input's separator and encoding, so the night's options read it again."""
    encoder = codecs.getincrementalencoder(encoding)()
    with path.open("wb") as fh:
        header = True
        for frame in frames:
            fh.write(encoder.encode(frame.write_csv(separator=delimiter, include_header=header)))
            header = False
        fh.write(encoder.encode("", final=True))


def _write_parquet(frames: Iterator[pl.DataFrame], path: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as folder:
        parts = []
        for i, frame in enumerate(frames):
            parts.append(Path(folder) / f"{i:06}.parquet")
            frame.write_parquet(parts[-1])
        if parts:
            pl.scan_parquet(parts).sink_parquet(path)
        else:
            pl.DataFrame().write_parquet(path)


def _write_lines(frames: Iterator[pl.DataFrame], path: Path) -> None:
    with path.open("wb") as fh:
        for frame in frames:
            fh.write(b"".join(line.encode() + b"\n" for line in frame["line"]))
