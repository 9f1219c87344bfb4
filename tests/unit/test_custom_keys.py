"""Bodies built from a file, answered by the stand-in: each key type finds the profile it made."""

from __future__ import annotations

from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulk_import.config import ImportOptions
from bulk_import.emulator.profiles import OK, ProfileStore
from bulk_import.messages import ROW, build_batch


def frame(**columns: Any) -> pl.DataFrame:
    return pl.DataFrame(columns).with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))


def import_rows(store: ProfileStore, df: pl.DataFrame, **options: Any) -> list[dict[str, Any]]:
    """Each row's reply, in row order; a rejected row fails the test."""
    batch = build_batch(df, ImportOptions(db_id=1, **options), "r1")
    assert batch.rejected_reasons == []
    return [store.apply(orjson.loads(body)) for body in batch.bodies]


def profile_ids(replies: list[dict[str, Any]]) -> list[str]:
    assert all(r["error"] == OK for r in replies), replies
    return [r["profile_id"] for r in replies]


CUSTOM: dict[str, Any] = {"matching": "custom", "field_name": "CRM_ID"}


@pytest.mark.parametrize(
    ("first", "again"),
    [
        (pl.Series([42.0]), pl.Series([42])),
        (pl.Series([42.0]), pl.Series(["42"])),
        (pl.Series(["  abc "]), pl.Series(["abc"])),
        (pl.Series([["tag-1", "tag-2"]]), pl.Series(["tag-2,tag-1"])),
        (pl.Series([["tag-1", "tag-2"]]), pl.Series([[" tag-2", "tag-1", "tag-1", ""]])),
    ],
)
def test_the_same_key_in_another_form_finds_the_profile(first: pl.Series, again: pl.Series) -> None:
    """A key imported once is found again by the same value in another type or spelling."""
    store = ProfileStore(seed=1)
    [created] = profile_ids(import_rows(store, frame(CRM_ID=first, city=["Oslo"]), **CUSTOM))
    [found] = profile_ids(import_rows(store, frame(CRM_ID=again, city=["Rome"]), **CUSTOM))
    assert found == created
    assert len(store) == 1
    profile = store.get(1, 1, created)
    assert profile is not None and profile["city"] == "Rome"


@settings(max_examples=50, deadline=None)
@given(
    st.one_of(
        st.lists(st.integers(-(2**53), 2**53).map(float), min_size=1, max_size=10).map(
            lambda xs: pl.Series(xs, dtype=pl.Float64)
        ),
        st.lists(
            st.text(st.characters(exclude_categories=("C",), exclude_characters=","), min_size=1, max_size=8),
            min_size=1,
            max_size=10,
        ).map(lambda xs: pl.Series(xs, dtype=pl.String)),
    )
)
def test_reimporting_a_file_changes_no_key(column: pl.Series) -> None:
    """A float or string key column imported twice updates the same profiles: data never moves a key."""
    batch = build_batch(frame(CRM_ID=column), ImportOptions(db_id=1, **CUSTOM), "r1")
    store = ProfileStore(seed=1)
    first = profile_ids([store.apply(orjson.loads(b)) for b in batch.bodies])
    again = profile_ids([store.apply(orjson.loads(b)) for b in batch.bodies])
    assert again == first
    assert len(store) == batch.keys.filter(pl.col("reason").is_null())["key"].n_unique()


def test_phones_are_found_by_phone_matching() -> None:
    """Phones sent in data (a list or a string, with punctuation) are found by phone matching."""
    store = ProfileStore(seed=1)
    df = frame(email=["a@b.c", "d@e.f"], phones=[["+7 (900) 123-45-67", ""], ["8.900.765.43.21", None]])
    by_email = profile_ids(import_rows(store, df))
    by_phone = profile_ids(import_rows(store, frame(phone=["+79001234567", "89007654321"]), matching="phone"))
    assert by_phone == by_email
