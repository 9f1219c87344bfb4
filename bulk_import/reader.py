r"""Read a CSV or Parquet file in batches, each row numbered from 0 in file order.

Memory stays bounded whatever the file size: Parquet is read as row slices, CSV as byte blocks cut
only at a newline outside quotes, each parsed by polars on its own. CSV lines may end in ``\n``,
``\r\n`` or a lone ``\r``; outside quotes the blocks have them as ``\n``. CSV cells stay strings
(no lost leading zeros or long ids) unless the caller asks for a type.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import gzip
import io
import itertools
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import polars as pl
import zstandard

from .config import BATCH_ROWS, FileFormat
from .errors import InputError
from .messages import CELL_ERROR, ROW

T = TypeVar("T")

#: ~33k rows of a typical export: big enough for polars to be fast, small enough for ≤ 250 MB.
CSV_BLOCK_BYTES = 3 << 20
#: A run's first batch is this small (a CSV's first block an eighth of the others): its first
#: messages go out, and the platform starts on them, while the rest of the file is read.
FIRST_BATCH_ROWS = 4096
#: The first read for the header; each further one is twice the last.
HEADER_READ = 64 << 10
BOM = b"\xef\xbb\xbf"
_QUOTE_OR_LINE_END = re.compile(rb'["\r\n]')
_LONE_CR = re.compile(rb"\r(?!\n)")

TYPES: Mapping[str, pl.DataType] = {
    "str": pl.String(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
    "date": pl.Date(),
    "datetime": pl.Datetime(),
}


class _BadRecord(Exception):
    """A block polars could not parse: which of its records is wrong (0: the first after the
    header) when it can be told, what polars said, and the records before it."""

    def __init__(self, index: int | None, reason: str, before: pl.DataFrame | None = None) -> None:
        super().__init__(reason)
        self.index, self.reason = index, reason
        #: The block's records before the bad one, read.
        self.before = before


def _bad_record(block: bytes, delimiter: str, columns: int) -> int | None:
    """The first record of ``block`` (a header and whole records) that is not UTF-8 or does not
    have ``columns`` fields; only read when polars has refused the block."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = block[: exc.start].decode("utf-8", "replace") + "x"  # the record holding the byte
        return sum(1 for _ in csv.reader(io.StringIO(before), delimiter=delimiter)) - 2
    for index, record in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter)):
        if len(record) != columns:
            return index - 1
    return None


def _record_end(data: bytes, records: int) -> int:
    r"""Index just past the ``\n`` that ends record ``records`` (0: the header) outside quotes."""
    quoted, seen = False, -1
    for found in re.finditer(rb'["\n]', data):
        if found.group() == b'"':
            quoted = not quoted
        elif not quoted:
            seen += 1
            if seen == records:
                return found.end()
    return len(data)


#: Compressed CSV by extension, read as a stream.
COMPRESSIONS = (".gz", ".zst")


def _plain_suffix(path: Path) -> str:
    """The file's extension under a compression's (``contacts.csv.gz``: ``.csv``)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


class _Utf8(io.RawIOBase):
    """A text file of another encoding as UTF-8 bytes: the reader cuts blocks on bytes."""

    def __init__(self, text: io.TextIOWrapper) -> None:
        self._text = text
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = self._text.read(1 << 20)
            if not chunk:
                return 0
            self._pending = chunk.encode("utf-8")
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._text.close()
        super().close()


def open_text(path: Path, encoding: str = "utf-8") -> BinaryIO:
    """The file's bytes as UTF-8, decompressed when it ends in ``.gz`` or ``.zst``."""
    raw = _decompressed(path)
    if codecs.lookup(encoding).name == "utf-8":
        return raw
    return io.BufferedReader(_Utf8(io.TextIOWrapper(raw, encoding=encoding, newline="")))


def _decompressed(path: Path) -> BinaryIO:
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if suffix == ".zst":
        zstd = zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True)
        return io.BufferedReader(zstd)
    return path.open("rb")


def detect_format(path: Path, forced: FileFormat | None = None) -> FileFormat:
    if forced is not None:
        return forced
    suffix = _plain_suffix(path)
    if suffix in (".csv", ".txt", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise InputError(f"{path}: cannot tell the format from {suffix or 'no extension'!r}; use --format")


@dataclass
class Source:
    """An input file, checked at open: readable, of its format, with named columns."""

    path: Path
    file_format: FileFormat
    columns: list[str]
    batch_rows: int = BATCH_ROWS
    types: Mapping[str, str] = field(default_factory=dict)
    delimiter: str = ","
    #: The file's text encoding (CSV): anything Python's codecs know (cp1251, latin-1, utf-16).
    encoding: str = "utf-8"
    #: CSV cells read as null (empty): ``--null-value``, and a quoted empty string under ``--nulls skip``.
    null_values: tuple[str, ...] = ()
    #: How ``date`` and ``datetime`` cells are written (strftime's codes), when not ISO 8601.
    formats: Mapping[str, str] = field(default_factory=dict)

    #: Of a plain UTF-8 CSV: the bytes and rows parsed so far, for :meth:`estimated_rows`.
    _done: list[int] = field(default_factory=lambda: [0, 0], init=False, repr=False)

    def estimated_rows(self) -> int | None:
        """A plain UTF-8 CSV's row count, from its size and the rows a byte so far; else None.

        Exact once the file has been read; compressed or transcoded files are not estimated.
        """
        done_bytes, done_rows = self._done
        size = self._plain_size
        if not done_bytes or size is None:
            return None
        return done_rows if done_bytes >= size else round(done_rows * size / done_bytes)

    @functools.cached_property
    def _plain_size(self) -> int | None:
        """The size of a CSV whose bytes are the ones parsed (not compressed, UTF-8)."""
        if self.file_format != "csv" or self.path.suffix.lower() in COMPRESSIONS:
            return None
        if codecs.lookup(self.encoding).name != "utf-8":
            return None
        try:
            return self.path.stat().st_size
        except OSError:
            return None

    @property
    def total_rows(self) -> int | None:
        """The row count when the format tells it without reading (Parquet), else None."""
        if self.file_format != "parquet":
            return None
        return int(
            _polars_call(self.path, lambda: pl.scan_parquet(self.path).select(pl.len()).collect().item())
        )

    def batches(
        self, start_row: int = 0, pool: Executor | None = None, columns: list[str] | None = None
    ) -> Iterator[pl.DataFrame]:
        """Frames of consecutive rows with the row number in column ``__row``.

        With a ``pool`` the next frames are read by its threads while the caller works on this one.
        Only ``columns`` are read when given (and one line's columns are not checked).
        """
        if self.file_format == "parquet":
            yield from self._parquet_batches(start_row, pool, columns)
        elif self.file_format == "jsonl":
            yield from self._line_batches(start_row)
        else:
            yield from self._csv_batches(start_row, pool, columns)

    def _parquet_batches(
        self, start_row: int, pool: Executor | None, columns: list[str] | None
    ) -> Iterator[pl.DataFrame]:
        scan = pl.scan_parquet(self.path)
        if columns is not None:
            scan = scan.select(columns)
        total = self.total_rows or 0
        first = self.batch_rows if columns is not None else min(FIRST_BATCH_ROWS, self.batch_rows)
        starts = [start_row, *range(start_row + first, total, self.batch_rows)] if start_row < total else []
        reads = (
            partial(_parquet_slice, self.path, scan, a, b - a)
            for a, b in itertools.pairwise([*starts, total])
        )
        yield from ahead(pool, reads, depth=1)

    def _csv_batches(
        self, start_row: int, pool: Executor | None, columns: list[str] | None = None
    ) -> Iterator[pl.DataFrame]:
        row = 0
        with open_text(self.path, self.encoding) as fh:
            header, rest = _read_header(fh, self.path)
            first = CSV_BLOCK_BYTES if columns is not None else max(1, CSV_BLOCK_BYTES // 8)
            blocks = _csv_blocks(fh, self.path, rest, first)
            parse = partial(self._parse_csv, columns=columns)
            sizes: deque[int] = deque()

            def calls() -> Iterator[Callable[[], pl.DataFrame]]:
                for block in blocks:
                    sizes.append(len(block))
                    yield partial(parse, header + block)

            parsed = ahead(pool, calls(), depth=1)
            self._done[:] = [len(header), 0]
            while True:
                try:
                    frame = _polars_call(self.path, partial(next, parsed, None), f" near row {row}")
                except _BadRecord as bad:
                    if bad.before is not None and row + bad.before.height > start_row:
                        yield _numbered(bad.before, row).filter(pl.col(ROW) >= start_row)
                    at = f"row {row + bad.index}" if bad.index is not None else f"near row {row}"
                    raise InputError(f"{self.path}: cannot be read at {at}: {bad.reason}") from None
                if frame is None:
                    return
                if columns is None and [c for c in frame.columns if c != CELL_ERROR] != self.columns:
                    raise InputError(f"{self.path}: the columns changed inside the file near row {row}")
                first, row = row, row + frame.height
                if sizes:
                    self._done[0] += sizes.popleft()
                self._done[1] = row
                if row <= start_row:
                    continue
                frame = _numbered(frame, first)
                if first < start_row:
                    frame = frame.filter(pl.col(ROW) >= start_row)
                yield frame

    def _line_batches(self, start_row: int) -> Iterator[pl.DataFrame]:
        """Each line as the text of column ``line`` (a JSON-lines file: no quoting to mind)."""
        row = 0
        with self.path.open("rb") as fh:
            for block in _line_blocks(fh):
                lines = block.split(b"\n")
                first, row = row, row + len(lines)
                if row <= start_row:
                    continue
                texts = _polars_call(
                    self.path,
                    lambda lines=lines: pl.Series("line", lines, pl.Binary).cast(pl.String),  # type: ignore[misc]
                    f" near line {first + 1}",
                )
                frame = _numbered(texts.to_frame(), first)
                yield frame.filter(pl.col(ROW) >= start_row) if first < start_row else frame

    def _parse_csv(self, data: bytes, columns: list[str] | None = None) -> pl.DataFrame:
        """One block of records, its ``--type`` columns converted; a block polars refuses is a
        :class:`_BadRecord` (the caller knows the block's first row)."""
        try:
            frame = pl.read_csv(
                io.BytesIO(data),
                infer_schema=False,
                separator=self.delimiter,
                raise_if_empty=False,
                null_values=list(self.null_values) or None,
                columns=columns,
            )
        except pl.exceptions.PolarsError as exc:
            index = _bad_record(data, self.delimiter, len(self.columns))
            before = None
            if index:  # the records before the bad one are read and sent
                with contextlib.suppress(pl.exceptions.PolarsError):
                    head = data[: _record_end(data, index)]
                    before = converted(
                        pl.read_csv(
                            io.BytesIO(head), infer_schema=False, separator=self.delimiter, columns=columns
                        ),
                        self.types,
                        self.formats,
                    )
            raise _BadRecord(index, _first_line(exc), before) from None
        return converted(frame, self.types, self.formats)


#: What each ``--type`` accepts, said in the reason a cell is refused for.
_TYPE_WORDS: Mapping[str, str] = {
    "int": "an integer",
    "float": "a number",
    "bool": "true, false, 1 or 0",
    "date": "a date (YYYY-MM-DD)",
    "datetime": "a date and time (ISO 8601)",
}
_BOOLS: Mapping[str, bool] = {"true": True, "false": False, "1": True, "0": False}


def _convert(text: pl.Expr, type_name: str, fmt: str | None) -> pl.Expr:
    """The cells of a text column as ``type_name`` (a date's in ``fmt``); null where one does not convert."""
    text = text.str.strip_chars()
    if type_name == "bool":
        return text.str.to_lowercase().replace_strict(_BOOLS, default=None, return_dtype=pl.Boolean)
    if type_name == "date":
        return text.str.to_date(fmt or "%Y-%m-%d", strict=False)
    if type_name == "datetime":
        return text.str.to_datetime(fmt, strict=False, time_unit="us")
    return text.cast(TYPES[type_name], strict=False)


def converted(
    frame: pl.DataFrame, types: Mapping[str, str], formats: Mapping[str, str] | None = None
) -> pl.DataFrame:
    """``frame`` (CSV cells as text) with each ``--type`` column converted, dates and times in
    ``formats`` (by type name, strftime's codes) or ISO 8601. A row with a cell that does not
    convert gets the reason in :data:`~.messages.CELL_ERROR` (the first such cell): the row is
    refused, the others go on."""
    typed = {c: t for c, t in types.items() if t != "str" and c in frame.columns}
    if not typed:
        return frame
    formats = formats or {}
    values = {c: _convert(pl.col(c), t, formats.get(t)) for c, t in typed.items()}

    def wanted(type_name: str) -> str:
        fmt = formats.get(type_name)
        return (
            f"a {type_name.replace('datetime', 'date and time')} ({fmt})" if fmt else _TYPE_WORDS[type_name]
        )

    refused = [
        pl.when(pl.col(c).is_not_null() & values[c].is_null()).then(
            pl.format(f"{c}: {{}} is not {wanted(t)}", pl.col(c).str.slice(0, 60).map_batches(_quoted))
        )
        for c, t in typed.items()
    ]
    return frame.with_columns(
        pl.coalesce(refused).alias(CELL_ERROR), *(v.alias(c) for c, v in values.items())
    )


def first_refused_cell(source: Source) -> tuple[int, str] | None:
    """The first row with a cell that does not convert to its ``--type``, and why (a whole read)."""
    if not source.types:
        return None
    for frame in source.batches():
        if CELL_ERROR in frame.columns:
            bad = frame.filter(pl.col(CELL_ERROR).is_not_null()).head(1)
            if bad.height:
                return int(bad[ROW][0]), str(bad[CELL_ERROR][0])
    return None


def _quoted(texts: pl.Series) -> pl.Series:
    """Each text as a JSON string: a cell's value shown in a reason, quotes and controls escaped."""
    return pl.select(pl.struct(texts.alias("v")).struct.json_encode().str.slice(5).str.head(-1)).to_series()


def ahead(pool: Executor | None, calls: Iterable[Callable[[], T]], depth: int = 2) -> Iterator[T]:
    """The calls' results in order, the next ``depth`` of them running in ``pool`` meanwhile."""
    if pool is None:
        yield from (call() for call in calls)
        return
    running: deque[Future[T]] = deque()
    try:
        for call in calls:
            running.append(pool.submit(call))
            if len(running) > depth:
                yield running.popleft().result()
        while running:
            yield running.popleft().result()
    finally:
        for future in running:
            future.cancel()


def _numbered(frame: pl.DataFrame, first_row: int) -> pl.DataFrame:
    return frame.with_row_index(ROW, offset=first_row).with_columns(pl.col(ROW).cast(pl.Int64))


def _parquet_slice(path: Path, scan: pl.LazyFrame, offset: int, length: int) -> pl.DataFrame:
    return _numbered(_polars_call(path, lambda: scan.slice(offset, length).collect()), offset)


def open_source(
    path: Path,
    file_format: FileFormat | None = None,
    *,
    batch_rows: int = BATCH_ROWS,
    types: Mapping[str, str] | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
    null_values: tuple[str, ...] = (),
    formats: Mapping[str, str] | None = None,
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
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r} (e.g. utf-8, cp1251, latin-1, utf-16)") from None
    if delimiter == "," and _plain_suffix(path) == ".tsv":
        delimiter = "\t"
    for column, type_name in (types or {}).items():
        if type_name not in TYPES:
            raise InputError(f"unknown type {type_name!r} for {column}; use one of {', '.join(TYPES)}")
    if fmt == "jsonl":
        columns = ["line"]
    elif fmt == "parquet":
        if head != b"PAR1":
            raise InputError(f"{path}: not a Parquet file")
        schema = _polars_call(path, lambda: pl.scan_parquet(path).collect_schema())
        columns = schema.names()
    else:
        with open_text(path, encoding) as fh:
            header, _ = _polars_call(path, lambda: _read_header(fh, path), f" as {encoding}")
        columns = _header_names(path, header, delimiter)
    if not columns:
        raise InputError(f"{path}: has no columns")
    dupes = sorted(c for c, times in Counter(columns).items() if times > 1)
    if dupes:
        raise InputError(f"{path}: duplicate column names {', '.join(dupes)}")
    return Source(
        path,
        fmt,
        columns,
        batch_rows,
        dict(types or {}),
        delimiter,
        encoding,
        null_values,
        dict(formats or {}),
    )


def _polars_call(path: Path, call: Callable[[], T], where: str = "") -> T:
    """Run a polars read, turning its errors into one line a user can act on."""
    try:
        return call()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{path}: cannot be read{where}: {_first_line(exc)}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read{where}: {exc.strerror or exc}") from None
    except (UnicodeError, EOFError) as exc:  # a wrong --encoding, a truncated .gz
        raise InputError(f"{path}: cannot be read{where}: {exc}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    if "more fields than defined" in message:
        return "a row has more fields than the header"
    if "utf-8" in message.lower():
        return "it is not valid UTF-8 text (in another encoding? --encoding cp1251, latin-1, utf-16, ...)"
    return message


def _header_names(path: Path, header: bytes, delimiter: str) -> list[str]:
    """Column names as written (polars would rename duplicates, which hides a user's mistake)."""
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: the header is not valid UTF-8 text") from None
    return next(csv.reader(io.StringIO(text), delimiter=delimiter), [])


def _read_header(fh: BinaryIO, path: Path) -> tuple[bytes, bytes]:
    r"""The first record with its line end made ``\n``, and what was read past it.

    An empty file is an error.
    """
    data, size = b"", HEADER_READ
    while (end := _first_record_end(data)) < 0:
        chunk = fh.read(size)
        if not chunk:
            end = len(data)
            break
        data += chunk
        size *= 2  # a header without a line end costs reads in proportion to its size, not its square
    first = _unix_line_ends(data[:end].removeprefix(BOM))
    if not first.strip():
        raise InputError(f"{path}: is empty")
    return (first if first.endswith(b"\n") else first + b"\n"), data[end:]


def _first_record_end(data: bytes) -> int:
    r"""Index just past the first line end outside quotes (``\n``, ``\r\n`` or ``\r``), or -1.

    A ``\r`` that ends ``data`` is no answer yet: it may be the first half of a ``\r\n``.
    """
    quoted = False
    for found in _QUOTE_OR_LINE_END.finditer(data):
        char, pos = found.group(), found.start()
        if char == b'"':
            quoted = not quoted
        elif not quoted:
            if char == b"\n":
                return pos + 1
            if pos + 1 == len(data):
                return -1
            return pos + 2 if data[pos + 1] == ord("\n") else pos + 1
    return -1


def _unix_line_ends(data: bytes) -> bytes:
    r"""``data`` (whole records) with each line end outside quotes a ``\n``: ``\r\n`` or a lone ``\r``.

    Files from old Mac software end lines with ``\r`` alone, and files edited on several systems mix
    the three; polars reads only ``\n`` and ``\r\n``. Quoted cells keep their ``\r`` and ``\n``. Most
    files have no ``\r``, or only in ``\r\n``, and are returned as they are after a search for a lone one.
    """
    if b"\r" not in data or not _LONE_CR.search(data):
        return data
    parts = data.split(b'"')
    # Between the quotes of the file, the even parts are outside quoted cells (a "" inside one is an
    # empty even part, holding nothing to change).
    parts[::2] = [part.replace(b"\r\n", b"\n").replace(b"\r", b"\n") for part in parts[::2]]
    return b'"'.join(parts)


def _csv_blocks(
    fh: BinaryIO, path: Path, carry: bytes = b"", first: int = CSV_BLOCK_BYTES
) -> Iterator[bytes]:
    r"""Blocks of whole records, line ends made ``\n``: each cut at the last newline outside quotes
    (``carry``: what was read of them already; ``first``: the bytes read for the first)."""
    size = first
    while True:
        chunk = fh.read(size)
        size = CSV_BLOCK_BYTES
        data = carry + chunk
        if not chunk:
            data = _unix_line_ends(data)
            if data.strip():
                yield data if data.endswith(b"\n") else data + b"\n"
            return
        # A \r that ends the read may be the first half of a \r\n: it waits for the next read.
        held = b"\r" if data.endswith(b"\r") else b""
        data = _unix_line_ends(data[: len(data) - len(held)])
        cut = _last_record_end(data)
        if cut < 0:
            carry = data + held
            continue
        carry = data[cut:] + held
        if cut:
            yield data[:cut]


def _line_blocks(fh: io.BufferedReader) -> Iterator[bytes]:
    r"""Blocks of whole lines, each without its last ``\n``; a ``\r`` before it is JSON's whitespace."""
    carry = b""
    while chunk := fh.read(CSV_BLOCK_BYTES):
        data = carry + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        carry = data[cut + 1 :]
        yield data[:cut]
    if carry:
        yield carry


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
