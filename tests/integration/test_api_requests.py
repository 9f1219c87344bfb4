"""`bulk-import api --requests FILE.jsonl` against the real broker and the stand-in."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest

from tests.helpers import Queues, emulator, publish, queue_state, run_cli, status_counts

pytestmark = pytest.mark.broker

TOKEN = "t0ken-for-calls"
CALL_COLUMNS = ["row", "request", "request_id", "status", "error", "error_text", "response"]


def import_call(i: int) -> dict[str, object]:
    body = {"db_id": 1, "matching": "email", "email": f"user{i}@example.com", "data": {"_fname": f"N{i}"}}
    return {"request": "api/v1.1/profiles/import", "body": body}


def write_calls(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def read_calls(path: Path) -> pl.DataFrame:
    frame = pl.read_csv(path, infer_schema=False)
    assert frame.columns == CALL_COLUMNS
    return frame


def test_every_call_of_the_file_has_its_results_line(queues: Queues, tmp_path: Path) -> None:
    """1,000 lines: imports, a bad body, an unknown method and two lines that are no call."""
    lines = [orjson.dumps(import_call(i)).decode() for i in range(1000)]
    lines[10] = orjson.dumps({"request": "api/v1.1/profiles/import", "body": {"db_id": 1}}).decode()
    lines[20] = orjson.dumps({"request": "api/v1.1/no/such/method", "body": {}}).decode()
    lines[30], lines[40] = "{broken", ""
    calls = write_calls(tmp_path / "calls.jsonl", lines)
    with emulator(queues, "--token", TOKEN):
        done = run_cli(
            "api", "--requests", calls, *queues.api_args(), "--summary", tmp_path / "s.json",
            env={"BULK_IMPORT_API_TOKEN": TOKEN},
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert TOKEN not in done.stderr + done.stdout
    frame = read_calls(tmp_path / "calls.results.csv")
    assert frame["row"].to_list() == [str(i) for i in range(1000)]
    assert status_counts(frame) == {"ok": 996, "error": 2, "rejected": 2}
    by_row = {int(r["row"]): r for r in frame.iter_rows(named=True)}
    assert by_row[10]["error"] == "400" and by_row[20]["error"] == "404"
    assert by_row[30]["error_text"].startswith("not JSON") and by_row[40]["error_text"] == "an empty line"
    run_id = orjson.loads((tmp_path / "s.json").read_bytes())["run_id"]
    assert by_row[5]["request_id"] == f"{run_id}-5-1"
    assert len(orjson.loads(by_row[5]["response"])["profile_id"]) == 24
    assert by_row[30]["request_id"] is None


def test_a_wrong_token_answers_every_call_401_and_strangers_stay(queues: Queues, tmp_path: Path) -> None:
    calls = write_calls(tmp_path / "calls.jsonl", [orjson.dumps(import_call(i)).decode() for i in range(50)])
    api_req, api_resp = queues.api
    with emulator(queues, "--token", TOKEN):
        foreign = [orjson.dumps({"request_id": f"0ther{i}-0-1", "body": {"error": 0}}) for i in range(3)]
        publish(api_resp, foreign)
        done = run_cli("api", "--requests", calls, *queues.api_args(), "--token", "Wr0ngT0k3n")
        assert queue_state(api_resp)[0] == 3
    assert done.returncode == 1, done.stderr
    assert "Wr0ngT0k3n" not in done.stderr + done.stdout
    frame = read_calls(tmp_path / "calls.results.csv")
    assert status_counts(frame) == {"error": 50}
    assert frame["error"].unique().to_list() == ["401"]
    assert queue_state(api_req)[0] == 0
