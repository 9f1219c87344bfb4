"""The stand-in's profile databases: the documented matching semantics, and nothing that does I/O.

One :class:`ProfileStore` holds profiles per ``(account_id, db_id)``. :meth:`ProfileStore.apply`
takes one ``database_import`` request (already parsed) and returns its reply, the way the
platform's job server answers (``PROTOCOL.md`` section 1 and 4):

- ``email``, ``phone`` and ``custom`` matching find a profile by that key and update it (``data`` is
  merged over the profile's fields), or create one holding the key, unless ``update_only``;
- ``profile_id`` matching only updates: an unknown id is an error, never a new profile;
- a request that lacks a required field, or whose key does not parse, is an error reply.

:meth:`ProfileStore.apply_items` imports the profiles of one ``api_req`` batch request
(``import_batch``, ``add_batch``, ``update_batch``) with the same semantics and codes, a result per
profile: the same key finds the same profile whichever path imported it.

Emails match case-insensitively against the profile's ``email`` field. Phones match by their digits
(``+``, spaces, dashes, dots and brackets are ignored) against the ``phones`` list and the
``phone`` field. A custom field matches on the text of its value (``123420`` and ``"123420"`` are
the same key). A tag field's value is a set of tags: a list, or a string with commas, the documented
``"tag-1, tag-2"``; ``["tag-2", "tag-1"]``, ``"tag-2,tag-1"`` and ``"tag-1, tag-2, tag-1"`` are the
same key (items trimmed, order and repeats ignored). The platform does not say which profile
wins when two share a key (data may set any field, e.g. a phone shared by two contacts): here the
first profile that had the key keeps it.

With a path the store is kept in SQLite: loaded when opened, written in batches and on
:meth:`ProfileStore.flush` / :meth:`ProfileStore.close`, so the same keys get the same
``profile_id`` across restarts. Everything else is dict look-ups (about 100k requests/s or more).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import orjson

OK: Final = 0
NOT_JSON: Final = 100
NOT_AN_OBJECT: Final = 101
BAD_ACCOUNT_ID: Final = 102
BAD_DB_ID: Final = 103
BAD_DATA: Final = 104
BAD_FLAG: Final = 105
BAD_RESOURCE_ID: Final = 106
BAD_FEEDBACK_ID: Final = 107
UNKNOWN_MATCHING: Final = 200
BAD_EMAIL: Final = 201
BAD_PHONE: Final = 202
BAD_PROFILE_ID: Final = 203
BAD_FIELD_NAME: Final = 204
BAD_FIELD_VALUE: Final = 205
NOT_FOUND_UPDATE_ONLY: Final = 300
UNKNOWN_PROFILE_ID: Final = 301
ALREADY_EXISTS: Final = 302
TEMPORARY_FAILURE: Final = 503

#: What a batch request does with each profile: insert or update, insert only, update only.
IMPORT: Final = "import"
ADD: Final = "add"
UPDATE: Final = "update"

#: Every code the stand-in answers with, and what it means. The platform publishes no list of its
#: profile-level codes (PROTOCOL.md §4), so these are the stand-in's own: 1xx the request's shape,
#: 2xx the matching and its key, 3xx the look-up, 503 the injected temporary failure (``--error``).
#: A client must treat any non-zero code as a per-row failure and keep code and text verbatim.
ERROR_CODES: Final[Mapping[int, str]] = MappingProxyType(
    {
        OK: "Successful operation",
        NOT_JSON: "Incorrect request: the body is not valid JSON",
        NOT_AN_OBJECT: "Incorrect request: the body is not a JSON object",
        BAD_ACCOUNT_ID: "Incorrect request: account_id is missing or not an integer",
        BAD_DB_ID: "Incorrect request: db_id is missing or not an integer",
        BAD_DATA: "Incorrect request: data is missing or not an object",
        BAD_FLAG: "Incorrect request: update_only or skip_triggers is not a boolean",
        BAD_RESOURCE_ID: "Incorrect request: resource_id is not an integer",
        BAD_FEEDBACK_ID: "Incorrect request: feedback_id is not a string",
        UNKNOWN_MATCHING: "Unknown matching: use email, phone, profile_id or custom",
        BAD_EMAIL: "Matching by email: email is missing or invalid",
        BAD_PHONE: "Matching by phone: phone is missing or invalid",
        BAD_PROFILE_ID: "Matching by profile_id: profile_id is missing or not 24 hexadecimal characters",
        BAD_FIELD_NAME: "Matching by custom field: field_name is missing or not a string",
        BAD_FIELD_VALUE: "Matching by custom field: field_value is missing or not a string or integer",
        NOT_FOUND_UPDATE_ONLY: "Profile not found, and update_only forbids creating it",
        UNKNOWN_PROFILE_ID: "Profile not found: matching by profile_id only updates",
        ALREADY_EXISTS: "Profile already exists, and add_batch only creates profiles",
        TEMPORARY_FAILURE: "Injected temporary failure, try again later",
    }
)
SUCCESS_TEXT: Final = ERROR_CODES[OK]

_EMAIL_RE: Final = re.compile(r"[^@\s]+@[^@\s]+")
_PHONE_NOISE_RE: Final = re.compile(r"[\s\-().]")
_PROFILE_ID_RE: Final = re.compile(r"[0-9a-fA-F]{24}")
_MASK64: Final = (1 << 64) - 1
#: An odd multiplier: ``n * _MIX mod 2**64`` is a bijection, so scrambled counters never collide.
_MIX: Final = 0x9E3779B97F4A7C15
_FLUSH_EVERY: Final = 10_000
_EMAIL, _PHONE, _PROFILE_ID, _CUSTOM = range(4)
_MATCHING_CODES: Final = {"email": _EMAIL, "phone": _PHONE, "profile_id": _PROFILE_ID, "custom": _CUSTOM}


def error_reply(code: int, feedback_id: object = "", matching: str = "") -> dict[str, Any]:
    """The reply for a failed request: the code, its text from :data:`ERROR_CODES`, no profile."""
    return {
        "error": code,
        "error_text": ERROR_CODES[code],
        "feedback_id": feedback_id,
        "matching_field": matching,
        "profile_id": "",
    }


def normalize_phone(value: object) -> str | None:
    """The digits of a phone number (an optional leading ``+`` and punctuation dropped), or None."""
    if not isinstance(value, str):
        return None
    digits = value[1:] if value.startswith("+") else value
    if not digits.isascii() or not digits.isdigit():
        digits = _PHONE_NOISE_RE.sub("", value)
        digits = digits[1:] if digits.startswith("+") else digits
        if not digits.isascii() or not digits.isdigit():
            return None
    return digits if 7 <= len(digits) <= 15 else None


def custom_key(value: object) -> str | None:
    """The text a custom field matches on: ``str`` of a scalar, or a set of tags in one spelling.

    A list or a string with a comma is a set of tags: its items trimmed, empty ones and repeats
    dropped, sorted and joined by ``", "``. Any other string is its own key, as it is.
    """
    if value is None or isinstance(value, dict):
        return None
    if isinstance(value, str):
        if "," not in value:
            return value
        items: list[Any] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        return str(value)
    return ", ".join(sorted({tag for item in items if (tag := str(item).strip())}))


def _phone_keys(profile: Mapping[str, Any]) -> list[str]:
    keys: list[str] = []
    phones = profile.get("phones")
    if isinstance(phones, list):
        for phone in phones:
            if (key := normalize_phone(phone)) is not None:
                keys.append(key)
    single = profile.get("phone")
    if single is not None and (key := normalize_phone(single)) is not None:
        keys.append(key)
    return keys


def _email_key(profile: Mapping[str, Any]) -> str | None:
    email = profile.get("email")
    return email.strip().lower() if isinstance(email, str) and email.strip() else None


@dataclass(slots=True)
class _Database:
    """One profile database: profiles by id, and the indexes that find them."""

    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_email: dict[str, str] = field(default_factory=dict)
    #: Phone digits → profile id, from the first phone matching on (None before: a night matched
    #: by email never pays for cleaning every profile's phones).
    by_phone: dict[str, str] | None = None
    #: field name → key text → profile id; a field is indexed from its first custom matching on.
    by_custom: dict[str, dict[str, str]] = field(default_factory=dict)

    def index(self, pid: str, profile: Mapping[str, Any], *, email: bool, phone: bool) -> None:
        """Add the profile's keys; a key another profile already holds stays with that one."""
        if email and (key := _email_key(profile)) is not None:
            self.by_email.setdefault(key, pid)
        if phone and self.by_phone is not None:
            for key in _phone_keys(profile):
                self.by_phone.setdefault(key, pid)

    def unindex(self, pid: str, profile: Mapping[str, Any], *, email: bool, phone: bool) -> None:
        """Remove the profile's keys (only those that point to it)."""
        if email and (key := _email_key(profile)) is not None and self.by_email.get(key) == pid:
            del self.by_email[key]
        if phone and self.by_phone is not None:
            for key in _phone_keys(profile):
                if self.by_phone.get(key) == pid:
                    del self.by_phone[key]

    def phone_index(self) -> dict[str, str]:
        """The phone index, built by one scan the first time phones are matched on."""
        if self.by_phone is None:
            self.by_phone = {}
            for pid, profile in self.profiles.items():
                self.index(pid, profile, email=False, phone=True)
        return self.by_phone

    def custom_index(self, name: str) -> dict[str, str]:
        """The index of a custom field, built by one scan the first time the field is matched on."""
        index = self.by_custom.get(name)
        if index is None:
            index = self.by_custom[name] = {}
            for pid, profile in self.profiles.items():
                key = custom_key(profile.get(name))
                if key is not None:
                    index.setdefault(key, pid)
        return index


class ProfileStore:
    """Profiles per ``(account_id, db_id)``; :meth:`apply` answers one import request.

    ``seed`` fixes the ids of an in-memory store (tests); without it each store draws its own salt,
    so two stores never hand out the same id. A SQLite store keeps its salt and counter.
    """

    def __init__(self, path: str | Path | None = None, *, seed: int | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._dbs: dict[tuple[int, int], _Database] = {}
        self._counter = 0
        self._scrambled = 0
        self._salt = secrets.randbits(32) if seed is None else _salt_of(seed)
        self._prefix = f"{self._salt:08x}"
        self._sql: sqlite3.Connection | None = None
        #: Created since the last flush: profile id → (counter, account_id, db_id, profile).
        self._new: dict[str, tuple[int, int, int, dict[str, Any]]] = {}
        #: Updated since the last flush (and not new): profile id → profile.
        self._changed: dict[str, dict[str, Any]] = {}
        if self.path is not None:
            self._open(self.path)

    # -- persistence -------------------------------------------------------------------------

    def _open(self, path: Path) -> None:
        sql = self._sql = sqlite3.connect(path, isolation_level=None)
        sql.execute("PRAGMA journal_mode=WAL")
        sql.execute("PRAGMA synchronous=NORMAL")
        sql.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        sql.execute(
            "CREATE TABLE IF NOT EXISTS profiles (seq INTEGER PRIMARY KEY, account_id INTEGER NOT NULL,"
            " db_id INTEGER NOT NULL, profile_id TEXT NOT NULL UNIQUE, data BLOB NOT NULL)"
        )
        row = sql.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()
        if row is None:
            sql.execute("INSERT INTO meta VALUES ('salt', ?)", (self._salt,))
        else:
            self._salt = int(row[0])
        query = "SELECT seq, account_id, db_id, profile_id, data FROM profiles ORDER BY seq"
        for seq, account_id, db_id, pid, blob in sql.execute(query):
            profile = orjson.loads(blob)
            db = self._db(account_id, db_id)
            db.profiles[pid] = profile
            db.index(pid, profile, email=True, phone=True)
            self._counter = max(self._counter, seq)
        self._scrambled = (self._counter * _MIX) & _MASK64
        self._prefix = f"{self._salt:08x}"

    def flush(self) -> None:
        """Write the profiles created or changed since the last flush (one transaction)."""
        if self._sql is None or not (self._new or self._changed):
            return
        dumps = orjson.dumps
        new = [(seq, a, d, pid, dumps(p)) for pid, (seq, a, d, p) in self._new.items()]
        changed = [(dumps(p), pid) for pid, p in self._changed.items()]
        sql = self._sql
        sql.execute("BEGIN")
        try:
            sql.executemany("INSERT INTO profiles VALUES (?, ?, ?, ?, ?)", new)
            sql.executemany("UPDATE profiles SET data = ? WHERE profile_id = ?", changed)
            sql.execute("COMMIT")
        except BaseException:
            sql.execute("ROLLBACK")
            raise
        self._new.clear()
        self._changed.clear()

    def close(self) -> None:
        """Flush and close the SQLite file; an in-memory store just stays as it is."""
        if self._sql is not None:
            try:
                self.flush()
            finally:
                self._sql.close()
                self._sql = None

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def persistent(self) -> bool:
        return self._sql is not None

    # -- reading -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(db.profiles) for db in self._dbs.values())

    def get(self, account_id: int, db_id: int, profile_id: str) -> dict[str, Any] | None:
        """A profile's fields (the live dict: do not change it), or None."""
        db = self._dbs.get((account_id, db_id))
        return None if db is None else db.profiles.get(profile_id)

    # -- the import --------------------------------------------------------------------------

    def _db(self, account_id: int, db_id: int) -> _Database:
        db = self._dbs.get((account_id, db_id))
        if db is None:
            db = self._dbs[account_id, db_id] = _Database()
        return db

    def _next_id(self) -> str:
        """``<salt><counter * _MIX mod 2**64, xor salt>`` in 24 hex digits, as the platform's ids.

        The product is carried from one id to the next by adding ``_MIX`` (no 128-bit multiply):
        a million ids a run make this count."""
        self._counter += 1
        self._scrambled = scrambled = (self._scrambled + _MIX) & _MASK64
        return self._prefix + (scrambled ^ self._salt).to_bytes(8, "big").hex()

    def apply(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Import one request (a parsed ``database_import`` body); the reply body as a dict."""
        get = request.get
        fid = get("feedback_id")
        matching = get("matching")
        if matching is None:
            matching = "email"
        field_text = matching if isinstance(matching, str) else ""
        if fid is None:
            fid = ""
        elif type(fid) is not str:
            return error_reply(BAD_FEEDBACK_ID, fid, field_text)
        account_id = get("account_id")
        if type(account_id) is not int:
            return error_reply(BAD_ACCOUNT_ID, fid, field_text)
        db_id = get("db_id")
        if type(db_id) is not int:
            return error_reply(BAD_DB_ID, fid, field_text)
        data = get("data")
        if type(data) is not dict:
            return error_reply(BAD_DATA, fid, field_text)
        update_only = get("update_only")
        skip = get("skip_triggers")
        if (update_only is not None and type(update_only) is not bool) or (
            skip is not None and type(skip) is not bool
        ):
            return error_reply(BAD_FLAG, fid, field_text)
        resource_id = get("resource_id")
        if resource_id is not None and type(resource_id) is not int:
            return error_reply(BAD_RESOURCE_ID, fid, field_text)

        db = self._db(account_id, db_id)
        key: str
        index: dict[str, str]
        custom: tuple[str, object] = ("", None)
        if matching == "email":
            email = get("email")
            if type(email) is not str or not _EMAIL_RE.fullmatch(email := email.strip()):
                return error_reply(BAD_EMAIL, fid, matching)
            key, index = email.lower(), db.by_email
        elif matching == "phone":
            phone = get("phone")
            digits = normalize_phone(phone)
            if digits is None:
                return error_reply(BAD_PHONE, fid, matching)
            key, index = digits, db.phone_index()
        elif matching == "profile_id":
            pid = get("profile_id")
            if type(pid) is not str or not _PROFILE_ID_RE.fullmatch(pid):
                return error_reply(BAD_PROFILE_ID, fid, matching)
            pid = pid.lower()
            profile = db.profiles.get(pid)
            if profile is None:
                return error_reply(UNKNOWN_PROFILE_ID, fid, matching)
            self._update(db, pid, profile, data)
            return _success(fid, matching, pid)
        elif matching == "custom":
            name = get("field_name")
            if type(name) is not str or not name:
                return error_reply(BAD_FIELD_NAME, fid, matching)
            value = get("field_value")
            if type(value) is not str and type(value) is not int:
                return error_reply(BAD_FIELD_VALUE, fid, matching)
            key, index, custom = custom_key(value) or "", db.custom_index(name), (name, value)
        else:
            return error_reply(UNKNOWN_MATCHING, fid, field_text)

        found = index.get(key)
        if found is not None:
            self._update(db, found, db.profiles[found], data)
            return _success(fid, matching, found)
        if update_only:
            return error_reply(NOT_FOUND_UPDATE_ONLY, fid, matching)
        profile = dict(data)
        if matching == "email":
            profile["email"] = email
        elif matching == "phone":
            phones = profile.get("phones")
            phones = list(phones) if isinstance(phones, list) else []
            if digits not in _phone_keys({"phones": phones}):
                phones.append(phone)
            profile["phones"] = phones
        else:
            profile[custom[0]] = custom[1]
        pid = self._create(db, account_id, db_id, profile)
        index[key] = pid  # the key was free: this profile now holds it
        return _success(fid, matching, pid)

    def apply_items(
        self,
        account_id: int,
        db_id: int,
        items: Sequence[object],
        *,
        matching: str = "email",
        field_name: str = "",
        mode: str = IMPORT,
    ) -> tuple[list[dict[str, Any]], int]:
        """Import the profiles of one batch request in order: a result per item, and how many succeeded.

        The request's own parameters are the caller's to check: ``matching`` is ``email``,
        ``phone``, ``profile_id`` or ``custom``, ``field_name`` a name when it is ``custom``.
        ``mode`` is :data:`IMPORT` (insert or update), :data:`ADD` (an existing profile is
        :data:`ALREADY_EXISTS`) or :data:`UPDATE` (a missing one is :data:`NOT_FOUND_UPDATE_ONLY`).
        An item is a profile's fields, or ``{"data": {fields}}`` with the key beside ``data`` under
        the name a ``database_import`` request gives it (``email``, ``phone``, ``profile_id``,
        ``field_value``) or among the fields; either way the same key finds the same profile as
        ``database_import``. The items are the store's afterwards: a new profile is its item's dict.
        """
        db = self._db(account_id, db_id)
        profiles, by_email = db.profiles, db.by_email
        how = _MATCHING_CODES[matching]
        by_phone = db.phone_index() if how == _PHONE else by_email
        name = field_name
        by_field = db.custom_index(name) if how == _CUSTOM else by_email
        add, update_only = mode == ADD, mode == UPDATE
        update, create, fullmatch = self._update, self._create, _EMAIL_RE.fullmatch
        results: list[dict[str, Any]] = []
        append = results.append
        succeeded = 0
        for item in items:
            if type(item) is not dict:
                append(_item_error(BAD_DATA))
                continue
            fields: dict[str, Any] = item
            nested = False
            data = item.get("data")
            if type(data) is dict:
                fields, nested = data, True
            if type(fields.get("phones")) is str:  # one phone as a string, as the api_req example sends it
                fields = {**fields, "phones": [fields["phones"]]}
            index: dict[str, str]
            if how == _EMAIL:
                raw = item.get("email") if nested else None
                from_fields = raw is None
                if from_fields:
                    raw = fields.get("email")
                if type(raw) is not str or not fullmatch(email := raw.strip()):
                    append(_item_error(BAD_EMAIL))
                    continue
                if from_fields and email != raw:
                    fields = {**fields, "email": email}
                key, index = email.lower(), by_email
            elif how == _PHONE:
                phone = item.get("phone") if nested else None
                if phone is None:
                    phone = fields.get("phone")
                if phone is None:
                    listed = fields.get("phones")
                    phone = listed[0] if type(listed) is list and listed else None
                digits = normalize_phone(phone)
                if digits is None:
                    append(_item_error(BAD_PHONE))
                    continue
                key, index = digits, by_phone
            elif how == _PROFILE_ID:
                append(self._by_profile_id(db, item, fields, nested, add))
                succeeded += not results[-1]["error"]
                continue
            else:
                value = item.get("field_value") if nested else None
                if value is None:
                    value = fields.get(name)
                if type(value) is not str and type(value) is not int:
                    append(_item_error(BAD_FIELD_VALUE))
                    continue
                key, index = custom_key(value) or "", by_field

            found = index.get(key)
            if found is not None:
                if add:
                    append(_item_error(ALREADY_EXISTS))
                    continue
                update(db, found, profiles[found], fields)
                append({"error": OK, "error_text": SUCCESS_TEXT, "profile_id": found})
                succeeded += 1
                continue
            if update_only:
                append(_item_error(NOT_FOUND_UPDATE_ONLY))
                continue
            profile = fields  # the message's own dict, parsed for this call: kept, not copied
            if how == _EMAIL:
                profile["email"] = email
            elif how == _PHONE:
                kept = profile.get("phones")
                kept = list(kept) if isinstance(kept, list) else []
                if digits not in _phone_keys({"phones": kept}):
                    kept.append(phone)
                profile["phones"] = kept
            else:
                profile[name] = value
            pid = create(db, account_id, db_id, profile, email_indexed=how == _EMAIL)
            index[key] = pid  # the key was free: this profile now holds it
            append({"error": OK, "error_text": SUCCESS_TEXT, "profile_id": pid})
            succeeded += 1
        return results, succeeded

    def _by_profile_id(
        self, db: _Database, item: dict[str, Any], fields: dict[str, Any], nested: bool, add: bool
    ) -> dict[str, Any]:
        """One item of a batch matched by profile_id: it only updates (and add_batch never does)."""
        pid = item.get("profile_id") if nested else None
        if pid is None and "profile_id" in fields:
            pid = fields["profile_id"]
            fields = {k: v for k, v in fields.items() if k != "profile_id"}
        if type(pid) is not str or not _PROFILE_ID_RE.fullmatch(pid):
            return _item_error(BAD_PROFILE_ID)
        pid = pid.lower()
        profile = db.profiles.get(pid)
        if profile is None:
            return _item_error(UNKNOWN_PROFILE_ID)
        if add:
            return _item_error(ALREADY_EXISTS)
        self._update(db, pid, profile, fields)
        return _item_success(pid)

    def _create(
        self,
        db: _Database,
        account_id: int,
        db_id: int,
        profile: dict[str, Any],
        *,
        email_indexed: bool = False,
    ) -> str:
        """Store a new profile and index it (``email_indexed``: its email is the caller's to index)."""
        pid = self._next_id()
        db.profiles[pid] = profile
        if not email_indexed or db.by_phone is not None:  # else there is nothing more to index
            db.index(pid, profile, email=not email_indexed, phone=True)
        if db.by_custom:
            for name, index in db.by_custom.items():
                key = custom_key(profile.get(name))
                if key is not None:
                    index.setdefault(key, pid)
        if self._sql is not None:
            self._new[pid] = (self._counter, account_id, db_id, profile)
            self._maybe_flush()
        return pid

    def _update(self, db: _Database, pid: str, profile: dict[str, Any], data: dict[str, Any]) -> None:
        email = "email" in data
        phone = "phones" in data or "phone" in data
        if email or phone:
            db.unindex(pid, profile, email=email, phone=phone)
        custom = [name for name in db.by_custom if name in data] if db.by_custom else []
        for name in custom:
            index = db.by_custom[name]
            old = custom_key(profile.get(name))
            if old is not None and index.get(old) == pid:
                del index[old]
        profile.update(data)
        if email or phone:
            db.index(pid, profile, email=email, phone=phone)
        for name in custom:
            new = custom_key(profile.get(name))
            if new is not None:
                db.by_custom[name].setdefault(new, pid)
        if self._sql is not None:
            if pid not in self._new:
                self._changed[pid] = profile
            self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self._new) + len(self._changed) >= _FLUSH_EVERY:
            self.flush()


def _success(fid: str, matching: str, pid: str) -> dict[str, Any]:
    return {
        "error": OK,
        "error_text": SUCCESS_TEXT,
        "feedback_id": fid,
        "matching_field": matching,
        "profile_id": pid,
    }


def _item_success(pid: str) -> dict[str, Any]:
    return {"error": OK, "error_text": SUCCESS_TEXT, "profile_id": pid}


def _item_error(code: int) -> dict[str, Any]:
    return {"error": code, "error_text": ERROR_CODES[code], "profile_id": ""}


def _salt_of(seed: int) -> int:
    return int.from_bytes(hashlib.blake2b(str(seed).encode(), digest_size=4).digest(), "big")
