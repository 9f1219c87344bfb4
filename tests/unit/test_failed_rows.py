"""`report --failed`: the input's own rows that did not go through, ready for the night's command."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import polars as pl
import pytest
from click.testing import CliRunner

from bulk_import.cli import cli
from bulk_import.errors import InputError
from bulk_import.failed import OUTCOME_COLUMNS, input_of
from bulk_import.results import COLUMNS

OUTCOME = list(OUTCOME_COLUMNS.values())


def results_of(path: Path, statuses: list[str]) -> None:
    """A results file as a run writes it: an error code and text for the rows that have one."""
    n = len(statuses)
    pl.DataFrame(
        {
            "row": range(n),
            "key": [f"k{i}" for i in range(n)],
            "feedback_id": [f"r-{i}" for i in range(n)],
            "status": statuses,
            "error": [{"ok": 0, "error": 102}.get(s) for s in statuses],
            "error_text": [
                {"error": "not found", "rejected": "score: 'n/a' is not an integer"}.get(s) for s in statuses
            ],
            "matching_field": ["email"] * n,
            "profile_id": [None] * n,
        },
        schema=dict.fromkeys(COLUMNS, pl.String) | {"row": pl.Int64, "error": pl.Int64},
    ).write_csv(path)


def report(*args: str | Path) -> tuple[int, str]:
    got = CliRunner().invoke(cli, ["report", *map(str, args)])
    return got.exit_code, got.output


def test_a_csv_comes_back_in_its_own_separator_encoding_and_text(tmp_path: Path) -> None:
    """Cells stay as the file had them (leading zeros, quotes, 'n/a', an empty quoted cell)."""
    data = tmp_path / "contacts.csv"
    lines = [
        "email;city;score;code",
        "a@x.y;Москва;1;007",
        'b@x.y;"Рим; центр";n/a;""',
        "c@x.y;;3;010",
        'd@x.y;"say ""hi""";4;011',
    ]
    data.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1251"))
    results_of(tmp_path / "contacts.results.csv", ["ok", "rejected", "ok", "error"])
    out = tmp_path / "failed.csv"
    code, output = report(
        tmp_path / "contacts.results.csv", "--failed", out, "--delimiter", ";", "--encoding", "cp1251"
    )
    assert code == 1, output
    text = out.read_bytes().decode("cp1251")
    assert text.splitlines() == [
        "email;city;score;code;" + ";".join(OUTCOME),
        'b@x.y;"Рим; центр";n/a;"";1;rejected;;score: \'n/a\' is not an integer',
        'd@x.y;"say ""hi""";4;011;3;error;102;not found',
    ]


def test_the_failed_file_goes_back_in_with_the_same_options(tmp_path: Path) -> None:
    """The night's options read the failed file; the tool's own columns are not sent."""
    data = tmp_path / "contacts.csv"
    data.write_text("email,score\na@x.y,1\nb@x.y,n/a\nc@x.y,3\n")
    results_of(tmp_path / "contacts.results.csv", ["ok", "rejected", "error"])
    out = tmp_path / "failed.csv"
    assert report(tmp_path / "contacts.results.csv", "--failed", out)[0] == 1
    out.write_text(out.read_text().replace("n/a", "2"))
    summary = tmp_path / "s.json"
    args = ["run", str(out), "--db", "1", "--type", "score:int", "--dry-run", "--summary", str(summary)]
    got = CliRunner().invoke(cli, args)
    assert got.exit_code == 0, got.output
    doc = orjson.loads(summary.read_bytes())
    assert (doc["rows"], doc["rejected"], doc["data_fields"]) == (2, 0, ["score"])
    assert doc["first_message"]["data"] == {"score": 2}


def test_parquet_keeps_its_types_and_row_is_an_integer(tmp_path: Path) -> None:
    data = tmp_path / "c.parquet"
    frame = pl.DataFrame(
        {
            "email": ["a@x.y", "b@x.y", "c@x.y"],
            "n": [1, 2, 3],
            "born": [dt.date(1990, 1, 1), None, dt.date(2000, 5, 6)],
            "tags": [["a"], [], ["b", "c"]],
        }
    )
    frame.write_parquet(data)
    results_of(tmp_path / "c.results.csv", ["no_reply", "ok", "not_sent"])
    out = tmp_path / "failed.parquet"
    assert report(tmp_path / "c.results.csv", "--failed", out)[0] == 4
    got = pl.read_parquet(out)
    assert got.schema == frame.schema | {
        "bulk_import_row": pl.Int64,
        "bulk_import_status": pl.String,
        "bulk_import_error": pl.Int64,
        "bulk_import_error_text": pl.String,
    }
    assert got.drop(OUTCOME).equals(frame[[0, 2]])
    assert got["bulk_import_row"].to_list() == [0, 2]
    assert got["bulk_import_status"].to_list() == ["no_reply", "not_sent"]


def test_rows_across_many_batches_are_found(tmp_path: Path) -> None:
    data = tmp_path / "big.csv"
    n = 100_000
    pl.DataFrame({"email": [f"u{i}@x.y" for i in range(n)], "i": range(n)}).write_csv(data)
    statuses = ["error" if i % 997 == 0 or i == n - 1 else "ok" for i in range(n)]
    results_of(tmp_path / "big.results.csv", statuses)
    out = tmp_path / "f.csv"
    assert report(tmp_path / "big.results.csv", "--failed", out)[0] == 1
    got = pl.read_csv(out)
    wanted = [i for i, s in enumerate(statuses) if s != "ok"]
    assert got["i"].to_list() == wanted
    assert got["bulk_import_row"].to_list() == wanted


def test_a_clean_run_gives_a_header_alone(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("email,n\na@x.y,1\n")
    results_of(tmp_path / "c.results.csv", ["ok"])
    out = tmp_path / "f.csv"
    assert report(tmp_path / "c.results.csv", "--failed", out)[0] == 0
    assert out.read_text() == "email,n," + ",".join(OUTCOME) + "\n"


def test_a_file_of_calls_gives_its_failed_lines_as_they_were(tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"
    lines = [b'{"request": "a", "body": {}}', b"not json", b'{"request": "b", "body": {"x": 1}}']
    calls.write_bytes(b"\n".join(lines) + b"\n")
    pl.DataFrame(
        {
            "row": [0, 1, 2],
            "request": ["a", None, "b"],
            "request_id": ["r-0-1", None, "r-2-1"],
            "status": ["ok", "rejected", "error"],
            "error": [0, None, 400],
            "error_text": [None, "not JSON", "bad"],
            "response": ["{}", None, "{}"],
        }
    ).write_csv(tmp_path / "r.csv")
    out = tmp_path / "again.jsonl"
    code, output = report(tmp_path / "r.csv", "--failed", out, "--input", calls)
    assert code == 1, output
    assert out.read_bytes() == lines[1] + b"\n" + lines[2] + b"\n"


def test_the_input_is_the_one_file_beside_the_results(tmp_path: Path) -> None:
    results = tmp_path / "c.results.csv"
    with pytest.raises(InputError, match=r"no file beside it named c\.\*; pass --input FILE"):
        input_of(results)
    (tmp_path / "c.parquet").touch()
    (tmp_path / "c.summary.json").touch()
    assert input_of(results) == tmp_path / "c.parquet"
    (tmp_path / "c.csv").touch()
    with pytest.raises(InputError, match=r"2 files could be it \(c\.csv, c\.parquet\)"):
        input_of(results)
    with pytest.raises(InputError, match="pass --input FILE"):
        input_of(tmp_path / "night.csv")


def test_another_file_than_the_runs_is_refused_and_nothing_written(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("email\na@x.y\n")
    results_of(tmp_path / "c.results.csv", ["ok", "ok", "error"])
    out = tmp_path / "f.csv"
    code, output = report(tmp_path / "c.results.csv", "--failed", out)
    assert code == 2
    assert "has 1 rows, but the results name row 2: not the file of that run" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv", "c.results.csv"]
