"""Reading CSV and Parquet in batches: every row once, in order, cells intact."""

from __future__ import annotations

import csv
import gzip
import io
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulk_import import reader
from bulk_import.errors import InputError
from bulk_import.messages import ROW
from bulk_import.reader import open_source


def read_all(path: Path, **kwargs: object) -> pl.DataFrame:
    source = open_source(path, **kwargs)  # type: ignore[arg-type]
    return pl.concat(list(source.batches()))


def test_csv_cells_stay_text(tmp_path: Path) -> None:
    """Leading zeros, long ids and '+' phones survive: CSV cells are strings unless typed."""
    path = tmp_path / "c.csv"
    path.write_text("email,zip,id,phone\na@b.c,00123,123456789012345678901,+79001234567\n")
    row = read_all(path).row(0, named=True)
    assert row == {
        ROW: 0,
        "email": "a@b.c",
        "zip": "00123",
        "id": "123456789012345678901",
        "phone": "+79001234567",
    }


def test_csv_types_on_request(tmp_path: Path) -> None:
    """--type COLUMN:int reads that column as integers."""
    path = tmp_path / "c.csv"
    path.write_text("email,score\na@b.c,7\n")
    assert read_all(path, types={"score": "int"})["score"].to_list() == [7]


def test_parquet_batches_number_rows(tmp_path: Path) -> None:
    """Parquet is read in slices whose row numbers continue across batches."""
    path = tmp_path / "p.parquet"
    pl.DataFrame({"email": [f"u{i}@x.y" for i in range(25)]}).write_parquet(path)
    source = open_source(path, batch_rows=10)
    batches = list(source.batches())
    assert [b.height for b in batches] == [10, 10, 5]
    assert pl.concat(batches)[ROW].to_list() == list(range(25))


cells = st.text(
    alphabet=st.sampled_from([*'ab ,"\n\r;é中\t', "\u2028"]),
    max_size=12,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(cells, cells), min_size=1, max_size=40), block=st.integers(3, 64))
def test_csv_quirks_across_block_cuts(
    tmp_path: Path, rows: list[tuple[str, str]], block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quoted commas, quotes and newlines survive any block size: blocks cut only outside quotes."""
    monkeypatch.setattr(reader, "CSV_BLOCK_BYTES", block)
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(["email", "note"])
    writer.writerows(rows)
    path = tmp_path / "q.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    with ThreadPoolExecutor(2) as pool:
        got = pl.concat(list(open_source(path).batches(pool=pool)))
    # polars reads an empty quoted cell as an empty string and an empty cell as null.
    assert [(a or "", b or "") for a, b in zip(got["email"], got["note"], strict=True)] == rows
    assert got[ROW].to_list() == list(range(len(rows)))


def csv_text(rows: list[tuple[str, str]], ends: list[str], quote_all: bool) -> str:
    """Rows as CSV, each record ending as ``ends`` says; cells quoted when they must be or always."""

    def cell(value: str) -> str:
        if quote_all or any(c in value for c in ',"\r\n'):
            return '"' + value.replace('"', '""') + '"'
        return value

    return "".join(",".join(map(cell, row)) + end for row, end in zip(rows, ends, strict=True))


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(cells, cells), min_size=1, max_size=30),
    ends=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=31, max_size=31),
    quote_all=st.booleans(),
    block=st.integers(3, 64),
    header_read=st.integers(1, 16),
)
def test_line_ends_of_any_system_across_block_cuts(
    tmp_path: Path,
    rows: list[tuple[str, str]],
    ends: list[str],
    quote_all: bool,
    block: int,
    header_read: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """\\n, \\r\\n and a lone \\r (old Mac files) end records, mixed in one file; quoted \\r and \\n stay."""
    monkeypatch.setattr(reader, "CSV_BLOCK_BYTES", block)
    monkeypatch.setattr(reader, "HEADER_READ", header_read)
    path = tmp_path / "ends.csv"
    path.write_bytes(csv_text([("email", "note"), *rows], ends[: len(rows) + 1], quote_all).encode())
    source = open_source(path)
    assert source.columns == ["email", "note"]
    with ThreadPoolExecutor(2) as pool:
        got = pl.concat(list(source.batches(pool=pool)))
    assert [(a or "", b or "") for a, b in zip(got["email"], got["note"], strict=True)] == rows
    assert got[ROW].to_list() == list(range(len(rows)))


@pytest.mark.parametrize(
    "content",
    [
        b'email,note\ra@b.c,x\rd@e.f,"two\rlines"\rg@h.i,z',
        b'email,note\r\na@b.c,x\rd@e.f,"two\r\nlines"\ng@h.i,z\r\n',
        b'"em\rail",note\r"a@b.c",x\n"d@e.f","two\rlines"\r"g@h.i",z\r',
    ],
    ids=["cr-only", "mixed", "quoted-cr-in-the-header"],
)
def test_cr_and_mixed_line_ends_at_every_cut(
    tmp_path: Path, content: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every block and header read size, so that a cut falls between each \\r and its \\n once."""
    path = tmp_path / "mac.csv"
    path.write_bytes(content)
    for size in range(1, len(content) + 1):
        monkeypatch.setattr(reader, "CSV_BLOCK_BYTES", size)
        monkeypatch.setattr(reader, "HEADER_READ", size)
        got = read_all(path)
        first = got.columns[1]
        assert got.select(first, "note").rows() == [
            ("a@b.c", "x"),
            ("d@e.f", "two\r\nlines" if b"\r\nlines" in content else "two\rlines"),
            ("g@h.i", "z"),
        ], size
    assert open_source(path).columns[0] in ("email", "em\rail")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "no such file"),
        ("empty.csv", b"", "is empty"),
        ("ragged.csv", b"email,a\nx@y.z,1,2\n", "more fields than the header"),
        ("latin1.csv", b"email,name\nx@y.z,\xe9t\xe9\n", "not valid UTF-8"),
        ("fake.parquet", b"PAR1 truncated", "cannot be read"),
        ("text.parquet", b"email\nx@y.z\n", "not a Parquet file"),
        ("data.json", b"{}", "cannot tell the format"),
        ("dupes.csv", b"email,email\na,b\n", "duplicate column"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    """Each unreadable input is an InputError with a readable reason, raised before or while reading."""
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_all(path)


def test_truncated_parquet(tmp_path: Path) -> None:
    """A Parquet file cut short is an input error, not a crash."""
    path = tmp_path / "t.parquet"
    pl.DataFrame({"email": [f"u{i}@x.y" for i in range(1000)]}).write_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot be read"):
        read_all(path)


def test_bom_is_dropped(tmp_path: Path) -> None:
    """A UTF-8 byte order mark does not become part of the first column's name."""
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfemail\na@b.c\n")
    assert open_source(path).columns == ["email"]


def test_a_bad_record_in_a_later_block_names_its_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks parsed ahead in threads still report the row of a bad record, counted in order."""
    monkeypatch.setattr(reader, "CSV_BLOCK_BYTES", 64)
    path = tmp_path / "late.csv"
    path.write_text("email,n\n" + "".join(f"u{i}@x.y,{i}\n" for i in range(40)) + "bad@x.y,1,2\n")
    with (
        ThreadPoolExecutor(2) as pool,
        pytest.raises(InputError, match=r"at row 40: a row has more fields"),
    ):
        list(open_source(path).batches(pool=pool))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.integers(1, 300),
    at=st.integers(0, 299),
    block=st.integers(16, 400),
    broken=st.sampled_from([b"bad@x.y,1,2", b'bad@x.y,"1', b"b\xffd@x.y,1"]),
)
def test_a_bad_record_anywhere_names_its_row_and_the_rows_before_it_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int, at: int, block: int, broken: bytes
) -> None:
    """Wherever the record (an extra field, an open quote, a byte that is not UTF-8) falls
    against the block cuts, the error names its row and every row before it is read once."""
    at = min(at, rows - 1)
    monkeypatch.setattr(reader, "CSV_BLOCK_BYTES", block)
    lines = [f"u{i}@x.y,{i}".encode() for i in range(rows)]
    lines[at] = broken
    path = tmp_path / "bad.csv"
    path.write_bytes(b"email,n\n" + b"\n".join(lines) + b"\n")
    got: list[int] = []

    def read() -> None:
        for frame in open_source(path).batches():
            got.extend(frame[ROW].to_list())

    with pytest.raises(InputError, match=rf"(at row {at}|near row \d+):") as raised:
        read()
    if "at row" in str(raised.value):
        assert got == list(range(at))
    else:  # an open quote swallows the rest of the file: polars names no record
        assert got == list(range(len(got))) and len(got) <= at


def test_cells_that_do_not_convert_reject_their_row_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad int, date or bool cell gives its row the reason (column, value); the rest read typed."""
    monkeypatch.setattr(reader, "CSV_BLOCK_BYTES", 50)
    path = tmp_path / "t.csv"
    rows = [f"u{i}@x.y,{i},2001-01-0{1 + i % 9},{'true' if i % 2 else 'FALSE'}" for i in range(30)]
    rows[3] = "u3@x.y,n/a,2001-01-01,true"
    rows[17] = "u17@x.y,17,01/02/2001,true"
    rows[29] = 'u29@x.y,29,2001-01-01,"ma""ybe"'
    path.write_text("email,n,born,vip\n" + "\n".join(rows) + "\n")
    frame = read_all(path, types={"n": "int", "born": "date", "vip": "bool"})
    reasons = dict(
        frame.filter(pl.col(reader.CELL_ERROR).is_not_null()).select(ROW, reader.CELL_ERROR).iter_rows()
    )
    assert reasons == {
        3: 'n: "n/a" is not an integer',
        17: 'born: "01/02/2001" is not a date (YYYY-MM-DD)',
        29: 'vip: "ma\\"ybe" is not true, false, 1 or 0',
    }
    assert frame["n"].dtype == pl.Int64 and frame["n"][4] == 4
    assert frame["vip"].to_list()[:3] == [False, True, False]
    assert frame["born"].dtype == pl.Date


@given(
    st.lists(
        st.text("0123456789+- \tab_.", max_size=8) | st.integers(-(10**20), 10**20).map(str), max_size=30
    )
)
def test_an_int_cell_converts_exactly_when_it_is_a_64_bit_integer(cells: list[str]) -> None:
    frame = pl.DataFrame({ROW: range(len(cells)), "n": cells}, schema={ROW: pl.Int64, "n": pl.String})
    got = reader.converted(frame, {"n": "int"})
    for cell, value, reason in zip(cells, got["n"].to_list(), got[reader.CELL_ERROR].to_list(), strict=True):
        text = cell.strip(" \t")
        expected = int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else None
        if expected is not None and not -(2**63) <= expected < 2**63:
            expected = None
        assert value == expected, cell
        assert (reason is None) == (expected is not None), cell


def test_ahead_keeps_order_and_runs_the_next_calls_meanwhile() -> None:
    """Results come in call order although later calls finish first, and the next ones overlap."""
    running: set[int] = set()
    overlapped = threading.Event()
    lock = threading.Lock()

    def call(i: int) -> int:
        with lock:
            running.add(i)
            if len(running) > 1:
                overlapped.set()
        time.sleep(0.02 if i % 2 == 0 else 0.0)
        with lock:
            running.discard(i)
        return i

    with ThreadPoolExecutor(2) as pool:
        got = list(reader.ahead(pool, (lambda i=i: call(i) for i in range(12)), depth=2))
    assert got == list(range(12))
    assert overlapped.is_set()
    assert list(reader.ahead(None, (lambda i=i: i * 2 for i in range(3)))) == [0, 2, 4]


def test_ahead_raises_a_calls_error_in_its_place() -> None:
    """An error surfaces when its result is due, after the results before it."""

    def call(i: int) -> int:
        if i == 3:
            raise ValueError("three")
        return i

    got: list[int] = []
    with ThreadPoolExecutor(2) as pool, pytest.raises(ValueError, match="three"):
        got.extend(reader.ahead(pool, (lambda i=i: call(i) for i in range(6))))
    assert got == [0, 1, 2]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    encoding=st.sampled_from(["cp1251", "latin-1", "utf-16"]),
    names=st.lists(st.sampled_from(["Иван", "Пётр", "Zoë", "José", "Ærø", "plain"]), min_size=1, max_size=60),
    block=st.integers(8, 200),
    gzipped=st.booleans(),
)
def test_an_export_in_another_encoding_reads_as_the_same_text(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    encoding: str,
    names: list[str],
    block: int,
    gzipped: bool,
) -> None:
    """cp1251, latin-1 and utf-16 (with its BOM), gzipped or not, cut in blocks anywhere."""
    names = [n for n in names if n.encode(encoding, errors="ignore").decode(encoding) == n] or ["plain"]
    monkeypatch.setattr(reader, "CSV_BLOCK_BYTES", block)
    text = "email,name\r\n" + "".join(f"u{i}@x.y,{n}\r\n" for i, n in enumerate(names))
    data = text.encode(encoding)
    path = tmp_path / ("c.csv.gz" if gzipped else "c.csv")
    path.write_bytes(gzip.compress(data) if gzipped else data)
    frame = read_all(path, encoding=encoding)
    assert frame["name"].to_list() == names
    assert frame[ROW].to_list() == list(range(len(names)))


def test_a_wrong_encoding_is_one_line_that_names_the_option(tmp_path: Path) -> None:
    path = tmp_path / "ru.csv"
    path.write_bytes("email,name\nu@x.y,Иван\n".encode("cp1251"))
    with pytest.raises(InputError, match=r"at row 0: it is not valid UTF-8 text .*--encoding cp1251"):
        read_all(path)
    with pytest.raises(InputError, match="unknown encoding 'klingon'"):
        open_source(path, encoding="klingon")


def test_a_tsv_is_tab_separated_and_null_values_are_no_value(tmp_path: Path) -> None:
    path = tmp_path / "c.tsv"
    path.write_text('email\tcity\tzip\na@b.c\tNULL\t""\nd@e.f\tn/a\t0123\n')
    frame = read_all(path, null_values=("NULL", "n/a", ""))
    assert frame.select("email", "city", "zip").rows() == [("a@b.c", None, None), ("d@e.f", None, "0123")]


def test_the_first_batch_is_small_and_the_rest_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's first batch is FIRST_BATCH_ROWS rows (so sending starts early), the others full;
    the key-only pass reads full batches; the rows come whole and in order either way."""
    rows = 40_000
    frame = pl.DataFrame({"email": [f"u{i}@x.io" for i in range(rows)], "n": list(range(rows))})
    frame.write_parquet(tmp_path / "f.parquet")
    frame.write_csv(tmp_path / "f.csv")
    parquet = open_source(tmp_path / "f.parquet")
    heights = [f.height for f in parquet.batches()]
    assert heights == [
        reader.FIRST_BATCH_ROWS,
        reader.BATCH_ROWS,
        rows - reader.FIRST_BATCH_ROWS - reader.BATCH_ROWS,
    ]
    assert [f.height for f in parquet.batches(columns=["email"])] == [
        reader.BATCH_ROWS,
        rows - reader.BATCH_ROWS,
    ]
    resumed = list(parquet.batches(start_row=100))
    assert resumed[0][ROW].to_list() == list(range(100, 100 + reader.FIRST_BATCH_ROWS))
    assert pl.concat(resumed)[ROW].to_list() == list(range(100, rows))
    assert list(parquet.batches(start_row=rows)) == []  # the rest of a file read to its end
    monkeypatch.setattr(reader, "CSV_BLOCK_BYTES", 200_000)
    csv_frames = list(open_source(tmp_path / "f.csv").batches())
    assert len(csv_frames) > 1 and csv_frames[0].height < csv_frames[1].height
    assert pl.concat(csv_frames)[ROW].to_list() == list(range(rows))
