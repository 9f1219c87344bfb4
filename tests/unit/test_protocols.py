"""The two protocols: how built rows become messages, and how a reply becomes row outcomes."""

from __future__ import annotations

import itertools

import orjson
from hypothesis import given
from hypothesis import strategies as st

from bulk_import.config import BrokerSettings, ImportOptions
from bulk_import.protocols import Batched, PerRow, parse_request_id, request_id

SETTINGS = BrokerSettings()


def batched(**kwargs: object) -> Batched:
    return Batched(ImportOptions(db_id=3, via="api", api_token="T", **kwargs), SETTINGS)  # type: ignore[arg-type]


def items(rows: list[int]) -> list[bytes]:
    return [orjson.dumps({"email": f"u{r}@x.io", "data": {"n": r}}) for r in rows]


@given(
    st.lists(st.integers(0, 5000), unique=True, max_size=400).map(sorted),
    st.integers(1, 50),
)
def test_messages_hold_runs_of_consecutive_rows_within_the_batch_size(rows: list[int], size: int) -> None:
    protocol = batched(batch_size=size)
    out = protocol.messages(rows, items(rows), [b""] * len(rows), "run1")
    assert out.counts is not None
    assert out.rows(0, len(out.tokens)) == rows  # every row once, in order
    for token, count, body, rid in zip(out.tokens, out.counts, out.bodies, out.ids, strict=True):
        assert 1 <= count <= size
        doc = orjson.loads(body)
        assert doc["request_id"] == rid.decode() == request_id("run1", token, count)
        assert [item["data"]["n"] for item in doc["body"]["data"]] == list(range(token, token + count))
        assert doc["body"]["token"] == "T" and doc["body"]["db_id"] == 3
    assert protocol.expand(out.tokens) == rows


def test_a_message_is_cut_before_10_mb() -> None:
    protocol = batched(batch_size=10_000)
    protocol.max_bytes = 1000
    rows = list(range(40))
    out = protocol.messages(rows, items(rows), [b""] * 40, "run1")
    assert len(out.tokens) > 1
    assert all(len(body) <= 1000 for body in out.bodies)
    assert out.rows(0, len(out.tokens)) == rows


def test_the_mode_picks_the_method() -> None:
    for kwargs, method in [
        ({}, "api/v1.1/profiles/import_batch"),
        ({"mode": "add"}, "api/v1.1/profiles/add_batch"),
        ({"update_only": True}, "api/v1.1/profiles/update_batch"),
    ]:
        out = batched(**kwargs).messages([0], items([0]), [b""], "r")
        assert orjson.loads(out.bodies[0])["request"] == method


def response(rid: str, body: object) -> bytes:
    return orjson.dumps({"request_id": rid, "body": body})


def test_each_row_gets_its_item_result() -> None:
    protocol = batched()
    results = [{"error": 0, "profile_id": "p10"}, {"error": 201, "error_text": "bad email"}]
    owner, got = protocol.read(response("run1-10-2", {"error": 0, "result": results}), "run1")
    assert owner == "run1" and got is not None
    assert list(zip(got.rows, got.error, got.error_text, got.profile_id, strict=True)) == [
        (10, 0, "", "p10"),
        (11, 201, "bad email", ""),
    ]
    assert got.matching_field == "email" and got.request_id == "run1-10-2"


def test_a_request_level_error_is_every_rows_error() -> None:
    _, got = batched().read(response("run1-5-3", {"error": 401, "error_text": "token required"}), "run1")
    assert got is not None
    assert list(zip(got.rows, got.error, got.error_text, got.profile_id, strict=True)) == [
        (r, 401, "token required", "") for r in (5, 6, 7)
    ]


def test_replies_that_are_not_ours_or_cannot_be_read() -> None:
    protocol = batched()
    assert protocol.read(response("other-1-2", {"error": 0, "result": [{}, {}]}), "run1") == ("other", None)
    assert protocol.read(response("run1-1-2", {"error": 0, "result": [{}]}), "run1") == ("run1", None)
    assert protocol.read(b"nope", "run1") == (None, None)
    assert protocol.read(orjson.dumps({"request_id": "x"}), "run1") == (None, None)


def test_request_ids_round_trip_and_nothing_else_parses() -> None:
    assert parse_request_id(request_id("ab12", 7, 1000)) == ("ab12", 7, 1000)
    for value in ["ab12-7", "ab12-7-x", "AB-1-2", 7, None, "a-b-1-2"]:
        assert parse_request_id(value) is None


def test_per_row_messages_are_the_rows_themselves() -> None:
    protocol = PerRow(ImportOptions(db_id=1), SETTINGS)
    out = protocol.messages([3, 4], [b"a", b"b"], [b"r-3", b"r-4"], "r")
    assert out.counts is None and out.rows(0, 2) == [3, 4] and protocol.expand([3, 4]) == [3, 4]
    reply = orjson.dumps({"feedback_id": "r-3", "error": 0, "profile_id": "p"})
    owner, got = protocol.read(reply, "r")
    assert owner == "r" and got is not None and list(got.rows) == [3] and got.profile_id == ("p",)


def test_the_pending_bound_is_rows_or_batches_unless_given() -> None:
    """--max-pending defaults to 8192 rows, and to eight batches' rows (at least 16,384) with --via api."""
    assert ImportOptions(db_id=1).pending_limit == 8192
    assert ImportOptions(db_id=1, via="api", api_token="T").pending_limit == 40_000
    assert ImportOptions(db_id=1, via="api", api_token="T", batch_size=1000).pending_limit == 16_384
    assert ImportOptions(db_id=1, via="api", api_token="T", batch_size=10_000).pending_limit == 80_000
    assert ImportOptions(db_id=1, via="api", api_token="T", max_pending=0).pending_limit == 0
    assert ImportOptions(db_id=1, max_pending=100).pending_limit == 100


def greedy_cuts(rows: list[int], sizes: list[int], batch: int, room: int) -> list[int]:
    """The counts a message-by-message greedy cut gives: the model the protocol must match."""
    counts, start = [], 0
    while start < len(rows):
        end, used = start + 1, sizes[start] + 1
        while (
            end < len(rows)
            and end - start < batch
            and rows[end] == rows[end - 1] + 1
            and used + sizes[end] + 1 <= room
        ):
            used += sizes[end] + 1
            end += 1
        counts.append(end - start)
        start = end
    return counts


@given(
    # Rows mostly consecutive, with a gap now and then (a rejected or skipped row).
    st.lists(st.sampled_from([1, 1, 1, 1, 1, 1, 1, 2, 5]), max_size=120).map(
        lambda steps: list(itertools.accumulate(steps))
    ),
    st.integers(1, 40),
    st.integers(0, 20),
    st.integers(-1, 1),
)
def test_messages_are_as_full_as_count_and_size_allow(rows: list[int], size: int, fit: int, off: int) -> None:
    """Each message takes rows while they are consecutive, fewer than --batch-size and within the
    byte cap: the greedy cut, whatever the cap (a message holds one item at least), a cap that
    ``fit`` items fill exactly (``off`` 0) among them."""
    protocol = batched(batch_size=size)
    bodies = items(rows)
    spare = max(0, sum(len(b) + 1 for b in bodies[:fit]) + off)
    protocol.max_bytes = protocol._overhead + spare
    out = protocol.messages(rows, bodies, [b""] * len(rows), "run1")
    assert out.counts == greedy_cuts(rows, [len(b) for b in bodies], size, spare)
