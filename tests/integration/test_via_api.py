"""Batched import through api_req against the real broker and the stand-in."""

from __future__ import annotations

import re
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

TOKEN = "t0ken-for-tests"


@pytest.fixture
def api(queues: Queues) -> list[str]:
    """The test's own api_req/api_resp queues, as options of both run and emulate."""
    return queues.api_args()


def via_api(
    data: Path, queues: Queues, api: list[str], results: Path, *extra: str | Path
) -> list[str | Path]:
    return ["run", data, "--db", "1", *queues.args(), *api, "--via", "api", "--results", results, *extra]


def test_batches_import_every_row_with_the_profile_ids_of_the_per_message_path(
    samples: dict[str, Path], queues: Queues, api: list[str], tmp_path: Path
) -> None:
    """100,000 rows in batches: all ok, and each key has the profile id database_import gave it."""
    data = samples["100k.parquet"]
    with emulator(queues, "--token", TOKEN):
        first = run_cli("run", data, "--db", "1", *queues.args(), "--results", tmp_path / "q.csv")
        assert first.returncode == 0, first.stderr
        done = run_cli(*via_api(data, queues, api, tmp_path / "a.csv", "--summary", tmp_path / "s.json"),
                       env={"BULK_IMPORT_API_TOKEN": TOKEN})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stderr + done.stdout
    batched = assert_every_row_accounted(100_000, tmp_path / "a.csv")
    assert status_counts(batched) == {"ok": 100_000}
    per_message = assert_every_row_accounted(100_000, tmp_path / "q.csv")
    assert batched["profile_id"].to_list() == per_message["profile_id"].to_list()


def test_a_wrong_token_is_the_error_of_every_row(
    samples: dict[str, Path], queues: Queues, api: list[str], tmp_path: Path
) -> None:
    with emulator(queues, "--token", TOKEN):
        done = run_cli(
            *via_api(samples["small.csv"], queues, api, tmp_path / "r.csv", "--token", "Wr0ngT0k3n")
        )
    assert done.returncode == 1, done.stderr
    frame = assert_every_row_accounted(500, tmp_path / "r.csv")
    assert status_counts(frame) == {"error": 500}
    assert frame["error"].unique().to_list() == ["401"]
    assert "Wr0ngT0k3n" not in done.stderr


def test_a_batch_is_cut_before_10_mb(queues: Queues, api: list[str], tmp_path: Path) -> None:
    """1,000 rows of 25 kB each do not fit one 10 MB message: they go as several, all ok."""
    data = tmp_path / "big.parquet"
    pl.DataFrame(
        {"email": [f"u{i}@example.com" for i in range(1000)], "notes": ["x" * 25_000] * 1000}
    ).write_parquet(data)
    with emulator(queues, "--token", TOKEN) as emu:
        done = run_cli(
            *via_api(data, queues, api, tmp_path / "r.csv", "--token", TOKEN, "--batch-size", "1000")
        )
    assert done.returncode == 0, done.stderr
    assert status_counts(assert_every_row_accounted(1000, tmp_path / "r.csv")) == {"ok": 1000}
    requests = [int(x) for x in re.findall(r"api_requests=(\d+)", emu.output)]
    assert requests and requests[-1] >= 3  # 25 MB of profiles: at least three messages


def test_foreign_responses_are_left_for_their_owner(
    samples: dict[str, Path], queues: Queues, api: list[str], tmp_path: Path
) -> None:
    declare(api[1], api[3])
    foreign = [orjson.dumps({"request_id": f"someone-{i}", "body": {"error": 0}}) for i in range(20)]
    publish(api[3], foreign)
    with emulator(queues, "--token", TOKEN):
        done = run_cli(*via_api(samples["small.csv"], queues, api, tmp_path / "r.csv", "--token", TOKEN))
    assert done.returncode == 0, done.stderr
    assert queue_state(api[3])[0] == 20


def test_one_api_call_prints_its_response(queues: Queues, api: list[str]) -> None:
    body = '{"db_id": 1, "matching": "email", "email": "solo@example.com", "data": {"_fname": "Solo"}}'
    with emulator(queues, "--token", TOKEN):
        done = run_cli(
            "api", "api/v1.1/profiles/import", "--body", body, *api, "--token", TOKEN, "--timeout", "30"
        )
        wrong = run_cli("api", "api/v1.1/profiles/import", "--body", body, *api, "--token", "Wr0ngT0k3n")
        sent = run_cli("api", "api/v1.1/profiles/import", "--body", body, *api, "--token", TOKEN, "--no-wait")
    assert done.returncode == 0, done.stderr
    response = orjson.loads(done.stdout)
    assert response["error"] == 0 and len(response["profile_id"]) == 24
    assert wrong.returncode == 1, wrong.stderr
    assert orjson.loads(wrong.stdout)["error"] == 401
    assert "Wr0ngT0k3n" not in wrong.stdout + wrong.stderr
    assert sent.returncode == 0, sent.stderr


def test_no_response_in_time_exits_4(queues: Queues, api: list[str]) -> None:
    declare(api[1], api[3])  # nobody serves the API queue
    done = run_cli("api", "api/v1.1/profiles/import", "--body", "{}", *api, "--timeout", "1")
    assert done.returncode == 4, done.stderr
    assert "no response" in done.stderr
