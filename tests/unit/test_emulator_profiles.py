"""The stand-in's profile store: the documented matching semantics, its error codes, SQLite persistence."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulk_import.emulator.profiles import (
    BAD_ACCOUNT_ID,
    BAD_DATA,
    BAD_DB_ID,
    BAD_EMAIL,
    BAD_FEEDBACK_ID,
    BAD_FIELD_NAME,
    BAD_FIELD_VALUE,
    BAD_FLAG,
    BAD_PHONE,
    BAD_PROFILE_ID,
    BAD_RESOURCE_ID,
    ERROR_CODES,
    NOT_FOUND_UPDATE_ONLY,
    OK,
    TEMPORARY_FAILURE,
    UNKNOWN_MATCHING,
    UNKNOWN_PROFILE_ID,
    ProfileStore,
    custom_key,
    normalize_phone,
)

ID_RE = re.compile(r"^[0-9a-f]{24}$")
REPLY_KEYS = {"error", "error_text", "feedback_id", "matching_field", "profile_id"}


def req(matching: str = "email", **fields: Any) -> dict[str, Any]:
    """A request for db 1 of account 1, with empty data unless given."""
    base: dict[str, Any] = {
        "account_id": 1,
        "db_id": 1,
        "matching": matching,
        "data": {},
        "feedback_id": "r-1",
    }
    base.update(fields)
    return base


def ok(reply: dict[str, Any]) -> str:
    """The profile id of a successful reply (fails the test otherwise)."""
    assert reply["error"] == OK, reply
    assert reply["error_text"] == "Successful operation"
    assert ID_RE.match(reply["profile_id"])
    return str(reply["profile_id"])


@pytest.fixture
def store() -> ProfileStore:
    return ProfileStore(seed=1)


def test_error_codes_are_distinct_and_documented() -> None:
    """Every code has its own text, 0 is success, and the injected failure is in the table."""
    assert ERROR_CODES[OK] == "Successful operation"
    assert len(set(ERROR_CODES.values())) == len(ERROR_CODES)
    assert TEMPORARY_FAILURE in ERROR_CODES
    assert all(isinstance(code, int) and code >= 0 for code in ERROR_CODES)


def test_email_creates_then_updates_the_same_profile(store: ProfileStore) -> None:
    """Email matching creates a profile holding the email; the same key (any case) finds it again."""
    first = ok(store.apply(req(email="Ann@Example.com", data={"_fname": "Ann", "city": "Oslo"})))
    again = store.apply(req(email=" ann@example.COM ", data={"_fname": "Anna"}, feedback_id="r-2"))
    assert ok(again) == first
    assert again["feedback_id"] == "r-2"
    assert again["matching_field"] == "email"
    profile = store.get(1, 1, first)
    assert profile == {"_fname": "Anna", "city": "Oslo", "email": "Ann@Example.com"}
    assert len(store) == 1


def test_reply_has_the_documented_fields(store: ProfileStore) -> None:
    """A reply has exactly error, error_text, feedback_id, matching_field and profile_id."""
    assert set(store.apply(req(email="a@b.c"))) == REPLY_KEYS
    assert set(store.apply(req(matching="nope"))) == REPLY_KEYS


def test_missing_feedback_id_is_echoed_empty(store: ProfileStore) -> None:
    """feedback_id is optional: without it the request is applied and the reply carries ""."""
    request = req(email="a@b.c")
    del request["feedback_id"]
    reply = store.apply(request)
    ok(reply)
    assert reply["feedback_id"] == ""


def test_matching_defaults_to_email(store: ProfileStore) -> None:
    """Without ``matching`` the request matches by email, as documented."""
    request = req(email="a@b.c")
    del request["matching"]
    reply = store.apply(request)
    assert reply["matching_field"] == "email"
    assert ok(reply) == ok(store.apply(req(email="A@B.C")))


def test_phone_matches_digits_in_phones_or_phone(store: ProfileStore) -> None:
    """Phone matching ignores formatting and finds the phones list and the phone field."""
    created = ok(store.apply(req("phone", phone="+7 (900) 123-45-67", data={"_fname": "Bo"})))
    assert store.get(1, 1, created) == {"_fname": "Bo", "phones": ["+7 (900) 123-45-67"]}
    assert ok(store.apply(req("phone", phone="79001234567"))) == created
    by_field = ok(store.apply(req(email="c@d.e", data={"phone": "+7900 765 43 21"})))
    assert ok(store.apply(req("phone", phone="+79007654321"))) == by_field
    in_list = ok(store.apply(req(email="f@g.h", data={"phones": ["+1 555 000 1111", "+15550002222"]})))
    assert ok(store.apply(req("phone", phone="15550002222"))) == in_list
    assert len(store) == 3


def test_phones_are_found_when_phone_matching_comes_late(store: ProfileStore) -> None:
    """Profiles created and changed by email before any phone matching are found by their phones
    as they are now: the old phone finds nothing, the new one the profile."""
    first = ok(store.apply(req(email="a@b.c", data={"phones": ["+79001234567"]})))
    second = ok(store.apply(req(email="d@e.f", data={"phone": "+79007654321"})))
    assert ok(store.apply(req(email="a@b.c", data={"phones": ["+79005550000"]}))) == first
    assert ok(store.apply(req("phone", phone="79005550000"))) == first
    assert ok(store.apply(req("phone", phone="79007654321"))) == second
    assert ok(store.apply(req("phone", phone="79001234567"))) not in (first, second)
    assert len(store) == 3


def test_custom_field_matches_its_value_as_text(store: ProfileStore) -> None:
    """Custom matching stores field_name=field_value; 123420 and "123420" are the same key."""
    created = ok(store.apply(req("custom", field_name="CRM_ID", field_value=123420, data={"x": 1})))
    assert store.get(1, 1, created) == {"x": 1, "CRM_ID": 123420}
    assert ok(store.apply(req("custom", field_name="CRM_ID", field_value="123420"))) == created
    assert ok(store.apply(req("custom", field_name="OTHER", field_value=123420))) != created


def test_custom_field_finds_profiles_created_by_other_matchings(store: ProfileStore) -> None:
    """A profile created by email with a field in data is found by that field later, and vice versa."""
    by_email = ok(store.apply(req(email="a@b.c", data={"CRM_ID": 7})))
    assert ok(store.apply(req("custom", field_name="CRM_ID", field_value=7))) == by_email
    later = ok(store.apply(req(email="x@y.z", data={"CRM_ID": 8})))
    assert ok(store.apply(req("custom", field_name="CRM_ID", field_value="8"))) == later
    assert len(store) == 2


def test_tag_field_matches_a_set_of_tags(store: ProfileStore) -> None:
    """A tag key is a set: order, repeats, spaces around items and empty items do not matter."""
    created = ok(store.apply(req("custom", field_name="TAGS", field_value="tag-1, tag-2")))
    for spelling in ("tag-2,tag-1", " tag-1 ,tag-2, tag-1", "tag-1, tag-2,", "tag-2, ,tag-1"):
        assert ok(store.apply(req("custom", field_name="TAGS", field_value=spelling))) == created
    assert ok(store.apply(req("custom", field_name="TAGS", field_value="tag-1, tag-3"))) != created
    assert ok(store.apply(req("custom", field_name="TAGS", field_value="tag-1"))) != created
    assert len(store) == 3


def test_tag_list_in_data_is_found_by_its_tag_string(store: ProfileStore) -> None:
    """A profile whose field holds a list of tags is found by those tags in any order, and keeps them."""
    pid = ok(store.apply(req(email="a@b.c", data={"TAGS": ["vip", "b2b", "vip"]})))
    assert ok(store.apply(req("custom", field_name="TAGS", field_value="b2b, vip"))) == pid
    reply = store.apply(
        req("custom", field_name="TAGS", field_value="vip,b2b", data={"TAGS": [" b2b", "vip "]})
    )
    assert ok(reply) == pid
    assert ok(store.apply(req("custom", field_name="TAGS", field_value="vip, b2b", update_only=True))) == pid
    assert len(store) == 1


@settings(deadline=None)
@given(
    st.lists(
        st.text(st.characters(exclude_categories=("Z", "C"), exclude_characters=","), min_size=1), min_size=1
    ),
    st.randoms(use_true_random=False),
)
def test_any_spelling_of_a_tag_set_is_one_key(tags: list[str], rnd: Any) -> None:
    """Shuffled, repeated, padded, with an empty item, or a list: a set of tags is one key."""
    store = ProfileStore(seed=0)
    created = ok(store.apply(req("custom", field_name="T", field_value=", ".join(tags))))
    shuffled = [*tags, *rnd.sample(tags, k=len(tags) // 2)]
    rnd.shuffle(shuffled)
    items = [f"{' ' * rnd.randint(0, 2)}{t}{' ' * rnd.randint(0, 2)}" for t in shuffled]
    items.insert(rnd.randint(0, len(items)), " ")  # an empty item: a comma even with one tag
    padded = ",".join(items)
    assert ok(store.apply(req("custom", field_name="T", field_value=padded))) == created
    assert custom_key(shuffled) == custom_key(padded) == custom_key(", ".join(sorted(set(tags))))
    assert len(store) == 1


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (123420, "123420"),
        ("123420", "123420"),
        (" abc", " abc"),
        ("b, a", "a, b"),
        (["b", "a", "b"], "a, b"),
        ([], ""),
        (None, None),
        ({"a": 1}, None),
    ],
)
def test_custom_key(value: object, key: str | None) -> None:
    """Scalars match on their text as it is; lists and strings with commas on their set of tags."""
    assert custom_key(value) == key


def test_profile_id_matching_updates(store: ProfileStore) -> None:
    """profile_id matching updates the profile with that id (any case of hex digits)."""
    pid = ok(store.apply(req(email="a@b.c", data={"v": 1})))
    reply = store.apply(req("profile_id", profile_id=pid.upper(), data={"v": 2}))
    assert ok(reply) == pid
    assert reply["matching_field"] == "profile_id"
    assert store.get(1, 1, pid) == {"v": 2, "email": "a@b.c"}


def test_unknown_profile_id_is_an_error_not_a_new_profile(store: ProfileStore) -> None:
    """profile_id matching only updates: an unknown id is error 301 and nothing is created."""
    reply = store.apply(req("profile_id", profile_id="60f039e830b8bcb28392f8eb", data={"v": 1}))
    assert reply["error"] == UNKNOWN_PROFILE_ID
    assert reply["error_text"] == ERROR_CODES[UNKNOWN_PROFILE_ID]
    assert reply["profile_id"] == ""
    assert reply["feedback_id"] == "r-1"
    assert len(store) == 0


def test_profile_id_is_per_database(store: ProfileStore) -> None:
    """A profile id of one database is unknown in another."""
    pid = ok(store.apply(req(email="a@b.c")))
    assert store.apply(req("profile_id", profile_id=pid, db_id=2))["error"] == UNKNOWN_PROFILE_ID


def test_databases_are_separate(store: ProfileStore) -> None:
    """The same email in two databases (or accounts) is two profiles."""
    a = ok(store.apply(req(email="a@b.c")))
    b = ok(store.apply(req(email="a@b.c", db_id=2)))
    c = ok(store.apply(req(email="a@b.c", account_id=2)))
    assert len({a, b, c}) == 3


@pytest.mark.parametrize(
    ("matching", "key"),
    [
        ("email", {"email": "new@b.c"}),
        ("phone", {"phone": "+79000000000"}),
        ("custom", {"field_name": "K", "field_value": 1}),
    ],
)
def test_update_only_never_creates(store: ProfileStore, matching: str, key: dict[str, Any]) -> None:
    """update_only with an unknown key is error 300 and creates nothing; with a known key it updates."""
    reply = store.apply(req(matching, update_only=True, **key))
    assert reply["error"] == NOT_FOUND_UPDATE_ONLY
    assert reply["profile_id"] == ""
    assert len(store) == 0
    pid = ok(store.apply(req(matching, **key)))
    assert ok(store.apply(req(matching, update_only=True, data={"z": 1}, **key))) == pid
    profile = store.get(1, 1, pid)
    assert profile is not None and profile["z"] == 1


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"account_id": None}, BAD_ACCOUNT_ID),
        ({"account_id": "1"}, BAD_ACCOUNT_ID),
        ({"account_id": True}, BAD_ACCOUNT_ID),
        ({"db_id": None}, BAD_DB_ID),
        ({"db_id": 1.5}, BAD_DB_ID),
        ({"data": None}, BAD_DATA),
        ({"data": [1, 2]}, BAD_DATA),
        ({"update_only": "yes"}, BAD_FLAG),
        ({"skip_triggers": 1}, BAD_FLAG),
        ({"resource_id": "3"}, BAD_RESOURCE_ID),
        ({"feedback_id": 42}, BAD_FEEDBACK_ID),
        ({"matching": "nickname"}, UNKNOWN_MATCHING),
        ({"matching": 3}, UNKNOWN_MATCHING),
        ({"email": None}, BAD_EMAIL),
        ({"email": "not-an-address"}, BAD_EMAIL),
        ({"matching": "phone", "phone": None}, BAD_PHONE),
        ({"matching": "phone", "phone": "12-ab"}, BAD_PHONE),
        ({"matching": "phone", "phone": "123"}, BAD_PHONE),
        ({"matching": "profile_id"}, BAD_PROFILE_ID),
        ({"matching": "profile_id", "profile_id": "xyz"}, BAD_PROFILE_ID),
        ({"matching": "custom", "field_value": 1}, BAD_FIELD_NAME),
        ({"matching": "custom", "field_name": "", "field_value": 1}, BAD_FIELD_NAME),
        ({"matching": "custom", "field_name": "K"}, BAD_FIELD_VALUE),
        ({"matching": "custom", "field_name": "K", "field_value": [1]}, BAD_FIELD_VALUE),
    ],
)
def test_invalid_requests_get_their_own_code(store: ProfileStore, change: dict[str, Any], code: int) -> None:
    """A missing or mistyped field is the documented error code and text, and changes nothing."""
    request = req(email="a@b.c", data={"v": 1})
    for name, value in change.items():
        if value is None:
            request.pop(name, None)
        else:
            request[name] = value
    reply = store.apply(request)
    assert reply["error"] == code
    assert reply["error_text"] == ERROR_CODES[code]
    assert reply["profile_id"] == ""
    assert len(store) == 0


def test_unknown_matching_is_echoed(store: ProfileStore) -> None:
    """The reply names the matching that was asked for, even an unknown one."""
    assert store.apply(req("nickname"))["matching_field"] == "nickname"


def test_changing_the_email_moves_the_key(store: ProfileStore) -> None:
    """An update that sets a new email is found by the new email and no longer by the old one."""
    pid = ok(store.apply(req(email="old@b.c")))
    ok(store.apply(req("profile_id", profile_id=pid, data={"email": "new@b.c"})))
    assert ok(store.apply(req(email="new@b.c"))) == pid
    assert store.apply(req(email="old@b.c", update_only=True))["error"] == NOT_FOUND_UPDATE_ONLY


def test_shared_data_phone_stays_with_the_first_profile(store: ProfileStore) -> None:
    """Two contacts with the same phone in data are both created; phone matching finds the first."""
    first = ok(store.apply(req(email="a@b.c", data={"phone": "+79001112233"})))
    second = ok(store.apply(req(email="d@e.f", data={"phone": "+79001112233"})))
    assert first != second
    assert ok(store.apply(req("phone", phone="+79001112233"))) == first


def test_ids_are_unique_hex_and_repeatable_by_seed() -> None:
    """Ids are 24 lowercase hex characters, unique, the same for the same seed, new for another."""
    emails = [f"u{i}@x.y" for i in range(1000)]
    runs = []
    for seed in (1, 1, 2):
        s = ProfileStore(seed=seed)
        runs.append([ok(s.apply(req(email=e))) for e in emails])
    assert len(set(runs[0])) == 1000
    assert runs[0] == runs[1]
    assert not set(runs[0]) & set(runs[2])


def test_unseeded_stores_do_not_share_ids() -> None:
    """Two stores without a seed hand out different ids for the same requests."""
    a, b = ProfileStore(), ProfileStore()
    assert ok(a.apply(req(email="a@b.c"))) != ok(b.apply(req(email="a@b.c")))


def test_request_dict_is_not_kept(store: ProfileStore) -> None:
    """Changing the caller's data after apply() does not change the stored profile."""
    data = {"v": 1}
    pid = ok(store.apply(req(email="a@b.c", data=data)))
    data["v"] = 2
    assert store.get(1, 1, pid) == {"v": 1, "email": "a@b.c"}


def test_sqlite_round_trip(tmp_path: Path) -> None:
    """A reopened SQLite store finds every key again, keeps the data, and never reuses an id."""
    path = tmp_path / "profiles.sqlite"
    with ProfileStore(path) as first:
        by_email = ok(first.apply(req(email="a@b.c", data={"_fname": "Ann", "CRM_ID": 5})))
        by_phone = ok(first.apply(req("phone", phone="+79001234567")))
        by_custom = ok(first.apply(req("custom", field_name="CRM_ID", field_value="77", db_id=9)))
        ok(first.apply(req(email="a@b.c", data={"city": "Oslo"})))
    with ProfileStore(path) as again:
        assert len(again) == 3
        assert again.get(1, 1, by_email) == {"_fname": "Ann", "CRM_ID": 5, "email": "a@b.c", "city": "Oslo"}
        assert ok(again.apply(req(email="A@b.c"))) == by_email
        assert ok(again.apply(req("phone", phone="79001234567"))) == by_phone
        assert ok(again.apply(req("custom", field_name="CRM_ID", field_value=77, db_id=9))) == by_custom
        assert ok(again.apply(req("custom", field_name="CRM_ID", field_value=5))) == by_email
        assert ok(again.apply(req("profile_id", profile_id=by_phone, data={"v": 1}))) == by_phone
        fresh = ok(again.apply(req(email="new@b.c")))
    assert fresh not in {by_email, by_phone, by_custom}
    with ProfileStore(path) as third:
        assert len(third) == 4
        assert third.get(1, 1, by_phone) == {"phones": ["+79001234567"], "v": 1}


def test_flush_makes_changes_visible_before_close(tmp_path: Path) -> None:
    """After flush() another reader of the file sees the profiles, before the store is closed."""
    path = tmp_path / "p.sqlite"
    store = ProfileStore(path)
    try:
        ok(store.apply(req(email="a@b.c")))
        store.flush()
        with sqlite3.connect(path) as sql:
            assert sql.execute("SELECT count(*) FROM profiles").fetchone() == (1,)
    finally:
        store.close()


def test_many_profiles_flush_in_batches(tmp_path: Path) -> None:
    """More profiles than one write batch all survive a reopen, with their ids."""
    path = tmp_path / "p.sqlite"
    with ProfileStore(path) as store:
        ids = [ok(store.apply(req(email=f"u{i}@x.y"))) for i in range(25_000)]
    with ProfileStore(path) as again:
        assert [ok(again.apply(req(email=f"u{i}@x.y"))) for i in range(0, 25_000, 997)] == ids[::997]


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("+7 (900) 123-45-67", "79001234567"),
        ("79001234567", "79001234567"),
        ("+1.555.000.1111", "15550001111"),
    ],
)
def test_normalize_phone(raw: str, digits: str) -> None:
    """Phones compare by digits: +, spaces, dashes, dots and brackets are ignored."""
    assert normalize_phone(raw) == digits


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
request_keys = st.sampled_from(
    ["account_id", "db_id", "data", "feedback_id", "matching", "email", "phone", "profile_id",
     "field_name", "field_value", "update_only", "skip_triggers", "resource_id"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(request_keys, json_values))
def test_any_request_gets_a_documented_reply(request: dict[str, Any]) -> None:
    """Whatever JSON object arrives, apply() answers with the reply fields and a code from the table."""
    reply = ProfileStore(seed=0).apply(request)
    assert set(reply) == REPLY_KEYS
    assert reply["error"] in ERROR_CODES
    assert reply["error_text"] == ERROR_CODES[reply["error"]]
