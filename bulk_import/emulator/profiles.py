"""The stand-in's profile store: the documented matching semantics, with no broker in sight.

Per (account_id, db_id): a profile found by the request's matching is updated (its ``data`` merged),
otherwise created with a new 24-hex id, unless ``update_only``. ``profile_id`` matching only ever
updates. Optionally kept in SQLite so that a restarted stand-in returns the same ids.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

OK_TEXT: Final = "Successful operation"
INVALID_JSON: Final = 1
INVALID_FIELD: Final = 2
UNKNOWN_MATCHING: Final = 3
NOT_FOUND_UPDATE_ONLY: Final = 4
PROFILE_ID_NOT_FOUND: Final = 5
TEMPORARY_FAILURE: Final = 6

ERROR_CODES: Mapping[int, str] = MappingProxyType(
    {
        INVALID_JSON: "the request is not a JSON object",
        INVALID_FIELD: "a required field is missing or has the wrong type",
        UNKNOWN_MATCHING: "unknown matching mode",
        NOT_FOUND_UPDATE_ONLY: "no profile matches and update_only forbids creating one",
        PROFILE_ID_NOT_FOUND: "no profile has this profile_id (profile_id matching only updates)",
        TEMPORARY_FAILURE: "temporary failure, try again (injected by --error)",
    }
)

PROFILE_ID_RE: Final = re.compile(r"^[0-9a-fA-F]{24}$")
_PHONE_NOISE: Final = re.compile(r"[^\d+]")


def normalize_phone(value: str) -> str:
    return _PHONE_NOISE.sub("", value)


@dataclass
class _Database:
    """One profile database: profiles by id and the indexes matching looks in."""

    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_email: dict[str, str] = field(default_factory=dict)
    by_phone: dict[str, str] = field(default_factory=dict)
    by_custom: dict[tuple[str, str], str] = field(default_factory=dict)


class RequestError(Exception):
    """A request the platform would answer with a non-zero error."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def _field(request: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = request.get(name)
    if value is None or (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise RequestError(INVALID_FIELD, f"field {name} is missing or not {_kind_name(kind)}")
    if isinstance(value, str) and not value.strip():
        raise RequestError(INVALID_FIELD, f"field {name} is empty")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(
        {int: "an integer", str: "a string", dict: "an object"}.get(k, k.__name__) for k in kinds
    )


class ProfileStore:
    """Profiles of every (account, database); ``apply`` answers a request as the platform would."""

    def __init__(self, path: Path | None = None) -> None:
        self._dbs: dict[tuple[int, int], _Database] = {}
        self._salt = os.urandom(4).hex()
        self._next = 1
        self._dirty: set[tuple[int, int, str]] = set()
        self._sql: sqlite3.Connection | None = None
        if path is not None:
            self._open(path)

    def apply(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The reply to one ``database_import`` request."""
        feedback = request.get("feedback_id")
        matching = request.get("matching", "email")
        try:
            pid = self._import(request, matching)
        except RequestError as exc:
            return {
                "error": exc.code,
                "error_text": exc.text,
                "feedback_id": feedback,
                "matching_field": matching if isinstance(matching, str) else "",
                "profile_id": "",
            }
        return {
            "error": 0,
            "error_text": OK_TEXT,
            "feedback_id": feedback,
            "matching_field": matching,
            "profile_id": pid,
        }

    def _import(self, request: Mapping[str, Any], matching: object) -> str:
        account = _field(request, "account_id", int)
        db_id = _field(request, "db_id", int)
        data = request.get("data")
        if not isinstance(data, dict):
            raise RequestError(INVALID_FIELD, "field data is missing or not an object")
        update_only = request.get("update_only") is True
        db = self._dbs.setdefault((account, db_id), _Database())
        if matching == "profile_id":
            pid = _field(request, "profile_id", str)
            if not PROFILE_ID_RE.match(pid) or pid.lower() not in db.profiles:
                raise RequestError(PROFILE_ID_NOT_FOUND, f"profile {pid} not found")
            return self._update(account, db_id, db, pid.lower(), data)
        if matching == "email":
            key: Any = _field(request, "email", str).strip().lower()
            index: dict[Any, str] = db.by_email
        elif matching == "phone":
            key = normalize_phone(_field(request, "phone", str))
            index = db.by_phone
        elif matching == "custom":
            name = _field(request, "field_name", str)
            key = (name, str(_field(request, "field_value", (int, str))))
            index = db.by_custom
        else:
            raise RequestError(UNKNOWN_MATCHING, f"unknown matching {matching!r}")
        pid_found = index.get(key)
        if pid_found is not None:
            return self._update(account, db_id, db, pid_found, data)
        if update_only:
            raise RequestError(NOT_FOUND_UPDATE_ONLY, "profile not found and update_only is set")
        pid = self._new_id()
        db.profiles[pid] = dict(data)
        index[key] = pid
        if matching == "email":
            db.profiles[pid].setdefault("email", key)
        elif matching == "phone":
            db.profiles[pid].setdefault("phones", [key])
        self._index_phones(db, pid, data)
        self._dirty.add((account, db_id, pid))
        return pid

    def _update(self, account: int, db_id: int, db: _Database, pid: str, data: dict[str, Any]) -> str:
        db.profiles[pid].update(data)
        self._index_phones(db, pid, data)
        self._dirty.add((account, db_id, pid))
        return pid

    @staticmethod
    def _index_phones(db: _Database, pid: str, data: Mapping[str, Any]) -> None:
        phones = data.get("phones")
        if isinstance(phones, list):
            for phone in phones:
                if isinstance(phone, str):
                    db.by_phone.setdefault(normalize_phone(phone), pid)

    def _new_id(self) -> str:
        pid = f"{self._salt}{self._next:016x}"
        self._next += 1
        return pid

    def profile(self, account: int, db_id: int, pid: str) -> dict[str, Any] | None:
        db = self._dbs.get((account, db_id))
        return None if db is None else db.profiles.get(pid)

    def __len__(self) -> int:
        return sum(len(db.profiles) for db in self._dbs.values())

    # Persistence: the indexes are rebuilt from each profile's stored keys on load.

    def _open(self, path: Path) -> None:
        import orjson

        self._sql = sqlite3.connect(path)
        self._sql.execute(
            "CREATE TABLE IF NOT EXISTS profiles (account INTEGER, db INTEGER, id TEXT, data TEXT,"
            " keys TEXT, PRIMARY KEY (account, db, id))"
        )
        self._sql.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
        row = self._sql.execute("SELECT v FROM meta WHERE k = 'salt'").fetchone()
        if row:
            self._salt = row[0]
        else:
            self._sql.execute("INSERT INTO meta VALUES ('salt', ?)", (self._salt,))
        for account, db_id, pid, data, keys in self._sql.execute("SELECT * FROM profiles"):
            db = self._dbs.setdefault((account, db_id), _Database())
            db.profiles[pid] = orjson.loads(data)
            for kind, value in orjson.loads(keys):
                if kind == "email":
                    db.by_email[value] = pid
                elif kind == "phone":
                    db.by_phone[value] = pid
                else:
                    db.by_custom[(value[0], value[1])] = pid
            self._next = max(self._next, int(pid[8:], 16) + 1)
        self._sql.commit()

    def flush(self) -> None:
        """Write changed profiles to SQLite, if the store has a file."""
        if self._sql is None or not self._dirty:
            self._dirty.clear()
            return
        import orjson

        reverse: dict[tuple[int, int], dict[str, list[tuple[str, Any]]]] = {}
        rows = []
        for account, db_id, pid in self._dirty:
            db = self._dbs[(account, db_id)]
            keys = reverse.setdefault((account, db_id), _reverse_index(db)).get(pid, [])
            rows.append(
                (account, db_id, pid, orjson.dumps(db.profiles[pid]).decode(), orjson.dumps(keys).decode())
            )
        self._sql.executemany("INSERT OR REPLACE INTO profiles VALUES (?, ?, ?, ?, ?)", rows)
        self._sql.commit()
        self._dirty.clear()

    def close(self) -> None:
        self.flush()
        if self._sql is not None:
            self._sql.close()
            self._sql = None


def _reverse_index(db: _Database) -> dict[str, list[tuple[str, Any]]]:
    """Each profile's keys, from the indexes, in one pass."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for email, pid in db.by_email.items():
        out.setdefault(pid, []).append(("email", email))
    for phone, pid in db.by_phone.items():
        out.setdefault(pid, []).append(("phone", phone))
    for custom, pid in db.by_custom.items():
        out.setdefault(pid, []).append(("custom", list(custom)))
    return out
