"""`run --dry-run` (no broker: what would be sent) and `report` (what a results file says)."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
from click.testing import CliRunner

from bulk_import.cli import cli
from bulk_import.results import COLUMNS


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
    errors = {"ok": "0", "error": "102", "rejected": None, "no_reply": None, "not_confirmed": None}
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
    results, failed = tmp_path / "r.csv", tmp_path / "failed.csv"
    results_file(results, ["ok", "error", "ok", "error", "rejected", "no_reply"])
    got = CliRunner().invoke(cli, ["report", str(results), "--failed", str(failed)])
    assert got.exit_code == 4, got.output
    lines = got.output.splitlines()
    assert lines[0] == f"{results}: 6 rows"
    assert "  ok                     2" in lines
    problems = lines[lines.index("not ok, commonest first (rows, status, error, text):") + 1 :]
    assert problems[0].split() == ["2", "error", "102", "not", "found"]
    assert "4 rows not ok written to" in got.output
    assert pl.read_csv(failed)["row"].to_list() == [1, 3, 4, 5]


def test_report_of_a_clean_run_exits_0_and_refuses_other_files(tmp_path: Path) -> None:
    results = tmp_path / "r.csv"
    results_file(results, ["ok", "ok"])
    assert CliRunner().invoke(cli, ["report", str(results)]).exit_code == 0
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    got = CliRunner().invoke(cli, ["report", str(other)])
    assert got.exit_code == 2
    assert "not a results file" in got.output
