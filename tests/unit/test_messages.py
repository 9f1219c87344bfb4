"""Building database_import bodies and reading replies: the wire format, without a broker."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulk_import import messages
from bulk_import.config import ImportOptions
from bulk_import.errors import InputError
from bulk_import.messages import (
    FIELD_VALUE_TYPES,
    PHONE_NOISE_RE,
    ROW,
    Batch,
    MalformedReply,
    build_batch,
    feedback_id,
    parse_feedback_id,
    parse_reply,
)


@pytest.fixture(scope="module", params=["flat", "stacked"])
def layout(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test of the classes that use it once per layout of the data members: one ``concat_str``
    of every column (batches of many rows), and string cells stacked (batches of few rows)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(messages, "STACK_BELOW_ROWS", 0 if request.param == "flat" else 2**62)
        yield request.param


def frame(**columns: list[Any]) -> pl.DataFrame:
    return pl.DataFrame(columns).with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))


def bodies(df: pl.DataFrame, **options: Any) -> list[dict[str, Any]]:
    batch = build_batch(df, ImportOptions(db_id=23, **options), "r1")
    return [orjson.loads(b) for b in batch.bodies]


def custom(df: pl.DataFrame, field: str = "CRM_ID") -> Batch:
    """The batch of ``df`` matched on the custom field ``field``."""
    return build_batch(df, ImportOptions(db_id=1, matching="custom", field_name=field), "r1")


def sent_with_keys(batch: Batch) -> list[tuple[dict[str, Any], str]]:
    """Each sent body with the results file's key of its row."""
    keys = dict(zip(batch.keys["row"].to_list(), batch.keys["key"].to_list(), strict=True))
    return [(orjson.loads(b), keys[row]) for row, b in zip(batch.rows, batch.bodies, strict=True)]


@pytest.mark.usefixtures("layout")
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


@pytest.mark.usefixtures("layout")
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
            ("email", "john\x00@example.com", "NUL character in email"),
            ("email", "john@example.com\x00", "NUL character in email"),
            ("email", "john\x01@example.com", "invalid email in email"),
            ("email", "john@example.com\x1b", "invalid email in email"),
            ("email", "john@exa\x7fmple.com", "invalid email in email"),
            ("email", "john@example.com\x9b", "invalid email in email"),
            ("phone", "+7900\x001234567", "NUL character in phone"),
            ("profile_id", "60f039e830b8bcb28392f8e\x00", "NUL character in profile_id"),
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

    def test_a_nul_in_a_custom_key_is_rejected_other_controls_are_sent(self) -> None:
        """No key holds a NUL; a custom field's text may hold other control characters, JSON-escaped."""
        batch = custom(frame(CRM_ID=["A\x00B", "A\x01B", "A\tB"]))
        assert batch.rejected_rows == [0]
        assert batch.rejected_reasons == ["NUL character in CRM_ID"]
        assert [body["field_value"] for body, _ in sent_with_keys(batch)] == ["A\x01B", "A\tB"]

    def test_keys_frame_covers_every_row(self) -> None:
        """Sent and rejected rows both appear in the batch's keys, with the reject reason."""
        batch = build_batch(frame(email=["a@b.c", "bad"]), ImportOptions(db_id=1), "r")
        assert batch.keys.to_dicts() == [
            {"row": 0, "key": "a@b.c", "reason": None},
            {"row": 1, "key": "bad", "reason": "invalid email in email"},
        ]


@pytest.mark.usefixtures("layout")
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

    @settings(deadline=None)
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

    @settings(deadline=None)
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


INT64 = 2**63


def whole_int(x: float) -> int | None:
    """The int a float key is sent as, or None when it cannot be one."""
    if math.isfinite(x) and x.is_integer() and -INT64 <= x < INT64:
        return int(x)
    return None


@pytest.mark.usefixtures("layout")
class TestCustomKeys:
    """field_value is an int or a string (PROTOCOL.md §1), and it is the results file's key."""

    def test_whole_float_goes_as_an_int(self) -> None:
        """42.0 is sent as 42, in field_value and in data, and the results key is "42"."""
        batch = custom(frame(CRM_ID=[42.0, -0.0]))
        [(first, key), (second, _)] = sent_with_keys(batch)
        assert first["field_value"] == 42 and type(first["field_value"]) is int
        assert first["data"] == {"CRM_ID": 42}
        assert key == "42"
        assert second["field_value"] == 0

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            (42.5, "CRM_ID 42.5 is not a whole number: field_value is an int or a string"),
            (math.nan, "CRM_ID NaN is not a whole number: field_value is an int or a string"),
            (math.inf, "CRM_ID inf is not a whole number: field_value is an int or a string"),
            (-math.inf, "CRM_ID -inf is not a whole number: field_value is an int or a string"),
            (1e20, "CRM_ID 1e+20 is too large for an int: field_value is an int or a string"),
        ],
    )
    def test_other_floats_are_rejected_saying_why(self, value: float, reason: str) -> None:
        """A float that is no int is not sent: the row is rejected, its value in the reason."""
        batch = custom(frame(CRM_ID=[value, 7.0]))
        assert batch.rejected_rows == [0]
        assert batch.rejected_reasons == [reason]
        assert batch.rows == [1]

    @settings(deadline=None)
    @given(st.lists(st.one_of(st.none(), st.floats(), st.integers(-(2**70), 2**70).map(float)), max_size=30))
    def test_any_float_is_an_int_or_rejected(self, values: list[float | None]) -> None:
        """A whole float in the int64 range goes as that int, its text str(int(x)); any other is rejected."""
        batch = custom(frame(CRM_ID=pl.Series(values, dtype=pl.Float64)))
        sent = dict(zip(batch.rows, sent_with_keys(batch), strict=True))
        rejected = dict(zip(batch.rejected_rows, batch.rejected_reasons, strict=True))
        for row, x in enumerate(values):
            expected = None if x is None else whole_int(x)
            if expected is None:
                assert row in rejected
                assert (
                    rejected[row] == "empty CRM_ID"
                    if x is None
                    else rejected[row].endswith(FIELD_VALUE_TYPES)
                )
                continue
            body, key = sent[row]
            assert body["field_value"] == expected and type(body["field_value"]) is int
            assert body["data"]["CRM_ID"] == expected
            assert key == str(expected)

    def test_float32_and_decimal_keys(self) -> None:
        """Float32 and decimal columns follow the same rule: a whole value is an int, else rejected."""
        f32 = custom(frame(CRM_ID=pl.Series([42.0, 1.5], dtype=pl.Float32)))
        assert [b["field_value"] for b, _ in sent_with_keys(f32)] == [42]
        assert f32.rejected_reasons == [f"CRM_ID 1.5 is not a whole number: {FIELD_VALUE_TYPES}"]
        decimals = [Decimal("42.00"), Decimal("42.50"), Decimal("12345678901234567890")]
        dec = custom(frame(CRM_ID=pl.Series(decimals, dtype=pl.Decimal(22, 2))))
        assert [(b["field_value"], k) for b, k in sent_with_keys(dec)] == [(42, "42")]
        assert dec.rejected_reasons == [
            f"CRM_ID 42.50 is not a whole number: {FIELD_VALUE_TYPES}",
            f"CRM_ID 12345678901234567890.00 is too large for an int: {FIELD_VALUE_TYPES}",
        ]

    def test_string_key_is_sent_trimmed_as_in_the_results(self) -> None:
        """A string key is trimmed once: the message (field_value and data) and the results agree."""
        batch = custom(frame(CRM_ID=["  abc ", '\tq"u\\ote\n'], email=["a@b.c", "d@e.f"]))
        assert [(b["field_value"], b["data"]["CRM_ID"], k) for b, k in sent_with_keys(batch)] == [
            ("abc", "abc", "abc"),
            ('q"u\\ote', 'q"u\\ote', 'q"u\\ote'),
        ]

    @settings(deadline=None)
    @given(st.lists(st.one_of(st.none(), st.text(max_size=12)), min_size=1, max_size=30))
    def test_any_string_key_is_its_results_key(self, values: list[str | None]) -> None:
        """Whatever the text, a sent row's field_value equals its results key, and data holds it too."""
        batch = custom(frame(CRM_ID=pl.Series(values, dtype=pl.String)))
        for body, key in sent_with_keys(batch):
            assert body["field_value"] == key == body["data"]["CRM_ID"]
            assert key and key == key.strip(" \t\n\r")
        assert sorted(batch.rows + batch.rejected_rows) == list(range(len(values)))

    def test_list_key_is_the_tag_string(self) -> None:
        """A list key goes as "tag-1, tag-2" (items trimmed, empty ones dropped); data keeps the array."""
        df = frame(CRM_ID=[[" tag-1", "tag-2 ", "", None], ["x"], [], None], email=["a@b.c"] * 4)
        batch = custom(df)
        assert [(b["field_value"], b["data"]["CRM_ID"], k) for b, k in sent_with_keys(batch)] == [
            ("tag-1, tag-2", [" tag-1", "tag-2 ", "", None], "tag-1, tag-2"),
            ("x", ["x"], "x"),
        ]
        assert batch.rejected_reasons == ["empty CRM_ID", "empty CRM_ID"]

    @pytest.mark.parametrize(
        ("series", "text"),
        [
            (pl.Series([[1, 2]]), "1, 2"),
            (pl.Series([[1.0, 2.5]]), "1, 2.5"),
            (pl.Series([["a", "b"]], dtype=pl.Array(pl.String, 2)), "a, b"),
            (pl.Series([[dt.date(2001, 12, 31)]]), "2001-12-31"),
        ],
    )
    def test_lists_of_any_scalar_are_tag_strings(self, series: pl.Series, text: str) -> None:
        """Lists of numbers, fixed-size arrays and lists of dates join their items' text."""
        [(body, key)] = sent_with_keys(custom(frame(CRM_ID=series)))
        assert body["field_value"] == key == text

    @settings(deadline=None)
    @given(
        st.lists(
            st.lists(
                st.tuples(
                    st.text(st.characters(exclude_categories=("Z", "C"), exclude_characters=","), min_size=1),
                    st.sampled_from(["", " ", "  "]),
                    st.sampled_from(["", " ", "\t"]),
                )
                | st.sampled_from([("", "", ""), ("", " ", "")]),
                max_size=5,
            ),
            min_size=1,
            max_size=20,
        )
    )
    def test_list_keys_round_trip(self, cells: list[list[tuple[str, str, str]]]) -> None:
        """The tag string splits on ", " into the list's tags; padding and empty items are gone."""
        lists = [[f"{before}{tag}{after}" for tag, before, after in cell] for cell in cells]
        batch = custom(frame(CRM_ID=pl.Series(lists, dtype=pl.List(pl.String))))
        sent = dict(zip(batch.rows, sent_with_keys(batch), strict=True))
        for row, cell in enumerate(cells):
            tags = [tag for tag, _, _ in cell if tag]
            if not tags:
                assert batch.keys.row(row, named=True)["reason"] == "empty CRM_ID"
                continue
            body, key = sent[row]
            assert body["field_value"] == key == ", ".join(tags)
            assert key.split(", ") == tags
            assert body["data"]["CRM_ID"] == lists[row]

    @pytest.mark.parametrize(
        ("matching", "column", "reason"),
        [
            ("custom", pl.Series([{"a": 1}]), f"CRM_ID is a struct: {FIELD_VALUE_TYPES}"),
            ("custom", pl.Series([[["a"]]]), f"CRM_ID is a list of lists: {FIELD_VALUE_TYPES}"),
            ("custom", pl.Series([[{"a": 1}]]), f"CRM_ID is a list of structs: {FIELD_VALUE_TYPES}"),
            ("email", pl.Series([{"a": "x@y.z"}]), "email is a struct: email is a string"),
        ],
    )
    def test_nested_keys_are_rejected_not_a_crash(
        self, matching: str, column: pl.Series, reason: str
    ) -> None:
        """A struct or a list of lists cannot be a key: the row is rejected, the file goes on."""
        key = "CRM_ID" if matching == "custom" else matching
        field = {"field_name": key} if matching == "custom" else {}
        options = ImportOptions(db_id=1, matching=matching, **field)  # type: ignore[arg-type]
        batch = build_batch(
            frame(**{key: pl.concat([column, pl.Series([None], dtype=column.dtype)])}), options, "r"
        )
        assert batch.bodies == []
        assert batch.rejected_reasons == [reason, f"empty {key}"]

    @pytest.mark.parametrize(
        ("value", "text"),
        [
            (True, "true"),
            (dt.date(2001, 12, 31), "2001-12-31"),
            (dt.datetime(2001, 12, 31, 10, 30, 0, 250000), "2001-12-31T10:30:00.250"),
        ],
    )
    def test_other_scalars_go_as_their_text(self, value: object, text: str) -> None:
        """Neither int nor string: the key is sent as its text, the results key."""
        [(body, key)] = sent_with_keys(custom(frame(CRM_ID=[value])))
        assert body["field_value"] == body["data"]["CRM_ID"] == key == text

    def test_float_phone_key_loses_no_digit(self) -> None:
        """A phone read as a float is its digits (no ".0" cleaned into a 0); a fraction is invalid."""
        batch = build_batch(
            frame(phone=[79001234567.0, 7900123456.5]), ImportOptions(db_id=1, matching="phone"), "r"
        )
        assert [orjson.loads(b)["phone"] for b in batch.bodies] == ["79001234567"]
        assert batch.rejected_reasons == ["invalid phone in phone"]

    def test_list_email_key(self) -> None:
        """A list in an email column is its items' text: one address is sent, two are invalid."""
        batch = build_batch(frame(email=[["a@b.c"], ["a@b.c", "d@e.f"]]), ImportOptions(db_id=1), "r")
        assert [orjson.loads(b)["email"] for b in batch.bodies] == ["a@b.c"]
        assert batch.rejected_reasons == ["invalid email in email"]


@pytest.mark.usefixtures("layout")
class TestLists:
    def test_lists_in_data_are_json_arrays(self) -> None:
        """List and array columns in data are sent as JSON arrays of their items."""
        df = frame(
            email=["a@b.c"],
            tags=[["tag-1", "tag-2"]],
            n=[[1, 2]],
            fixed=pl.Series([["x", "y"]], dtype=pl.Array(pl.String, 2)),
            empty=pl.Series([[]], dtype=pl.List(pl.String)),
        )
        assert bodies(df)[0]["data"] == {
            "tags": ["tag-1", "tag-2"],
            "n": [1, 2],
            "fixed": ["x", "y"],
            "empty": [],
        }

    @pytest.mark.parametrize(
        ("cell", "phones"),
        [
            (["+7 (900) 123-45-67", "", None, " 8.900.1 "], ["+79001234567", "89001"]),
            ("+7 (900) 123-45-67, , 8(900)1", ["+79001234567", "89001"]),
            (" - ", []),
        ],
    )
    def test_phones_items_are_cleaned_like_the_phone_key(self, cell: object, phones: list[str]) -> None:
        """phones items lose spaces, dashes, dots and brackets, whether a list or a string; empty ones go."""
        assert bodies(frame(email=["a@b.c"], phones=[cell]))[0]["data"]["phones"] == phones

    def test_numeric_phones(self) -> None:
        """A whole float phone is its digits; a fractional one is no phone."""
        df = frame(email=["a@b.c", "d@e.f"], phones=[79001234567.0, 1.5])
        assert [b["data"]["phones"] for b in bodies(df)] == [["79001234567"], []]
        array = pl.Series([["+7 900", "1-2"]], dtype=pl.Array(pl.String, 2))
        assert bodies(frame(email=["a@b.c"], phones=array))[0]["data"]["phones"] == ["+7900", "12"]

    @settings(deadline=None)
    @given(
        st.lists(
            st.lists(st.one_of(st.none(), st.text("0123456789+ -().\t", max_size=14)), max_size=4),
            min_size=1,
            max_size=10,
        )
    )
    def test_any_phones_list_or_string(self, cells: list[list[str | None]]) -> None:
        """Items lose PHONE_NOISE_RE's characters, empty and null ones go; a list and its string agree."""
        emails = [f"u{i}@x.y" for i in range(len(cells))]
        lists = frame(email=emails, phones=pl.Series(cells, dtype=pl.List(pl.String)))
        texts = frame(email=emails, phones=[",".join(i for i in items if i is not None) for items in cells])
        for as_list, as_text, items in zip(bodies(lists), bodies(texts), cells, strict=True):
            cleaned = [re.sub(PHONE_NOISE_RE, "", i) for i in items if i is not None]
            assert as_list["data"]["phones"] == as_text["data"]["phones"] == [c for c in cleaned if c]

    @pytest.mark.parametrize("nulls", ["skip", "keep"])
    @pytest.mark.parametrize("column", [["x", None], [["1234567"], None], ["1234567", None]])
    def test_a_single_nullable_data_column(self, column: list[Any], nulls: str) -> None:
        """With one data column, a null cell is left out (or null with keep): never a blank or bad JSON."""
        for name in ("city", "phones"):
            df = frame(email=["a@b.c", "d@e.f"], **{name: column})
            second = bodies(df, nulls=nulls)[1]["data"]
            assert second == ({} if nulls == "skip" else {name: None})


WIDE = 2_000


def wide_frame(rows: int, columns: int) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """An email and ``columns`` more: text with and without what JSON escapes, ints, booleans,
    dates and a phones column among them, a null in every few cells; and each row's ``data``."""
    kinds = ["plain", "escape", "int", "bool", "date", "plain", "plain"]
    texts = ["ab", 'say "hi"', "back\\slash", "tab\tnew\nline", "nul\x00", "é中\u2028", "", " x "]
    data: dict[str, list[Any]] = {}
    for j in range(columns):
        kind = kinds[j % len(kinds)]
        cells: list[Any] = []
        for i in range(rows):
            n = i * 31 + j * 17
            if n % 5 == 0:
                cells.append(None)
            elif kind == "plain":
                cells.append(f"v{n}")
            elif kind == "escape":
                cells.append(texts[n % len(texts)])
            elif kind == "int":
                cells.append(n - 1000)
            elif kind == "bool":
                cells.append(n % 2 == 0)
            else:
                cells.append(dt.date(2000, 1, 1) + dt.timedelta(days=n % 9000))
        data[f"c{j}" if j != 7 else "phones"] = cells
    df = pl.DataFrame({"email": [f"u{i}@x.y" for i in range(rows)], **data}, strict=False)
    df = df.with_columns(pl.col("phones").cast(pl.String))
    expected = [{name: df[name][i] for name in data} for i in range(rows)]
    return df.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64)), expected


@pytest.mark.usefixtures("layout")
class TestBatchProfiles:
    """``--via api``: each row a profile of ``import_batch``, its fields with the key among them."""

    @settings(deadline=None)
    @given(
        st.lists(
            st.fixed_dictionaries(
                {
                    "CRM_ID": st.one_of(st.none(), st.integers(0, 10**6)),
                    "phone": st.one_of(st.none(), st.sampled_from(["+7 900 123-45-67", "79001112233", "x"])),
                    "t": st.one_of(st.none(), st.text('ab"\\\né', max_size=4)),
                    "n": st.one_of(st.none(), st.integers(-5, 5)),
                }
            ),
            min_size=1,
            max_size=12,
        ),
        st.sampled_from(["email", "phone", "custom"]),
        st.sampled_from(["skip", "keep"]),
    )
    def test_a_profile_is_the_database_import_bodys_key_and_data(
        self, rows: list[dict[str, Any]], matching: str, nulls: str
    ) -> None:
        """The same rows sent per message and in a batch: the profile is the body's data with the
        key under its matching's name (a custom key is in data already); the same rows go."""
        df = frame(
            email=[f"u{i}@x.y" for i in range(len(rows))], **{c: [r[c] for r in rows] for c in rows[0]}
        )
        common: dict[str, Any] = {"db_id": 1, "matching": matching, "nulls": nulls}
        if matching == "custom":
            common["field_name"] = "CRM_ID"
        per_row = build_batch(df, ImportOptions(**common), "r1")
        batched = build_batch(df, ImportOptions(via="api", api_token="T", **common), "r1")
        assert batched.rows == per_row.rows
        assert batched.rejected_rows == per_row.rejected_rows
        assert batched.ids == []
        for body, item in zip(per_row.bodies, batched.bodies, strict=True):
            sent = orjson.loads(body)
            key = {} if matching == "custom" else {matching: sent[matching]}
            assert orjson.loads(item) == key | sent["data"]

    def test_a_column_named_as_the_key_field_gives_way_to_the_key(self) -> None:
        """Matched by email from another column, a column named email is not sent beside the key."""
        df = frame(work=["a@b.c"], email=["old@b.c"], n=[1])
        options = ImportOptions(db_id=1, via="api", api_token="T", key_column="work")
        assert [orjson.loads(b) for b in build_batch(df, options, "r1").bodies] == [
            {"email": "a@b.c", "n": 1}
        ]


@pytest.mark.usefixtures("layout")
class TestWide:
    @pytest.mark.parametrize("nulls", ["skip", "keep"])
    def test_thousands_of_columns(self, nulls: str) -> None:
        """2,000 columns of every kind, nulls anywhere: each body is what a JSON encoder makes of its row."""
        df, rows = wide_frame(60, WIDE)
        batch = build_batch(df, ImportOptions(db_id=5, nulls=nulls), "r9")  # type: ignore[arg-type]
        assert batch.rows == list(range(60))
        for i, (row, body) in enumerate(zip(rows, batch.bodies, strict=True)):
            data = {
                name: (value.isoformat() if isinstance(value, dt.date) else value)
                for name, value in row.items()
                if nulls == "keep" or value is not None
            }
            if row["phones"] is not None:
                data["phones"] = [p for p in re.sub(PHONE_NOISE_RE, "", row["phones"]).split(",") if p]
            expected = {"account_id": 1, "db_id": 5, "matching": "email", "email": f"u{i}@x.y"}
            expected |= {"data": data, "feedback_id": f"r9-{i}"}
            assert body == orjson.dumps(expected), i


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
