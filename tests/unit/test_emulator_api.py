"""The stand-in's api_req path: a message in, the API's response body out, on the shared store."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from bulk_import.emulator import API_ERROR_CODES, ApiAnswer, ApiService, EmulatorSettings, ProfileStore
from bulk_import.emulator.api import (
    BAD_REQUEST,
    MAX_BATCH,
    TARIFF_LIMIT,
    UNAUTHORIZED,
    UNKNOWN_METHOD,
    malformed_response,
    sniff_request_id,
)
from bulk_import.emulator.profiles import (
    ALREADY_EXISTS,
    BAD_DATA,
    BAD_EMAIL,
    BAD_FIELD_VALUE,
    BAD_PHONE,
    BAD_PROFILE_ID,
    ERROR_CODES,
    NOT_FOUND_UPDATE_ONLY,
    OK,
    TEMPORARY_FAILURE,
    UNKNOWN_PROFILE_ID,
)
from bulk_import.errors import InputError

ID_RE = re.compile(r"^[0-9a-f]{24}$")
BATCH = "api/v1.1/profiles/import_batch"
ADD = "api/v1.1/profiles/add_batch"
UPDATE = "api/v1.1/profiles/update_batch"
SINGLE = "api/v1.1/profiles/import"


def message(
    items: Any = None,
    request: str = BATCH,
    request_id: str | None = "r-1",
    account_id: Any = 1,
    **body: Any,
) -> bytes:
    """An api_req message: a batch of ``items`` (or the given body) for db 1 of account 1."""
    doc: dict[str, Any] = {"account_id": account_id, "request": request}
    if request_id is not None:
        doc["request_id"] = request_id
    call: dict[str, Any] = {"token": "secret", "db_id": 1, "matching": "email"}
    if items is not None:
        call["data"] = items
    call.update(body)
    doc["body"] = call
    return orjson.dumps(doc)


def ids(answer: ApiAnswer) -> list[str]:
    """The profile ids of a successful batch answer, each checked (fails the test otherwise)."""
    body = answer.body
    assert body["error"] == OK, body
    assert body["error_text"] == "Successful operation"
    out = []
    for result in body["result"]:
        assert set(result) == {"error", "error_text", "profile_id"}
        assert result == {
            "error": 0,
            "error_text": "Successful operation",
            "profile_id": result["profile_id"],
        }
        assert ID_RE.match(result["profile_id"])
        out.append(result["profile_id"])
    return out


def codes(answer: ApiAnswer) -> list[int]:
    assert answer.body["error"] == OK, answer.body
    return [r["error"] for r in answer.body["result"]]


def db_import(store: ProfileStore, matching: str = "email", **fields: Any) -> str:
    """Import one profile through database_import; its profile id."""
    request: dict[str, Any] = {"account_id": 1, "db_id": 1, "matching": matching, "data": {}}
    request.update(fields)
    reply = store.apply(request)
    assert reply["error"] == OK, reply
    return str(reply["profile_id"])


@pytest.fixture
def store() -> ProfileStore:
    return ProfileStore(seed=1)


@pytest.fixture
def api(store: ProfileStore) -> ApiService:
    return ApiService(store)


def test_batch_creates_then_updates_with_one_result_per_item_in_order(
    api: ApiService, store: ProfileStore
) -> None:
    """import_batch answers each profile in request order; the same keys find the same profiles."""
    items = [{"email": f"u{i}@example.com", "_fname": f"U{i}"} for i in range(5)]
    first = api.handle(message(items))
    assert first.request_id == "r-1"
    assert (first.imported, first.failed, first.valid) == (5, 0, True)
    created = ids(first)
    assert len(set(created)) == 5
    again = api.handle(message([{"email": f"U{i}@Example.com", "_lname": "X"} for i in reversed(range(5))]))
    assert ids(again) == created[::-1]
    assert store.get(1, 1, created[0]) == {"email": "U0@Example.com", "_fname": "U0", "_lname": "X"}
    assert len(store) == 5
    assert api.imported == 10


def test_response_message_is_request_id_and_body(api: ApiService) -> None:
    """The rendered response is {"request_id": ..., "body": ...}, the API's body as it is."""
    answer = api.handle(message([{"email": "a@b.c"}], request_id="req-9"))
    doc = orjson.loads(answer.render())
    assert doc == {"request_id": "req-9", "body": answer.body}
    assert set(doc["body"]) == {"error", "error_text", "result"}


@pytest.mark.parametrize(
    ("matching", "field", "key", "flat", "nested"),
    [
        (
            "email",
            {},
            {"email": "ANN@example.com"},
            {"email": "Ann@Example.com"},
            {"email": "ann@example.com", "data": {}},
        ),
        (
            "phone",
            {},
            {"phone": "+79001234567"},
            {"phones": ["+7 900 123-45-67"]},
            {"phone": "79001234567", "data": {}},
        ),
        (
            "phone",
            {},
            {"phone": "79001234567"},
            {"phones": "+79001234567"},
            {"data": {"phone": "+7 (900) 1234567"}},
        ),
        (
            "custom",
            {"field_name": "CRM_ID"},
            {"field_value": 42},
            {"CRM_ID": 42},
            {"field_value": "42", "data": {}},
        ),
        (
            "custom",
            {"field_name": "TAGS"},
            {"field_value": "a,b"},
            {"TAGS": "b, a"},
            {"data": {"TAGS": "a, b, a"}},
        ),
    ],
)
def test_same_key_same_profile_as_database_import(
    api: ApiService,
    store: ProfileStore,
    matching: str,
    field: dict[str, Any],
    key: dict[str, Any],
    flat: dict[str, Any],
    nested: dict[str, Any],
) -> None:
    """A profile database_import created is found by both item shapes, and the other way round."""
    pid = db_import(store, matching, **field, **key)
    assert ids(api.handle(message([flat, nested], matching=matching, **field))) == [pid, pid]
    assert len(store) == 1
    fresh = ProfileStore(seed=2)
    made = ids(ApiService(fresh).handle(message([flat], matching=matching, **field)))[0]
    assert db_import(fresh, matching, **field, **key) == made
    assert len(fresh) == 1


def test_profile_id_matching_only_updates_and_is_not_a_field(api: ApiService, store: ProfileStore) -> None:
    """profile_id items update the profile, never create one; the id is not stored as a field."""
    pid = db_import(store, email="a@b.c")
    answer = api.handle(
        message(
            [
                {"profile_id": pid.upper(), "_fname": "Ann"},
                {"profile_id": pid, "data": {"_lname": "Doe"}},
                {"profile_id": "60f039e830b8bcb28392f8eb", "_fname": "Ghost"},
                {"profile_id": "nope"},
            ],
            matching="profile_id",
        )
    )
    assert [r["profile_id"] for r in answer.body["result"][:2]] == [pid, pid]
    assert codes(answer) == [OK, OK, UNKNOWN_PROFILE_ID, BAD_PROFILE_ID]
    assert store.get(1, 1, pid) == {"email": "a@b.c", "_fname": "Ann", "_lname": "Doe"}
    assert len(store) == 1
    assert (answer.imported, answer.failed) == (2, 2)


def test_add_batch_refuses_existing_profiles(api: ApiService, store: ProfileStore) -> None:
    """add_batch creates new profiles only: an existing key, even one made earlier in the batch, is 302."""
    old = db_import(store, email="old@example.com", data={"_fname": "Old"})
    answer = api.handle(
        message(
            [
                {"email": "new@example.com"},
                {"email": "OLD@example.com", "_fname": "X"},
                {"email": "new@example.com"},
            ],
            request=ADD,
        )
    )
    assert codes(answer) == [OK, ALREADY_EXISTS, ALREADY_EXISTS]
    result = answer.body["result"][1]
    assert result == {"error": ALREADY_EXISTS, "error_text": ERROR_CODES[ALREADY_EXISTS], "profile_id": ""}
    assert store.get(1, 1, old) == {"_fname": "Old", "email": "old@example.com"}
    assert len(store) == 2
    pid = db_import(store, email="x@y.z")
    profile_id = api.handle(message([{"profile_id": pid}], request=ADD, matching="profile_id"))
    assert codes(profile_id) == [ALREADY_EXISTS]


def test_update_batch_never_creates(api: ApiService, store: ProfileStore) -> None:
    """update_batch updates existing profiles and answers 300 for the others, as update_only does."""
    pid = db_import(store, "custom", field_name="CRM_ID", field_value=7)
    answer = api.handle(
        message(
            [{"CRM_ID": "7", "_fname": "Seven"}, {"CRM_ID": 8, "_fname": "Eight"}],
            request=UPDATE,
            matching="custom",
            field_name="CRM_ID",
        )
    )
    assert codes(answer) == [OK, NOT_FOUND_UPDATE_ONLY]
    assert answer.body["result"][0]["profile_id"] == pid
    assert answer.body["result"][1]["error_text"] == ERROR_CODES[NOT_FOUND_UPDATE_ONLY]
    assert store.get(1, 1, pid) == {"CRM_ID": "7", "_fname": "Seven"}
    assert len(store) == 1


def test_item_errors_leave_the_other_items_alone(api: ApiService, store: ProfileStore) -> None:
    """A bad item gets its own database_import code and text; the rest of the batch is imported."""
    answer = api.handle(
        message(
            ["not an object", {"email": "no-at-sign"}, {"_fname": "no email"}, {"email": "ok@example.com"}]
        )
    )
    assert codes(answer) == [BAD_DATA, BAD_EMAIL, BAD_EMAIL, OK]
    assert answer.body["result"][1]["error_text"] == ERROR_CODES[BAD_EMAIL]
    assert (answer.imported, answer.failed) == (1, 3)
    phones = api.handle(message([{"phones": []}, {"phone": "12"}], matching="phone"))
    assert codes(phones) == [BAD_PHONE, BAD_PHONE]
    custom = api.handle(message([{"X": 1.5}, {"X": True}, {}], matching="custom", field_name="X"))
    assert codes(custom) == [BAD_FIELD_VALUE] * 3
    assert len(store) == 1


def test_phones_as_one_string_are_stored_as_a_list(api: ApiService, store: ProfileStore) -> None:
    """phones may come as one string (as the api_req example sends it): it is kept as a list."""
    pid = ids(api.handle(message([{"phones": "+79001234567", "_fname": "Bo"}], matching="phone")))[0]
    assert store.get(1, 1, pid) == {"phones": ["+79001234567"], "_fname": "Bo"}
    by_email = ids(api.handle(message([{"email": "c@d.e", "phones": "+7 900 765 43 21"}])))[0]
    assert db_import(store, "phone", phone="79007654321") == by_email


def test_nested_item_takes_its_key_beside_data_then_among_the_fields(
    api: ApiService, store: ProfileStore
) -> None:
    """{"email": ..., "data": {...}} is the database_import shape; {"data": {"email": ...}} works too."""
    first = ids(api.handle(message([{"email": "a@b.c", "data": {"_fname": "A"}}])))[0]
    assert store.get(1, 1, first) == {"_fname": "A", "email": "a@b.c"}
    assert ids(api.handle(message([{"data": {"email": "A@B.C", "_lname": "B"}}]))) == [first]
    assert store.get(1, 1, first) == {"_fname": "A", "email": "A@B.C", "_lname": "B"}


def test_single_import_answers_one_result(api: ApiService, store: ProfileStore) -> None:
    """profiles/import takes a database_import-shaped body and answers its one result."""
    answer = api.handle(
        message(request=SINGLE, email="Ann@example.com", data={"_fname": "Ann"}, detect_geo=True)
    )
    pid = answer.body["profile_id"]
    assert answer.body == {"error": 0, "error_text": "Successful operation", "profile_id": pid}
    assert db_import(store, email="ann@EXAMPLE.com") == pid
    custom = api.handle(
        message(request=SINGLE, matching="custom", field_name="CRM_ID", field_value=5, data={"_fname": "C"})
    )
    assert db_import(store, "custom", field_name="CRM_ID", field_value="5") == custom.body["profile_id"]
    bad = api.handle(message(request=SINGLE, email="nope", data={}))
    assert bad.body == {"error": BAD_EMAIL, "error_text": ERROR_CODES[BAD_EMAIL], "profile_id": ""}
    assert (bad.imported, bad.failed) == (0, 1)
    no_data = api.handle(message(request=SINGLE, email="x@y.z"))
    assert no_data.body["error"] == BAD_REQUEST


def test_token_is_checked_when_the_stand_in_has_one(store: ProfileStore) -> None:
    """With a token, a body without it or with another is 401 and nothing is applied."""
    api = ApiService(store, token="secret")
    for token in (None, "wrong", ""):
        doc = orjson.loads(message([{"email": "a@b.c"}]))
        if token is None:
            del doc["body"]["token"]
        else:
            doc["body"]["token"] = token
        answer = api.handle(orjson.dumps(doc))
        assert answer.body == {"error": UNAUTHORIZED, "error_text": API_ERROR_CODES[UNAUTHORIZED]}
        assert answer.request_id == "r-1"
    assert len(store) == 0
    assert ids(api.handle(message([{"email": "a@b.c"}])))
    assert ids(ApiService(ProfileStore(seed=1)).handle(message([{"email": "a@b.c"}], token="anything")))


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b'{"request_id": "r-1", "body": {', "not valid JSON"),
        (b'[{"request_id": "r-1"}]', "not a JSON object"),
        (message([], request=""), "request, the API method, is missing"),
        (orjson.dumps({"request_id": "r-1", "account_id": 1, "request": BATCH, "body": [1]}), "body"),
        (message({"email": "a@b.c"}), "data is missing or not a list"),
        (message(None), "data is missing or not a list"),
        (message([{"email": "a@b.c"}] * (MAX_BATCH + 1)), "more than 10,000"),
        (message([], db_id="1"), "db_id"),
        (message([], db_id=None), "db_id"),
        (message([], matching="nickname"), "Unknown matching"),
        (message([], matching=["email"]), "Unknown matching"),
        (message([], matching="custom"), "field_name"),
        (message([], skip_triggers="yes"), "skip_triggers is not a boolean"),
        (message([], detect_geo=1), "detect_geo is not a boolean"),
        (message([], skip_invalid_subscriptions="no"), "skip_invalid_subscriptions"),
        (message([], resource_id="24"), "resource_id"),
        (message([], account_id="1"), "account_id"),
        (message([], account_id=None), "account_id"),
    ],
)
def test_malformed_requests_are_400_for_the_whole_call(api: ApiService, raw: bytes, text: str) -> None:
    """A request that cannot be read or whose parameters are wrong is 400, saying why; nothing applied."""
    answer = api.handle(raw)
    assert answer.body["error"] == BAD_REQUEST
    assert answer.body["error_text"].startswith(("Incorrect request", "Unknown matching", "Matching by"))
    assert text in answer.body["error_text"]
    assert set(answer.body) == {"error", "error_text"}
    assert answer.request_id == "r-1"
    assert answer.imported == 0
    assert len(api.store) == 0


def test_request_id_of_the_wrong_type_is_400_and_echoed(api: ApiService) -> None:
    """A request_id that is not a string is answered 400, with the value as it came."""
    doc = orjson.loads(message([{"email": "a@b.c"}]))
    doc["request_id"] = 17
    answer = api.handle(orjson.dumps(doc))
    assert (answer.request_id, answer.body["error"]) == (17, BAD_REQUEST)


def test_unparseable_message_is_answered_when_its_request_id_can_be_read(api: ApiService) -> None:
    """Not JSON and no request_id to find: nothing to answer to (request_id None), marked invalid."""
    assert sniff_request_id(b'{"request_id": "a\\"b", "x": ') == 'a"b'
    answer = api.handle(b"\x00 not json")
    assert (answer.request_id, answer.valid, answer.body["error"]) == (None, False, BAD_REQUEST)


def test_unknown_method_is_404_and_slashes_are_ignored(api: ApiService) -> None:
    """Another API path is 404 naming it; "/api/v1.1/profiles/add_batch/" is add_batch."""
    answer = api.handle(
        message([{"email": "a@b.c"}], request="api/v1.1/campaigns/triggers/import_and_start_batch")
    )
    assert answer.body == {
        "error": UNKNOWN_METHOD,
        "error_text": "Unknown API method: api/v1.1/campaigns/triggers/import_and_start_batch",
    }
    assert ids(api.handle(message([{"email": "a@b.c"}], request="/" + ADD + "/")))
    assert len(api.store) == 1


def test_tariff_limit_is_402_once_reached(store: ProfileStore) -> None:
    """Past the limit of imported profiles every call is 402 and nothing more is applied."""
    api = ApiService(store, tariff_limit=3)
    first = api.handle(message([{"email": f"a{i}@b.c"} for i in range(2)]))
    assert ids(first)
    bad = api.handle(message([{"email": "bad"}]))  # failed items do not count
    assert codes(bad) == [BAD_EMAIL]
    second = api.handle(message([{"email": f"b{i}@b.c"} for i in range(2)]))  # 2 < 3: let through
    assert len(ids(second)) == 2
    refused = api.handle(message([{"email": "c@b.c"}]))
    assert refused.body["error"] == TARIFF_LIMIT
    assert "3 profiles" in refused.body["error_text"]
    assert api.handle(message(request=SINGLE, email="d@b.c", data={})).body["error"] == TARIFF_LIMIT
    assert len(store) == 4
    assert (
        ApiService(ProfileStore(), tariff_limit=10, imported=10).handle(message([])).body["error"]
        == TARIFF_LIMIT
    )


def test_fail_answers_503_and_applies_nothing(api: ApiService, store: ProfileStore) -> None:
    """The injected temporary failure answers the whole call 503 and leaves the store as it was."""
    answer = api.handle(message([{"email": "a@b.c"}]), fail=True)
    assert answer.body == {"error": TEMPORARY_FAILURE, "error_text": ERROR_CODES[TEMPORARY_FAILURE]}
    assert answer.imported == 0
    assert len(store) == 0


def test_without_request_id_it_is_applied_but_not_answered(api: ApiService, store: ProfileStore) -> None:
    """No request_id: the call is applied and there is nothing to answer (request_id None)."""
    answer = api.handle(message([{"email": "a@b.c"}], request_id=None))
    assert answer.request_id is None
    assert answer.imported == 1
    assert len(store) == 1


def test_accounts_and_databases_are_apart(api: ApiService, store: ProfileStore) -> None:
    """The same email in another account or database is another profile."""
    a = ids(api.handle(message([{"email": "a@b.c"}])))
    b = ids(api.handle(message([{"email": "a@b.c"}], account_id=2)))
    c = ids(api.handle(message([{"email": "a@b.c"}], db_id=2)))
    assert len({*a, *b, *c}) == 3


def test_malformed_responses_come_in_three_kinds(api: ApiService) -> None:
    """Not JSON, JSON without request_id, and error as a string, in turn."""
    answer = api.handle(message([{"email": "a@b.c"}]))
    bodies = [malformed_response(answer, turn) for turn in range(3)]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(bodies[0])
    assert "request_id" not in orjson.loads(bodies[1])
    assert orjson.loads(bodies[2])["body"]["error"] == "0"
    assert malformed_response(answer, 3) == bodies[0]


def test_settings_refuse_a_negative_tariff_limit_and_an_empty_response_queue() -> None:
    """The API options are checked before anything connects."""
    with pytest.raises(InputError, match="--tariff-limit"):
        EmulatorSettings(api_queue="api_req", tariff_limit=-1)
    with pytest.raises(InputError, match="--api-result-queue"):
        EmulatorSettings(api_queue="api_req", api_result_queue="")
    assert EmulatorSettings().api_queue is None
    assert "secret" not in repr(EmulatorSettings(token="secret"))
