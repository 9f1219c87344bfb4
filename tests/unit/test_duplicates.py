"""Rows that share a key: found before sending, exactly, whichever rows are kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk_import import duplicates
from bulk_import.config import ImportOptions
from bulk_import.duplicates import Duplicates, find_duplicates
from bulk_import.errors import InputError
from bulk_import.messages import ROW, build_batch
from tests.helpers import dry_run_doc

EMAILS = st.sampled_from(["a@x.y", "A@X.Y", " a@x.y ", "b@x.y", "B@x.y\t", "c@x.y", "bad", "", None])


def frames_of(keys: list[str | None], size: int) -> Iterator[pl.DataFrame]:
    """The file as the reader gives it: consecutive rows, ``size`` a frame."""
    frame = pl.DataFrame({"email": keys, "n": range(len(keys))}, schema={"email": pl.String, "n": pl.Int64})
    numbered = frame.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))
    return iter(numbered.iter_slices(size))


def model(keys: list[str | None], policy: str) -> dict[int, int]:
    """Skipped row → kept row, worked out the plain way."""
    groups: dict[str, list[int]] = {}
    for row, key in enumerate(keys):
        if key is None or "@" not in key.strip():
            continue  # rejected rows are no one's duplicate
        groups.setdefault(key.strip().lower(), []).append(row)
    out = {}
    for rows in groups.values():
        kept = rows[-1] if policy == "last" else rows[0]
        out |= {row: kept for row in rows if row != kept}
    return out


def found(keys: list[str | None], policy: str, size: int) -> dict[int, int]:
    options = ImportOptions(db_id=1, on_duplicate_key=policy)  # type: ignore[arg-type]
    got = find_duplicates(Path("f.csv"), options, lambda: frames_of(keys, size))
    return dict(got.skipped.select("row", "kept").iter_rows())


@given(keys=st.lists(EMAILS, max_size=60), policy=st.sampled_from(["last", "first"]), size=st.integers(1, 7))
def test_the_rows_skipped_are_the_models(keys: list[str | None], policy: str, size: int) -> None:
    assert found(keys, policy, size) == model(keys, policy)


@given(keys=st.lists(EMAILS, max_size=40), size=st.integers(1, 7))
def test_a_shared_hash_never_skips_a_row(keys: list[str | None], size: int) -> None:
    """Every key hashing alike: the second pass still groups by the key itself."""
    real = duplicates._hashes

    def one_hash(frame: pl.DataFrame, options: ImportOptions) -> pl.Series:
        return pl.Series("hash", [7] * len(real(frame, options)), pl.UInt32)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(duplicates, "_hashes", one_hash)
        assert found(keys, "last", size) == model(keys, "last")


@given(keys=st.lists(EMAILS, max_size=40), size=st.integers(1, 7), wide=st.integers(0, 12))
def test_hashes_cut_to_32_bits_past_the_wide_rows_find_the_same(
    keys: list[str | None], size: int, wide: int
) -> None:
    """Past WIDE_HASH_ROWS rows the hashes kept so far and the rest are narrowed: same rows found."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(duplicates, "WIDE_HASH_ROWS", wide)
        assert found(keys, "last", size) == model(keys, "last")


def test_a_file_without_duplicates_is_read_once() -> None:
    """64-bit hashes of distinct keys do not meet by chance: no second pass over the file."""
    keys = [f"user{i}@example.com" for i in range(200_000)]
    reads = 0

    def frames() -> Iterator[pl.DataFrame]:
        nonlocal reads
        reads += 1
        return frames_of(keys, 50_000)

    got = find_duplicates(Path("f.csv"), ImportOptions(db_id=1), frames)
    assert got.skipped.is_empty()
    assert reads == 1


def test_all_sends_everything_and_fail_names_the_first_two_rows() -> None:
    keys = ["a@x.y", "b@x.y", "B@X.Y", "A@x.y", "b@x.y"]
    assert found(keys, "all", 2) == {}
    with pytest.raises(InputError, match=r"rows 0 and 3 have the same key 'a@x\.y' \(2 keys are on more"):
        found(keys, "fail", 2)


def test_a_phone_is_compared_as_sent() -> None:
    options = ImportOptions(db_id=1, matching="phone")
    frame = pl.DataFrame({ROW: [0, 1, 2], "phone": ["+7 (900) 111-22-33", "+79001112233", "+7 900 000"]})
    got = find_duplicates(Path("f.csv"), options, lambda: iter([frame]))
    assert dict(got.skipped.select("row", "kept").iter_rows()) == {0: 1}


def test_a_skipped_row_is_in_the_keys_with_the_row_sent_instead_and_not_sent() -> None:
    frame = pl.DataFrame({ROW: [10, 11, 12, 13], "email": ["a@x.y", "b@x.y", "A@x.y", "bad"]})
    skipped = Duplicates(pl.DataFrame({"row": [10], "kept": [12], "key": ["a@x.y"]}))
    batch = build_batch(skipped.marked(frame), ImportOptions(db_id=1), "r")
    assert batch.rows == [11, 12]
    assert batch.skipped_rows == [10]
    assert batch.rejected_rows == [13]
    assert batch.keys["reason"].to_list() == [
        "duplicate key: row 12 is sent",
        None,
        None,
        "invalid email in email",
    ]
    assert all(b"__duplicate_of" not in body for body in batch.bodies)


def test_a_frame_without_skipped_rows_is_left_as_it_is() -> None:
    skipped = Duplicates(pl.DataFrame({"row": [5, 900], "kept": [7, 901], "key": ["a", "b"]}))
    frame = pl.DataFrame({ROW: [100, 101], "email": ["x@y.z", "y@y.z"]})
    assert skipped.marked(frame) is frame


def test_dry_run_counts_them(tmp_path: Path) -> None:
    data = tmp_path / "c.csv"
    data.write_text("email,n\na@x.y,1\nb@x.y,2\nA@X.Y,3\n")
    code, output, doc = dry_run_doc(data)
    assert code == 0, output
    assert "2 would be sent, 0 rejected, 1 skipped as duplicate keys" in output
    assert doc["skipped_duplicates"] == 1
    code, output, _ = dry_run_doc(data, "--on-duplicate-key", "fail")
    assert code == 2
    assert "rows 0 and 2 have the same key 'a@x.y'" in output


def test_a_row_refused_for_a_cell_elsewhere_is_no_ones_duplicate(tmp_path: Path) -> None:
    """The later row has a score that is not an int: it is rejected, so the earlier one is sent."""
    data = tmp_path / "c.csv"
    data.write_text("email,city,score\na@x.y,Oslo,1\nb@x.y,Rome,2\nA@x.y,Nice,n/a\n")
    code, output, doc = dry_run_doc(data, "--type", "score:int")
    assert code == 1, output
    assert (doc["valid"], doc["rejected"], doc["skipped_duplicates"]) == (2, 1, 0)
