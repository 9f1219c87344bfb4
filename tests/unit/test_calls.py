"""A file of API calls: each line read, built into its api_req message, and its response read back."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk_import import reader
from bulk_import.calls import ApiCall, build_calls, call_from_line
from bulk_import.config import BrokerSettings, ImportOptions
from bulk_import.messages import ROW
from bulk_import.protocols import Calls
from bulk_import.reader import open_source

RUN = "abc123"
OPTIONS = ImportOptions(db_id=0, via="calls", account_id=7, api_token="tok")


def frame(lines: list[str]) -> pl.DataFrame:
    return pl.DataFrame({ROW: range(len(lines)), "line": lines}, schema={ROW: pl.Int64, "line": pl.String})


def test_a_call_becomes_the_documented_message_with_a_request_id_naming_its_line() -> None:
    line = '{"request": "/api/v1.1/profiles/import", "body": {"db_id": 1, "email": "a@b.c"}}'
    batch = build_calls(frame(["", line]), OPTIONS, RUN)
    assert batch.rows == [1] and batch.ids == [b"abc123-1-1"]
    assert orjson.loads(batch.bodies[0]) == {
        "account_id": 7,
        "request_id": "abc123-1-1",
        "request": "api/v1.1/profiles/import",
        "body": {"db_id": 1, "email": "a@b.c", "token": "tok"},
    }
    assert batch.rejected_rows == [0] and batch.rejected_reasons == ["an empty line"]
    assert batch.keys.to_dicts() == [
        {"row": 0, "key": None, "reason": "an empty line"},
        {"row": 1, "key": "api/v1.1/profiles/import", "reason": None},
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"body": {}}', 'no "request"'),
        ('{"request": "/", "body": {}}', 'no "request"'),
        ('{"request": 5, "body": {}}', 'no "request"'),
        ('{"request": "api/x", "body": [1]}', '"body" is not a JSON object'),
    ],
)
def test_a_line_that_is_not_a_call_says_why(line: str, reason: str) -> None:
    got = call_from_line(line, OPTIONS)
    assert isinstance(got, str) and got.startswith(reason)


def test_a_call_without_a_body_sends_an_empty_one_with_the_token() -> None:
    call = call_from_line('{"request": "api/v1.1/campaigns/list"}', OPTIONS)
    assert call == ApiCall("api/v1.1/campaigns/list", {}, 7, "tok")


@given(st.text(max_size=200))
def test_any_line_is_a_call_or_a_reason_never_an_exception(line: str) -> None:
    got = call_from_line(line, OPTIONS)
    assert isinstance(got, (ApiCall, str))


@given(
    st.text(min_size=1, max_size=40).filter(lambda p: p.strip("/ ")),
    st.dictionaries(
        st.text(max_size=10), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10), max_size=5
    ),
)
def test_the_body_of_a_call_goes_out_as_it_was_written(path: str, body: dict[str, object]) -> None:
    line = orjson.dumps({"request": path, "body": body}).decode()
    batch = build_calls(frame([line]), OPTIONS, RUN)
    sent = orjson.loads(batch.bodies[0])
    assert sent["body"] == {**body, "token": "tok"}
    assert sent["request"] == path.strip().lstrip("/")


def calls() -> Calls:
    return Calls(OPTIONS, BrokerSettings())


def response(rid: object, body: object) -> bytes:
    return orjson.dumps({"request_id": rid, "body": body})


def test_a_response_is_kept_whole_for_its_line() -> None:
    body = {"error": 404, "error_text": "Unknown API method", "extra": [1, 2]}
    owner, replies = calls().read(response("abc123-4-1", body), RUN)
    assert owner == RUN and replies is not None
    assert list(replies.rows) == [4] and replies.error == (404,)
    assert replies.error_text == ("Unknown API method",)
    assert replies.request_id == "abc123-4-1" and orjson.loads(replies.response or "") == body


@pytest.mark.parametrize(
    ("message", "owner"),
    [
        (response("other1-4-1", {"error": 0}), "other1"),
        (response("abc123-4", {"error": 0}), None),
        (b"not json", None),
    ],
)
def test_another_runs_response_or_an_unreadable_one_is_not_ours(message: bytes, owner: str | None) -> None:
    assert calls().read(message, RUN) == (owner, None)


@pytest.mark.parametrize(
    "message",
    [
        response("abc123-4-1", "not an object"),
        response("abc123-4-1", {"error": "0"}),
        response("abc123-4-2", {"error": 0}),
    ],
)
def test_a_malformed_response_of_this_run_is_ours_but_unread(message: bytes) -> None:
    assert calls().read(message, RUN) == (RUN, None)


def test_a_requests_file_is_read_a_line_a_row_across_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader, "CSV_BLOCK_BYTES", 64)
    lines = [
        orjson.dumps({"request": f"api/x{i}", "body": {"i": "y" * (i % 50)}}).decode() for i in range(300)
    ]
    lines[7] = ""
    path = tmp_path / "calls.jsonl"
    path.write_text("\r\n".join(lines) + "\n")
    source = open_source(path)
    got = pl.concat(list(source.batches(0)))
    assert got[ROW].to_list() == list(range(300))
    assert [s.rstrip("\r") for s in got["line"].to_list()] == lines
    later = pl.concat(list(source.batches(123)))
    assert later[ROW].to_list() == list(range(123, 300))
