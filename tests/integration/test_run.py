"""`bulk-import run` end to end: a real broker, the stand-in job server, the CLI as a user runs it."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest

from tests.helpers import (
    Queues,
    assert_every_row_accounted,
    declare,
    emulator,
    publish,
    queue_state,
    run_cli,
    status_counts,
)

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("name", ["100k.parquet", "100k.csv"])
def test_100k_rows_all_ok(name: str, samples: dict[str, Path], queues: Queues, tmp_path: Path) -> None:
    """Every row of a 100,000-row file is confirmed, answered and ok; the journal is cleaned up."""
    results = tmp_path / "out.results.csv"
    summary = tmp_path / "summary.json"
    with emulator(queues):
        done = run_cli(
            "run", samples[name], "--db", "1", *queues.args(), "--results", results, "--summary", summary
        )
    assert done.returncode == 0, done.stderr
    frame = assert_every_row_accounted(100_000, results)
    assert status_counts(frame) == {"ok": 100_000}
    assert frame["profile_id"].str.len_chars().unique().to_list() == [24]
    assert frame["matching_field"].unique().to_list() == ["email"]
    doc = orjson.loads(summary.read_bytes())
    assert doc["rows"] == 100_000
    assert doc["counts"]["ok"] == 100_000
    assert doc["exit_code"] == 0
    assert doc["publish_rows_per_s"] > 0
    assert not (tmp_path / "out.results.csv.journal").exists()
    assert queue_state(queues.request)[0] == 0
    assert queue_state(queues.result)[0] == 0


def mixed_file(path: Path) -> None:
    pl.DataFrame(
        {
            "email": ["new@example.com", "bad-address", None, "ghost@example.com", "also.new@example.com"],
            "_fname": ["Ann", "Bob", "Cy", "Di", "Ed"],
        }
    ).write_csv(path)


def test_mixed_file_gets_a_status_per_row(queues: Queues, tmp_path: Path) -> None:
    """Valid, invalid and update-only-unknown rows each get the right status; exit 1."""
    data = tmp_path / "mixed.csv"
    mixed_file(data)
    with emulator(queues):
        first = run_cli("run", data, "--db", "1", *queues.args(), "--results", tmp_path / "a.csv")
        assert first.returncode == 1, first.stderr
        # The first run created two profiles; now update only: those two ok, the ghost was never created.
        pl.DataFrame({"email": ["new@example.com", "nobody@example.com"]}).write_csv(tmp_path / "upd.csv")
        second = run_cli(
            "run", tmp_path / "upd.csv", "--db", "1", "--update-only", *queues.args(),
            "--results", tmp_path / "b.csv",
        )  # fmt: skip
    frame = assert_every_row_accounted(5, tmp_path / "a.csv")
    assert frame["status"].to_list() == ["ok", "rejected", "rejected", "ok", "ok"]
    assert frame["error_text"][1] == "invalid email in email"
    assert frame["error_text"][2] == "empty email"
    assert frame["feedback_id"][1] is None
    assert second.returncode == 1, second.stderr
    upd = assert_every_row_accounted(2, tmp_path / "b.csv")
    assert upd["status"].to_list() == ["ok", "error"]
    assert upd["profile_id"][0] == frame["profile_id"][0]
    assert upd["error"][1] not in (None, "0")
    assert upd["error_text"][1]


def test_same_file_twice_same_profiles(samples: dict[str, Path], queues: Queues, tmp_path: Path) -> None:
    """Importing the same keys again updates the same profiles (the stand-in keeps its store)."""
    store = tmp_path / "profiles.sqlite"
    runs = []
    for attempt in range(2):
        with emulator(queues, "--store", store):
            out = tmp_path / f"run{attempt}.csv"
            done = run_cli(
                "run", samples["small.csv"], "--db", "9", "--matching", "custom", "--field", "CRM_ID",
                *queues.args(), "--results", out,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            runs.append(assert_every_row_accounted(500, out))
    assert runs[0]["profile_id"].to_list() == runs[1]["profile_id"].to_list()
    assert runs[0]["profile_id"].n_unique() == 500


def test_missing_queue_exits_3(samples: dict[str, Path], queues: Queues, tmp_path: Path) -> None:
    """Without --declare a missing platform queue is exit 3 with a hint, and nothing is written."""
    done = run_cli("run", samples["small.csv"], "--db", "1", *queues.args(), "--results", tmp_path / "r.csv")
    assert done.returncode == 3
    assert "does not exist" in done.stderr
    assert "--declare" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "r.csv").exists()


def test_foreign_replies_are_left_for_their_owner(
    samples: dict[str, Path], queues: Queues, tmp_path: Path
) -> None:
    """Replies of other importers in the shared result queue survive the run, untouched in number."""
    declare(queues.request, queues.result)
    foreign = [
        orjson.dumps({"error": 0, "error_text": "", "feedback_id": f"other-importer-{i}", "profile_id": "x"})
        for i in range(50)
    ]
    publish(queues.result, foreign)
    with emulator(queues):
        done = run_cli(
            "run", samples["small.csv"], "--db", "1", *queues.args(), "--results", tmp_path / "r.csv",
            "--summary", tmp_path / "s.json",
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert status_counts(assert_every_row_accounted(500, tmp_path / "r.csv")) == {"ok": 500}
    assert queue_state(queues.result)[0] == 50
    # The run ends when its own replies are in; foreign ones not yet passed on go back on close.
    assert orjson.loads((tmp_path / "s.json").read_bytes())["foreign_replies"] >= 1


def test_password_never_printed(samples: dict[str, Path], tmp_path: Path) -> None:
    """A wrong password is exit 3, and the password appears nowhere in the output."""
    done = run_cli(
        "run", samples["small.csv"], "--db", "1", "--results", tmp_path / "r.csv",
        "--amqp-url", "amqp://guest:s3cr3t-pw@127.0.0.1:5672/",
    )  # fmt: skip
    assert done.returncode == 3
    assert "s3cr3t-pw" not in done.stderr + done.stdout
    assert "refused the login" in done.stderr


def test_a_file_unreadable_half_way_still_has_results_and_a_summary(queues: Queues, tmp_path: Path) -> None:
    """A record polars cannot read at row 30,000 of 40,000: the rows before it are imported and in
    the results file, the summary says why, exit 2, and the journal stays."""
    data = tmp_path / "broken.csv"
    lines = [f"u{i}@example.com,{i}" for i in range(40_000)]
    lines[30_000] = "bad@example.com,1,2"
    data.write_text("email,n\n" + "\n".join(lines) + "\n")
    results, summary = tmp_path / "r.csv", tmp_path / "s.json"
    with emulator(queues):
        done = run_cli(
            "run", data, "--db", "1", "--type", "n:int", *queues.args(), "--results", results,
            "--summary", summary,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "cannot be read at row 30000: a row has more fields than the header" in done.stderr
    frame = assert_every_row_accounted(30_000, results)
    assert status_counts(frame) == {"ok": 30_000}
    doc = orjson.loads(summary.read_bytes())
    assert doc["exit_code"] == 2 and "row 30000" in doc["reason"]
    assert (tmp_path / "r.csv.journal").is_dir()


def test_the_morning_after_the_failed_rows_go_back_in_as_they_were(queues: Queues, tmp_path: Path) -> None:
    """Rejected cells and platform errors: `report --failed` gives those rows, fixed they import ok."""
    data = tmp_path / "contacts.csv"
    n = 2_000
    scores = ["n/a" if i % 250 == 7 else str(i) for i in range(n)]
    pl.DataFrame({"email": [f"u{i}@example.com" for i in range(n)], "score": scores}).write_csv(data)
    options = ["--db", "1", *queues.args(), "--type", "score:int"]
    with emulator(queues, "--error", "0.05", "--seed", "3"):
        night = run_cli("run", data, *options)
    assert night.returncode == 1, night.stderr
    counts = status_counts(assert_every_row_accounted(n, tmp_path / "contacts.results.csv"))
    assert counts["rejected"] == 8 and counts["error"] > 0, counts

    failed = tmp_path / "failed.csv"
    report = run_cli("report", tmp_path / "contacts.results.csv", "--failed", failed)
    assert report.returncode == 1, report.stderr
    rows = pl.read_csv(failed, infer_schema=False)
    assert rows.height == counts["rejected"] + counts["error"]
    assert rows.filter(pl.col("bulk_import_status") == "rejected")["score"].unique().to_list() == ["n/a"]
    failed.write_text(failed.read_text().replace(",n/a,", ",7,"))

    with emulator(queues):
        again = run_cli("run", failed, *options)
    assert again.returncode == 0, again.stderr
    assert status_counts(assert_every_row_accounted(rows.height, tmp_path / "failed.results.csv")) == {
        "ok": rows.height
    }


def test_rows_with_one_key_send_the_last_and_skip_the_rest(queues: Queues, tmp_path: Path) -> None:
    """Keys equal as the platform compares them: the last row is sent, the others say which was."""
    data = tmp_path / "dupes.csv"
    emails = ["a@example.com", "b@example.com", " A@Example.com", "c@example.com", "a@example.com "]
    pl.DataFrame({"email": emails, "city": ["Oslo", "Rome", "Nice", "Bern", "Kyiv"]}).write_csv(data)
    with emulator(queues):
        last = run_cli("run", data, "--db", "1", *queues.args())
        every = run_cli(
            "run",
            data,
            "--db",
            "1",
            *queues.args(),
            "--on-duplicate-key",
            "all",
            "--results",
            tmp_path / "all.csv",
        )
    assert last.returncode == 0, last.stderr
    assert "2 rows have a key a later row of the file has" in last.stderr
    frame = assert_every_row_accounted(5, tmp_path / "dupes.results.csv")
    assert frame["status"].to_list() == ["skipped_duplicate", "ok", "skipped_duplicate", "ok", "ok"]
    assert frame["error_text"][0] == frame["error_text"][2] == "duplicate key: row 4 is sent"
    assert frame["key"][0] == "a@example.com" and frame["feedback_id"][0] is None
    assert every.returncode == 0, every.stderr
    sent = assert_every_row_accounted(5, tmp_path / "all.csv")
    assert status_counts(sent) == {"ok": 5}
    assert sent["profile_id"][0] == sent["profile_id"][2] == sent["profile_id"][4] == frame["profile_id"][4]


def test_a_request_queue_nobody_consumes_is_said_long_before_the_timeout(
    queues: Queues, tmp_path: Path
) -> None:
    """No stand-in: the run says nothing consumes the queue after a third of the reply timeout."""
    data = tmp_path / "c.csv"
    data.write_text("email\n" + "".join(f"u{i}@example.com\n" for i in range(50)))
    declare(queues.request, queues.result)
    done = run_cli("run", data, "--db", "1", *queues.args(), "--reply-timeout", "6")
    assert done.returncode == 4, done.stderr
    lines = done.stderr.splitlines()
    [idle] = [
        i for i, line in enumerate(lines) if f"nothing consumes '{queues.request}' (0 consumers)" in line
    ]
    gone = [i for i, line in enumerate(lines) if "no reply came for 6s" in line]
    assert gone and idle < gone[0]
    assert "WARNING no reply for 2s" in lines[idle] or "WARNING no reply for 3s" in lines[idle]


def test_a_slow_consumer_is_not_taken_for_none(queues: Queues, tmp_path: Path) -> None:
    data = tmp_path / "c.csv"
    data.write_text("email\n" + "".join(f"u{i}@example.com\n" for i in range(20)))
    with emulator(queues, "--delay", "4"):
        done = run_cli("run", data, "--db", "1", *queues.args(), "--reply-timeout", "9")
    assert done.returncode == 0, done.stderr
    assert "nothing consumes" not in done.stderr
