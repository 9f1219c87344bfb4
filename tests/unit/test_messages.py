"""Building database_import bodies and reading replies: the wire format, without a broker."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk_import.config import ImportOptions
from bulk_import.errors import InputError
from bulk_import.messages import (
    ROW,
    MalformedReply,
    build_batch,
    feedback_id,
    parse_feedback_id,
    parse_reply,
)


def frame(**columns: list[Any]) -> pl.DataFrame:
    return pl.DataFrame(columns).with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))


def bodies(df: pl.DataFrame, **options: Any) -> list[dict[str, Any]]:
    batch = build_batch(df, ImportOptions(db_id=23, **options), "r1")
    return [orjson.loads(b) for b in batch.bodies]


class TestEnvelope:
    def test_email_matching_fields(self) -> None:
        """An email row carries the protocol's fields, the key on its own and the rest in data."""
        [body] = bodies(frame(email=["john@example.com"], _fname=["John"]))
        assert body == {
            "account_id": 1,
            "db_id": 23,
            "matching": "email",
            "email": "john@example.com",
            "data": {"_fname": "John"},
            "feedback_id": "r1-0",
        }

    def test_flags_and_resource(self) -> None:
        """update_only, skip_triggers and resource_id appear only when asked for."""
        [body] = bodies(
            frame(email=["a@b.c"]), update_only=True, skip_triggers=True, resource_id=7, account_id=5
        )
        assert body["update_only"] is True
        assert body["skip_triggers"] is True
        assert body["resource_id"] == 7
        assert body["account_id"] == 5

    def test_phone_matching_cleans_the_key(self) -> None:
        """Phone keys lose spaces, dashes and brackets; the platform gets digits with a '+'."""
        [body] = bodies(frame(phone=["+7 (900) 123-45-67"]), matching="phone")
        assert body["phone"] == "+79001234567"
        assert body["matching"] == "phone"

    def test_profile_id_matching(self) -> None:
        """profile_id matching sends the 24-hex id as given."""
        [body] = bodies(frame(profile_id=["60f039e830b8bcb28392f8eb"]), matching="profile_id")
        assert body["profile_id"] == "60f039e830b8bcb28392f8eb"

    def test_custom_matching_keeps_the_type_and_the_field_in_data(self) -> None:
        """field_value keeps the column's type; the field stays in data so new profiles carry it."""
        [body] = bodies(frame(CRM_ID=[123420], email=["x@y.z"]), matching="custom", field_name="CRM_ID")
        assert body["field_name"] == "CRM_ID"
        assert body["field_value"] == 123420
        assert body["data"] == {"CRM_ID": 123420, "email": "x@y.z"}

    def test_key_column_override(self) -> None:
        """--key-column reads the key from another column."""
        [body] = bodies(frame(mail=["a@b.c"]), key_column="mail")
        assert body["email"] == "a@b.c"
        assert "mail" not in body["data"]


class TestRejections:
    @pytest.mark.parametrize(
        ("matching", "value", "reason"),
        [
            ("email", None, "empty email"),
            ("email", "  ", "empty email"),
            ("email", "john.example.com", "invalid email in email"),
            ("email", "a@b@c", "invalid email in email"),
            ("phone", "12345", "invalid phone in phone"),
            ("phone", "+1234567890123456", "invalid phone in phone"),
            ("phone", "79oo1234567", "invalid phone in phone"),
            ("profile_id", "60f039e830b8bcb28392f8e", "invalid profile_id in profile_id"),
            ("profile_id", "60f039e830b8bcb28392f8eZ", "invalid profile_id in profile_id"),
        ],
    )
    def test_invalid_keys_are_rejected_with_a_reason(
        self, matching: str, value: str | None, reason: str
    ) -> None:
        """Rows whose key cannot be valid are not sent and say why."""
        df = frame(**{matching: [value, None]})
        batch = build_batch(df, ImportOptions(db_id=1, matching=matching), "r1")  # type: ignore[arg-type]
        assert batch.bodies == []
        assert batch.rejected_rows == [0, 1]
        assert batch.rejected_reasons[0] == reason

    def test_custom_empty_value_rejected(self) -> None:
        """A null custom key is rejected; zero is a value."""
        batch = build_batch(
            frame(CRM_ID=[None, 0]), ImportOptions(db_id=1, matching="custom", field_name="CRM_ID"), "r"
        )
        assert batch.rejected_rows == [0]
        assert batch.rows == [1]

    def test_keys_frame_covers_every_row(self) -> None:
        """Sent and rejected rows both appear in the batch's keys, with the reject reason."""
        batch = build_batch(frame(email=["a@b.c", "bad"]), ImportOptions(db_id=1), "r")
        assert batch.keys.to_dicts() == [
            {"row": 0, "key": "a@b.c", "reason": None},
            {"row": 1, "key": "bad", "reason": "invalid email in email"},
        ]


class TestTypes:
    def test_native_types_and_dates(self) -> None:
        """Ints stay ints, bools bools, dates YYYY-MM-DD, naive datetimes ISO 8601."""
        [body] = bodies(
            frame(
                email=["a@b.c"],
                n=[12],
                f=[1.5],
                b=[True],
                d=[dt.date(2001, 12, 31)],
                t=[dt.datetime(2001, 12, 31, 10, 30, 0, 250000)],
            )
        )
        assert body["data"] == {
            "n": 12,
            "f": 1.5,
            "b": True,
            "d": "2001-12-31",
            "t": "2001-12-31T10:30:00.250",
        }

    def test_phones_becomes_a_list_of_strings(self) -> None:
        """A phones cell is split on commas into the platform's list of strings."""
        [body] = bodies(frame(email=["a@b.c"], phones=["+79001234567, +79007654321"]))
        assert body["data"]["phones"] == ["+79001234567", "+79007654321"]

    def test_integer_phones_become_strings(self) -> None:
        """A numeric phones column is sent as a one-element list of strings."""
        [body] = bodies(frame(email=["a@b.c"], phones=[79001234567]))
        assert body["data"]["phones"] == ["79001234567"]

    def test_nulls_skipped_by_default_and_kept_on_request(self) -> None:
        """Null cells never blank a field unless --nulls keep."""
        df = frame(email=["a@b.c"], city=[None], n=[None], name=["x"])
        assert bodies(df)[0]["data"] == {"name": "x"}
        assert bodies(df, nulls="keep")[0]["data"] == {"city": None, "n": None, "name": "x"}

    @pytest.mark.parametrize(
        ("cells", "data"),
        [
            ({"a": [None], "b": [1], "c": [None]}, {"b": 1}),
            ({"a": [None], "b": [None], "c": [None]}, {}),
            ({"a": ["x"], "b": [None], "c": [None]}, {"a": "x"}),
            (
                {"a": ['","b":null,"'], "b": [None], "c": ['{"c":null']},
                {"a": '","b":null,"', "c": '{"c":null'},
            ),
        ],
    )
    def test_null_members_cut_whatever_their_place(
        self, cells: dict[str, list[Any]], data: dict[str, Any]
    ) -> None:
        """First, middle, last and all-null members are left out; text that looks like them is kept."""
        assert bodies(frame(email=["a@b.c"], **cells))[0]["data"] == data

    def test_nested_objects_keep_their_null_members(self) -> None:
        """A struct column's own null members are not cut, and its null cells are left out."""
        df = frame(email=["a@b.c", "x@y.z"], meta=[{"city": None, "x": 1}, None], city=[None, "Q"])
        assert [b["data"] for b in bodies(df)] == [{"meta": {"city": None, "x": 1}}, {"city": "Q"}]

    def test_only_a_key_column(self) -> None:
        """A file with nothing but the key sends an empty data object."""
        assert bodies(frame(email=["a@b.c"]))[0]["data"] == {}

    @given(
        st.lists(
            st.tuples(st.text(max_size=30), st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))),
            min_size=1,
            max_size=30,
        )
    )
    def test_any_text_and_int_round_trips(self, cells: list[tuple[str, int | None]]) -> None:
        """Whatever the text (quotes, newlines, unicode) and ints, data decodes to the cells."""
        texts = [t for t, _ in cells]
        ints = [i for _, i in cells]
        df = frame(email=[f"u{i}@x.y" for i in range(len(cells))], s=texts, i=ints)
        for row, body in enumerate(bodies(df)):
            expected: dict[str, Any] = {"s": texts[row]}
            if ints[row] is not None:
                expected["i"] = ints[row]
            assert body["data"] == expected
            assert body["feedback_id"] == f"r1-{row}"

    @given(
        st.lists(
            st.fixed_dictionaries(
                {
                    "t": st.one_of(st.none(), st.text(max_size=12)),
                    "n": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
                    "b": st.one_of(st.none(), st.booleans()),
                    "d": st.one_of(st.none(), st.dates()),
                    "u": st.one_of(st.none(), st.text('ab"\\\n\t\x00é', max_size=4)),
                }
            ),
            min_size=1,
            max_size=20,
        ),
        st.permutations(["t", "n", "b", "d", "u"]),
        st.sampled_from(["skip", "keep"]),
    )
    def test_bodies_equal_what_a_json_encoder_makes_of_the_row(
        self, rows: list[dict[str, Any]], order: list[str], nulls: str
    ) -> None:
        """Any mix of types, nulls in any column and place, text that needs escaping or not."""
        df = pl.DataFrame(
            [{"email": f"u{i}@x.y", **{c: r[c] for c in order}} for i, r in enumerate(rows)],
            schema={
                "email": pl.String,
                "t": pl.String,
                "n": pl.Int64,
                "b": pl.Boolean,
                "d": pl.Date,
                "u": pl.String,
            },
        ).select("email", *order)
        batch = build_batch(
            df.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64)),
            ImportOptions(db_id=5, nulls=nulls),
            "r9",
        )  # type: ignore[arg-type]
        for i, (row, body) in enumerate(zip(rows, batch.bodies, strict=True)):
            data = {c: row[c] for c in order if nulls == "keep" or row[c] is not None}
            expected = {"account_id": 1, "db_id": 5, "matching": "email", "email": f"u{i}@x.y"}
            expected |= {"data": data, "feedback_id": f"r9-{i}"}
            assert body == orjson.dumps(expected)
        assert batch.ids == [f"r9-{i}".encode() for i in range(len(rows))]


class TestOptions:
    def test_custom_needs_a_field(self) -> None:
        """--matching custom without --field is an input error."""
        with pytest.raises(InputError, match="--field"):
            ImportOptions(db_id=1, matching="custom")

    def test_field_only_with_custom(self) -> None:
        """--field with another matching is an input error."""
        with pytest.raises(InputError, match="custom"):
            ImportOptions(db_id=1, matching="email", field_name="X")


class TestFeedbackIds:
    @given(
        st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=32),
        st.integers(0, 10**12),
    )
    def test_round_trip(self, run_id: str, row: int) -> None:
        """A feedback id gives back its run and row."""
        assert parse_feedback_id(feedback_id(run_id, row)) == (run_id, row)

    @pytest.mark.parametrize("value", [None, 5, "", "abc", "r1-", "-5", "R1-5", "r1-5x", "r 1-5"])
    def test_foreign_ids_are_none(self, value: object) -> None:
        """Ids not made by this tool are not mistaken for rows."""
        assert parse_feedback_id(value) is None


class TestReplies:
    def test_documented_reply(self) -> None:
        """The protocol's example reply parses field by field."""
        reply = parse_reply(
            b'{"error": 0, "error_text": "", "feedback_id": "r1-42", "matching_field": "email",'
            b' "profile_id": "60f039e830b8bcb28392f8eb"}'
        )
        assert (reply.error, reply.feedback_id, reply.matching_field) == (0, "r1-42", "email")
        assert reply.profile_id == "60f039e830b8bcb28392f8eb"

    @pytest.mark.parametrize(
        ("body", "why"),
        [
            (b"not json", "not JSON"),
            (b"[1]", "not a JSON object"),
            (b'{"error": 0}', "no feedback_id"),
            (b'{"feedback_id": "r1-1", "error": "0"}', "not an integer"),
            (b'{"feedback_id": "r1-1", "error": true}', "not an integer"),
        ],
    )
    def test_malformed(self, body: bytes, why: str) -> None:
        """Replies that break the documented shape raise MalformedReply saying what is wrong."""
        with pytest.raises(MalformedReply, match=why):
            parse_reply(body)
