"""Read a CSV or Parquet file in batches, each row numbered from 0 in file order.

Memory stays bounded whatever the file size: Parquet is read as row slices, CSV as byte blocks cut
only at a newline outside quotes, each parsed by polars on its own. CSV cells stay strings (no lost
leading zeros or long ids) unless the caller asks for a type.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import polars as pl

from .config import FileFormat
from .errors import InputError
from .messages import ROW

T = TypeVar("T")

#: ~45k rows of a typical export: big enough for polars to be fast, small enough for ≤ 250 MB.
CSV_BLOCK_BYTES = 4 << 20
BOM = b"\xef\xbb\xbf"

TYPES: Mapping[str, pl.DataType] = {
    "str": pl.String(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
    "date": pl.Date(),
    "datetime": pl.Datetime(),
}


def detect_format(path: Path, forced: FileFormat | None = None) -> FileFormat:
    if forced is not None:
        return forced
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise InputError(f"{path}: cannot tell the format from {suffix or 'no extension'!r}; use --format")


@dataclass
class Source:
    """An input file, checked at open: readable, of its format, with named columns."""

    path: Path
    file_format: FileFormat
    columns: list[str]
    batch_rows: int = 50_000
    types: Mapping[str, str] = field(default_factory=dict)
    delimiter: str = ","

    @property
    def total_rows(self) -> int | None:
        """The row count when the format tells it without reading (Parquet), else None."""
        if self.file_format != "parquet":
            return None
        return int(
            _polars_call(self.path, lambda: pl.scan_parquet(self.path).select(pl.len()).collect().item())
        )

    def batches(self, start_row: int = 0) -> Iterator[pl.DataFrame]:
        """Frames of consecutive rows with the row number in column ``__row``."""
        if self.file_format == "parquet":
            yield from self._parquet_batches(start_row)
        else:
            yield from self._csv_batches(start_row)

    def _parquet_batches(self, start_row: int) -> Iterator[pl.DataFrame]:
        scan = pl.scan_parquet(self.path)
        total = self.total_rows or 0
        for offset in range(start_row, total, self.batch_rows):
            frame = _polars_call(self.path, partial(_slice, scan, offset, self.batch_rows))
            yield frame.with_row_index(ROW, offset=offset).with_columns(pl.col(ROW).cast(pl.Int64))

    def _csv_batches(self, start_row: int) -> Iterator[pl.DataFrame]:
        row = 0
        with self.path.open("rb") as fh:
            header = _read_header(fh, self.path)
            for block in _csv_blocks(fh, self.path):
                frame = self._parse_csv(header + block, row)
                if frame.columns[1:] != self.columns:
                    raise InputError(f"{self.path}: the columns changed inside the file near row {row}")
                row += frame.height
                if row <= start_row:
                    continue
                if frame[ROW][0] < start_row:
                    frame = frame.filter(pl.col(ROW) >= start_row)
                yield frame

    def _parse_csv(self, data: bytes, first_row: int) -> pl.DataFrame:
        overrides = {c: TYPES[t] for c, t in self.types.items()}
        frame = _polars_call(
            self.path,
            lambda: pl.read_csv(
                io.BytesIO(data),
                infer_schema=False,
                separator=self.delimiter,
                schema_overrides=overrides or None,
                raise_if_empty=False,
            ),
            where=f" near row {first_row}",
        )
        return frame.with_row_index(ROW, offset=first_row).with_columns(pl.col(ROW).cast(pl.Int64))


def open_source(
    path: Path,
    file_format: FileFormat | None = None,
    *,
    batch_rows: int = 50_000,
    types: Mapping[str, str] | None = None,
    delimiter: str = ",",
) -> Source:
    """Check the file can be read and learn its columns, before anything is sent."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file")
    fmt = detect_format(path, file_format)
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from None
    for column, type_name in (types or {}).items():
        if type_name not in TYPES:
            raise InputError(f"unknown type {type_name!r} for {column}; use one of {', '.join(TYPES)}")
    if fmt == "parquet":
        if head != b"PAR1":
            raise InputError(f"{path}: not a Parquet file")
        schema = _polars_call(path, lambda: pl.scan_parquet(path).collect_schema())
        columns = schema.names()
    else:
        with path.open("rb") as fh:
            header = _read_header(fh, path)
        columns = _header_names(path, header, delimiter)
    if not columns:
        raise InputError(f"{path}: has no columns")
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise InputError(f"{path}: duplicate column names {', '.join(dupes)}")
    return Source(path, fmt, columns, batch_rows, dict(types or {}), delimiter)


def _polars_call(path: Path, call: Callable[[], T], where: str = "") -> T:
    """Run a polars read, turning its errors into one line a user can act on."""
    try:
        return call()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{path}: cannot be read{where}: {_first_line(exc)}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read{where}: {exc.strerror or exc}") from None


def _slice(scan: pl.LazyFrame, offset: int, length: int) -> pl.DataFrame:
    return scan.slice(offset, length).collect()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    if "more fields than defined" in message:
        return "a row has more fields than the header"
    if "utf-8" in message.lower():
        return "it is not valid UTF-8 text"
    return message


def _header_names(path: Path, header: bytes, delimiter: str) -> list[str]:
    """Column names as written (polars would rename duplicates, which hides a user's mistake)."""
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: the header is not valid UTF-8 text") from None
    return next(csv.reader(io.StringIO(text), delimiter=delimiter), [])


def _read_header(fh: io.BufferedReader, path: Path) -> bytes:
    """The first record, through its newline; an empty file is an error."""
    first = fh.readline()
    if first.startswith(BOM):
        first = first[len(BOM) :]
    while first.count(b'"') % 2:
        more = fh.readline()
        if not more:
            break
        first += more
    if not first.strip():
        raise InputError(f"{path}: is empty")
    return first if first.endswith(b"\n") else first + b"\n"


def _csv_blocks(fh: io.BufferedReader, path: Path) -> Iterator[bytes]:
    """Blocks of whole records: each cut at the last newline that is outside quotes."""
    carry = b""
    while True:
        chunk = fh.read(CSV_BLOCK_BYTES)
        data = carry + chunk
        if not chunk:
            if data.strip():
                yield data if data.endswith(b"\n") else data + b"\n"
            return
        cut = _last_record_end(data)
        if cut < 0:
            carry = data
            continue
        carry = data[cut:]
        if cut:
            yield data[:cut]


def _last_record_end(data: bytes) -> int:
    """Index just past the last newline with an even number of quotes before it, or -1."""
    quotes = data.count(b'"')
    end = len(data)
    while True:
        pos = data.rfind(b"\n", 0, end)
        if pos < 0:
            return -1
        quotes -= data.count(b'"', pos, end)
        if quotes % 2 == 0:
            return pos + 1
        end = pos
