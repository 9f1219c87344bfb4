"""The stand-in's ``api_req`` path: an API call in a message in, the API's response body out.

Nothing here does I/O: :meth:`ApiService.handle` takes one ``api_req`` message body and returns
what to answer on ``api_resp`` (``PROTOCOL.md`` sections 2, 4 and 6), on the same
:class:`~bulk_import.emulator.profiles.ProfileStore` as ``database_import``.

A request message is a JSON object::

    {"account_id": 1, "request_id": "r1-0-1000", "request": "api/v1.1/profiles/import_batch",
     "body": {"token": "...", "db_id": 1, "matching": "email", "skip_triggers": true,
              "data": [{"email": "ann@example.com", "_fname": "Ann"},
                       {"email": "bo@example.com", "data": {"_fname": "Bo"}}]}}

``account_id`` (an integer) and ``request`` (the API path; a leading or trailing ``/`` is ignored)
are required, ``request_id`` (a string) only to get a response: a request without one is applied
and nothing is answered. The response, published with ``message_id`` = ``request_id``, is
``{"request_id": ..., "body": {...}}``.

Methods served:

- ``api/v1.1/profiles/import_batch`` (insert or update), ``add_batch`` (insert only: an existing
  profile is error 302 for that item), ``update_batch`` (update only: a missing profile is error
  300). The body holds ``db_id`` (required), ``matching`` (``email`` by default, ``phone``,
  ``profile_id`` or ``custom``), ``field_name`` (custom), the booleans ``skip_triggers``,
  ``detect_geo`` and ``skip_invalid_subscriptions``, ``resource_id`` (an integer) and ``data``: a
  list of at most :data:`MAX_BATCH` profiles. Each item of ``data`` is one of:

  - the profile's fields, as the documentation's ``import_batch`` example sends them
    (``{"email": "ann@example.com", "_fname": "Ann", "phones": ["+79001234567"]}``): the key is a
    field of the profile, ``email``; ``phone``, or else the first of ``phones``; ``profile_id``
    (not kept as a field); or the custom field ``field_name``;
  - ``{"data": {fields}}`` with the key beside ``data`` under the name a ``database_import``
    request gives it (``{"email": ..., "data": {...}}``, ``{"phone": ...}``, ``{"profile_id": ...}``,
    ``{"field_value": ...}``), or, when it is not there, among the fields as above: the shape of
    the documentation's ``import_and_start_batch`` items and of a single ``profiles/import``.

  ``phones`` may be one string or a list of them. The response body is ``{"error": 0,
  "error_text": "Successful operation", "result": [...]}`` with one result per item, in request
  order: ``{"error": 0, "error_text": "Successful operation", "profile_id": "..."}``, or
  ``{"error": code, "error_text": text, "profile_id": ""}`` with the code and text ``database_import``
  answers with (:data:`~bulk_import.emulator.profiles.ERROR_CODES`).
- ``api/v1.1/profiles/import``: one profile, the body shaped as a ``database_import`` request
  (``db_id``, ``matching``, ``email`` / ``phone`` / ``profile_id`` / ``field_name`` and
  ``field_value``, ``data``, ``detect_geo``, ``skip_triggers``, ``resource_id``, ``token``); the
  response body is that profile's result: ``{"error": 0, "error_text": "Successful operation",
  "profile_id": "..."}``.

A request that fails as a whole gets ``{"error": code, "error_text": text}`` and nothing of it is
applied (:data:`API_ERROR_CODES`): 400 for a malformed request (not JSON, not an object, no
``request``, ``body`` not an object, a parameter of the wrong type, ``data`` not a list, more than
:data:`MAX_BATCH` profiles), 401 for a missing or wrong ``token`` when the stand-in has one, 402 once
the tariff limit of profiles imported through ``api_req`` is reached, 404 for an unknown method, and
503 for the injected temporary failure (the ``--error`` knob).
"""

from __future__ import annotations

import gc
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import orjson

from .profiles import (
    ADD,
    BAD_ACCOUNT_ID,
    BAD_DATA,
    BAD_DB_ID,
    BAD_FIELD_NAME,
    BAD_RESOURCE_ID,
    ERROR_CODES,
    IMPORT,
    TEMPORARY_FAILURE,
    UNKNOWN_MATCHING,
    UPDATE,
    ProfileStore,
)

BAD_REQUEST: Final = 400
UNAUTHORIZED: Final = 401
TARIFF_LIMIT: Final = 402
UNKNOWN_METHOD: Final = 404

#: The codes a request as a whole is answered with, and their texts (a 400 says what is wrong).
API_ERROR_CODES: Final[Mapping[int, str]] = MappingProxyType(
    {
        BAD_REQUEST: "Incorrect request",
        UNAUTHORIZED: "Token required: the body's token is missing or not the API token",
        TARIFF_LIMIT: "Tariff limit reached: no more profiles can be imported",
        UNKNOWN_METHOD: "Unknown API method",
        TEMPORARY_FAILURE: ERROR_CODES[TEMPORARY_FAILURE],
    }
)
SUCCESS_TEXT: Final = ERROR_CODES[0]
#: The most profiles one batch request may carry (the platform's recommended most).
MAX_BATCH: Final = 10_000
#: Each batch method and what it does with a profile.
BATCH_METHODS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "api/v1.1/profiles/import_batch": IMPORT,
        "api/v1.1/profiles/add_batch": ADD,
        "api/v1.1/profiles/update_batch": UPDATE,
    }
)
IMPORT_METHOD: Final = "api/v1.1/profiles/import"
_MATCHINGS: Final = frozenset(("email", "phone", "profile_id", "custom"))
_FLAGS: Final = ("skip_triggers", "detect_geo", "skip_invalid_subscriptions")
_REQUEST_ID_RE: Final = re.compile(rb'"request_id"\s*:\s*"((?:[^"\\]|\\.){0,1000})"')
#: The single import's key fields, by matching.
_KEYS: Final = {
    "email": ("email",),
    "phone": ("phone",),
    "profile_id": ("profile_id",),
    "custom": ("field_value",),
}


@dataclass(slots=True)
class ApiAnswer:
    """What one ``api_req`` message comes to."""

    #: The request's ``request_id``; None: nothing is answered.
    request_id: Any
    #: The API's response body.
    body: dict[str, Any]
    #: Profiles imported or updated.
    imported: int = 0
    #: Profiles answered with an error of their own (a batch's result, or a single import's).
    failed: int = 0
    #: Whether the message was a JSON object at all.
    valid: bool = True

    def render(self) -> bytes:
        """The response message: ``{"request_id": ..., "body": {...}}``."""
        return orjson.dumps({"request_id": self.request_id, "body": self.body})


def request_error(code: int, detail: str = "") -> dict[str, Any]:
    """The body of a response to a request that fails as a whole."""
    return {"error": code, "error_text": detail or API_ERROR_CODES[code]}


def _bad(detail: str) -> dict[str, Any]:
    return request_error(BAD_REQUEST, detail)


def sniff_request_id(body: bytes) -> str | None:
    """The request_id of a message that does not parse, when a regex can still find one."""
    found = _REQUEST_ID_RE.search(body)
    if found is None:
        return None
    try:
        rid = orjson.loads(b'"' + found.group(1) + b'"')
    except orjson.JSONDecodeError:
        return None
    return rid if isinstance(rid, str) else None


def malformed_response(answer: ApiAnswer, turn: int) -> bytes:
    """A broken rendering of ``answer``: not JSON, JSON without request_id, error as a string."""
    kind = turn % 3
    body = answer.body
    if kind == 0:
        return f"{{request_id: {answer.request_id}, body: {{error: {body['error']}}}}}".encode()
    if kind == 1:
        return orjson.dumps({"body": body})
    return orjson.dumps({"request_id": answer.request_id, "body": {**body, "error": str(body["error"])}})


def freeze_garbage_collection() -> None:
    """Collect the young objects' cycles, then keep every object alive now out of later collections.

    A batch call adds thousands of profiles, which stay as long as the store does; without this the
    cyclic collector walks all of them again and again as the store grows, a third of the time a
    call takes. Called after each handled batch of calls.
    """
    gc.collect(1)
    gc.freeze()


class ApiService:
    """Answers ``api_req`` messages on a profile store.

    ``token``: the API token a body must carry (None: any token, or none, is accepted).
    ``tariff_limit``: once this many profiles have been imported through ``api_req`` (``imported``
    counts them, from the value given), every request is answered 402.
    """

    def __init__(
        self,
        store: ProfileStore,
        *,
        token: str | None = None,
        tariff_limit: int | None = None,
        imported: int = 0,
    ) -> None:
        self.store = store
        self.token = token
        self.tariff_limit = tariff_limit
        self.imported = imported

    def handle(self, message: bytes, *, fail: bool = False) -> ApiAnswer:
        """Apply one message; with ``fail`` apply nothing and answer the temporary failure."""
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            return ApiAnswer(
                sniff_request_id(message),
                _bad("Incorrect request: the message is not valid JSON"),
                valid=False,
            )
        if type(request) is not dict:
            return ApiAnswer(
                sniff_request_id(message),
                _bad("Incorrect request: the message is not a JSON object"),
                valid=False,
            )
        answer = self.call(request, fail=fail)
        self.imported += answer.imported
        return answer

    def call(self, request: dict[str, Any], *, fail: bool = False) -> ApiAnswer:
        """Apply one parsed request message (``imported`` is left to :meth:`handle`)."""
        rid = request.get("request_id")
        if rid is not None and type(rid) is not str:
            return ApiAnswer(rid, _bad("Incorrect request: request_id is not a string"))
        if fail:
            return ApiAnswer(rid, request_error(TEMPORARY_FAILURE))
        path = request.get("request")
        if type(path) is not str or not path:
            return ApiAnswer(rid, _bad("Incorrect request: request, the API method, is missing"))
        path = path.strip("/")
        mode = BATCH_METHODS.get(path)
        if mode is None and path != IMPORT_METHOD:
            return ApiAnswer(rid, request_error(UNKNOWN_METHOD, f"Unknown API method: {path}"))
        body = request.get("body")
        if type(body) is not dict:
            return ApiAnswer(rid, _bad("Incorrect request: body is missing or not an object"))
        if self.token is not None and body.get("token") != self.token:
            return ApiAnswer(rid, request_error(UNAUTHORIZED))
        account_id = request.get("account_id")
        if type(account_id) is not int:
            return ApiAnswer(rid, _bad(ERROR_CODES[BAD_ACCOUNT_ID]))
        problem = _check_params(body)
        if problem:
            return ApiAnswer(rid, _bad(problem))
        data = body.get("data")
        if mode is not None:
            if type(data) is not list:
                return ApiAnswer(rid, _bad("Incorrect request: data is missing or not a list of profiles"))
            if len(data) > MAX_BATCH:
                return ApiAnswer(
                    rid,
                    _bad(f"Incorrect request: {len(data)} profiles, more than {MAX_BATCH:,} in one request"),
                )
            items: list[Any] = data
        else:
            if type(data) is not dict:
                return ApiAnswer(rid, _bad(ERROR_CODES[BAD_DATA]))
            item = {"data": data}
            for name in _KEYS[body.get("matching") or "email"]:
                if name in body:
                    item[name] = body[name]
            items = [item]
        if self.tariff_limit is not None and self.imported >= self.tariff_limit:
            return ApiAnswer(
                rid,
                request_error(
                    TARIFF_LIMIT,
                    f"Tariff limit reached: {self.tariff_limit:,} profiles imported through api_req",
                ),
            )
        results, imported = self.store.apply_items(
            account_id,
            body["db_id"],
            items,
            matching=body.get("matching") or "email",
            field_name=body.get("field_name") or "",
            mode=mode or IMPORT,
        )
        if mode is None:
            return ApiAnswer(rid, results[0], imported, len(results) - imported)
        response = {"error": 0, "error_text": SUCCESS_TEXT, "result": results}
        return ApiAnswer(rid, response, imported, len(results) - imported)


def _check_params(body: dict[str, Any]) -> str:
    """What is wrong with a body's own parameters, or ``""``."""
    if type(body.get("db_id")) is not int:
        return ERROR_CODES[BAD_DB_ID]
    matching = body.get("matching")
    if matching is not None and (type(matching) is not str or matching not in _MATCHINGS):
        return ERROR_CODES[UNKNOWN_MATCHING]
    if matching == "custom":
        name = body.get("field_name")
        if type(name) is not str or not name:
            return ERROR_CODES[BAD_FIELD_NAME]
    for flag in _FLAGS:
        value = body.get(flag)
        if value is not None and type(value) is not bool:
            return f"Incorrect request: {flag} is not a boolean"
    resource_id = body.get("resource_id")
    if resource_id is not None and type(resource_id) is not int:
        return ERROR_CODES[BAD_RESOURCE_ID]
    return ""
