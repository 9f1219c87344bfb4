"""`run --dry-run` (no broker: what would be sent) and `report` (what a results file says)."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest
from click.testing import CliRunner

from bulk_import import ImportOptions, dry_run
from bulk_import.cli import cli
from bulk_import.results import COLUMNS
from tests.helpers import dry_run_doc


def test_dry_run_counts_reasons_and_shows_the_first_message(tmp_path: Path) -> None:
    """Nothing is sent (no broker is named); rejected rows by reason, exit 1 when some are rejected."""
    data = tmp_path / "c.csv"
    data.write_text("email,city,n\na@b.c,Oslo,1\nbad,Rome,2\n,Nice,3\nd@e.f,,4\n")
    summary = tmp_path / "s.json"
    args = ["run", str(data), "--db", "3", "--amqp-url", "amqp://nobody:pw@127.0.0.1:1/", "--dry-run"]
    got = CliRunner().invoke(cli, [*args, "--summary", str(summary)])
    assert got.exit_code == 1, got.output
    doc = orjson.loads(summary.read_bytes())
    assert (doc["rows"], doc["valid"], doc["rejected"]) == (4, 2, 2)
    assert doc["reasons"] == {"invalid email in email": 1, "empty email": 1}
    assert doc["examples"] == [
        {"row": 1, "reason": "invalid email in email"},
        {"row": 2, "reason": "empty email"},
    ]
    assert doc["data_fields"] == ["city", "n"]
    first = doc["first_message"]
    assert (first["db_id"], first["email"], first["data"]) == (3, "a@b.c", {"city": "Oslo", "n": "1"})
    assert not (tmp_path / "c.results.csv").exists()


def test_dry_run_of_a_clean_file_exits_0(tmp_path: Path) -> None:
    data = tmp_path / "c.csv"
    data.write_text("email\na@b.c\n")
    got = CliRunner().invoke(cli, ["run", str(data), "--db", "1", "--dry-run"])
    assert got.exit_code == 0, got.output
    assert '"email": "a@b.c"' in got.output


def results_file(path: Path, statuses: list[str]) -> None:
    n = len(statuses)
    errors = {
        "ok": "0",
        "error": "102",
        "rejected": None,
        "no_reply": None,
        "not_confirmed": None,
        "not_sent": None,
    }
    texts = {"error": "not found", "rejected": "empty email"}
    pl.DataFrame(
        {
            "row": list(range(n)),
            "key": [f"u{i}@x.y" for i in range(n)],
            "feedback_id": [f"r-{i}" for i in range(n)],
            "status": statuses,
            "error": [errors[s] for s in statuses],
            "error_text": [texts.get(s) for s in statuses],
            "matching_field": ["email"] * n,
            "profile_id": [None] * n,
        },
        schema=dict.fromkeys(COLUMNS, pl.String) | {"row": pl.Int64},
    ).write_csv(path)


def test_report_counts_problems_writes_the_failed_rows_and_exits_as_the_run(tmp_path: Path) -> None:
    results, failed = tmp_path / "c.results.csv", tmp_path / "failed.csv"
    (tmp_path / "c.csv").write_text("email,n\n" + "".join(f"u{i}@x.y,{i}\n" for i in range(6)))
    results_file(results, ["ok", "error", "ok", "error", "rejected", "no_reply"])
    got = CliRunner().invoke(cli, ["report", str(results), "--failed", str(failed)])
    assert got.exit_code == 4, got.output
    lines = got.output.splitlines()
    assert lines[0] == f"{results}: 6 rows"
    assert "  ok                     2" in lines
    problems = lines[lines.index("not ok, commonest first (rows, status, error, text):") + 1 :]
    assert problems[0].split() == ["2", "error", "102", "not", "found"]
    assert f"4 rows not ok written to {failed}, from {tmp_path / 'c.csv'}" in got.output
    assert pl.read_csv(failed)["bulk_import_row"].to_list() == [1, 3, 4, 5]


def test_report_of_a_clean_run_exits_0_and_refuses_other_files(tmp_path: Path) -> None:
    results = tmp_path / "r.csv"
    results_file(results, ["ok", "ok"])
    assert CliRunner().invoke(cli, ["report", str(results)]).exit_code == 0
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    got = CliRunner().invoke(cli, ["report", str(other)])
    assert got.exit_code == 2
    assert "not a results file" in got.output


def test_rename_and_exclude_shape_the_messages(tmp_path: Path) -> None:
    """Renamed columns are sent (and typed, and matched on) by their new names; excluded ones never."""
    data = tmp_path / "c.csv"
    data.write_text("E-Mail,Vorname,intern,n\na@b.c,Ann,x1,7\n")
    summary = tmp_path / "s.json"
    args = ["--rename", "E-Mail:email", "--rename", "Vorname:_fname", "--exclude", "intern"]
    args += ["--type", "n:int", "--summary", str(summary)]
    got = CliRunner().invoke(cli, ["run", str(data), "--db", "1", "--dry-run", *args])
    assert got.exit_code == 0, got.output
    doc = orjson.loads(summary.read_bytes())
    assert doc["data_fields"] == ["_fname", "n"]
    assert doc["first_message"]["email"] == "a@b.c"
    assert doc["first_message"]["data"] == {"_fname": "Ann", "n": 7}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rename", "nope:x"], "no column 'nope' to rename"),
        (["--rename", "a:email"], "more than one column is named email"),
        (["--exclude", "nope"], "no column 'nope' to exclude"),
        (["--exclude", "email"], "the key column is always sent"),
        (["--rename", "email:mail"], "no column 'email' for the key column"),
        (["--rename", "email"], "is not COLUMN:FIELD"),
        (["--type", "nope:int"], "no column 'nope' for --type"),
        (["--type", "a:int", "--strict"], 'row 1: a: "x" is not an integer; nothing was sent (--strict)'),
    ],
)
def test_mapping_mistakes_are_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    data = tmp_path / "c.csv"
    data.write_text("email,a\nx@y.z,1\nw@y.z,x\n")
    got = CliRunner().invoke(cli, ["run", str(data), "--db", "1", "--dry-run", *args])
    assert got.exit_code == 2, got.output
    assert message in got.output
    assert "Traceback" not in got.output


def test_dry_run_via_api_shows_a_batch_request_without_the_token(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("email,city\n" + "".join(f"u{i}@x.io,Oslo\n" for i in range(20)))
    report = dry_run(path, ImportOptions(db_id=4, via="api", api_token="S3cretT0ken"))
    assert report.first_message is not None
    doc = orjson.loads(report.first_message)
    assert doc["request"] == "api/v1.1/profiles/import_batch"
    assert doc["body"]["token"] == "******"
    assert [item["email"] for item in doc["body"]["data"]] == [f"u{i}@x.io" for i in range(5)]
    assert b"S3cretT0ken" not in report.to_json()


def test_a_cell_that_does_not_convert_rejects_its_row_and_the_rest_go(tmp_path: Path) -> None:
    data = tmp_path / "c.csv"
    data.write_text("email,score\na@y.z,1\nb@y.z,n/a\nc@y.z,3\n")
    got = CliRunner().invoke(cli, ["run", str(data), "--db", "1", "--dry-run", "--type", "score:int"])
    assert got.exit_code == 1, got.output
    assert "3 rows, 2 would be sent, 1 rejected" in got.output
    assert 'row 1: score: "n/a" is not an integer' in got.output


@pytest.mark.parametrize(("nulls", "data"), [("skip", {"a": "x"}), ("keep", {"a": "x", "b": "", "c": None})])
def test_a_quoted_empty_cell_is_no_value_under_nulls_skip(
    tmp_path: Path, nulls: str, data: dict[str, object]
) -> None:
    """`""` and --null-value cells would blank a field: under --nulls skip they are left out."""
    path = tmp_path / "c.csv"
    path.write_text('email,a,b,c\nq@y.z,x,"",NULL\n')
    summary = tmp_path / "s.json"
    args = ["run", str(path), "--db", "1", "--dry-run", "--nulls", nulls, "--null-value", "NULL"]
    got = CliRunner().invoke(cli, [*args, "--summary", str(summary)])
    assert got.exit_code == 0, got.output
    assert orjson.loads(summary.read_bytes())["first_message"]["data"] == data


def test_a_header_with_another_separator_says_which_to_pass(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("email;city\nq@y.z;Oslo\n")
    got = CliRunner().invoke(cli, ["run", str(path), "--db", "1", "--dry-run"])
    assert got.exit_code == 2
    assert "the header looks ';'-separated: try --delimiter ';'" in got.output


def test_dates_in_the_exports_own_format(tmp_path: Path) -> None:
    """--date-format/--datetime-format read a CRM's dates; a cell in another form rejects its row."""
    data = tmp_path / "c.csv"
    data.write_text("email,born,seen\na@b.c,31.12.1990,31.12.2024 23:59\nd@e.f,1990-12-31,01.01.2025 00:00\n")
    typed = ["--type", "born:date", "--type", "seen:datetime"]
    formats = ["--date-format", "%d.%m.%Y", "--datetime-format", "%d.%m.%Y %H:%M"]
    code, output, doc = dry_run_doc(data, *typed, *formats)
    assert code == 1, output
    assert doc["first_message"]["data"] == {"born": "1990-12-31", "seen": "2024-12-31T23:59:00"}
    assert doc["examples"] == [{"row": 1, "reason": 'born: "1990-12-31" is not a date (%d.%m.%Y)'}]
    code, _, doc = dry_run_doc(data, *typed)
    assert code == 1
    assert doc["examples"][0] == {"row": 0, "reason": 'born: "31.12.1990" is not a date (YYYY-MM-DD)'}
