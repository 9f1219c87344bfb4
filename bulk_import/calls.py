"""API calls as ``api_req`` messages: one from the command line, or a JSON-lines file of them.

A line of a requests file is ``{"request": "api/v1.1/...", "body": {...}}``. It becomes the message
the platform documents (PROTOCOL.md §2) with the account, the token and a ``request_id`` naming the
line, ``<run id>-<row>-1``, so that its response finds its line of the results file. A line that
is not such an object is never sent; its results line says why. Everything here is pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from .config import ImportOptions
from .errors import InputError
from .messages import ROW, Batch, request_id

#: The column a requests file is read into: each line's text.
LINE = "line"


@dataclass(frozen=True)
class ApiCall:
    """What to call: the API path, its body (the token goes in), and the account."""

    path: str
    body: dict[str, Any]
    account_id: int = 1
    token: str | None = None

    def message(self, rid: str | None) -> bytes:
        body = dict(self.body)
        if self.token:
            body["token"] = self.token
        doc: dict[str, Any] = {"account_id": self.account_id}
        if rid is not None:
            doc["request_id"] = rid
        doc |= {"request": self.path.lstrip("/"), "body": body}
        return orjson.dumps(doc)


def parse_body(text: str) -> dict[str, Any]:
    """``--body``: JSON, or ``@file.json``; an object either way."""
    try:
        raw = Path(text[1:]).read_bytes() if text.startswith("@") else text.encode()
        doc = orjson.loads(raw)
    except OSError as exc:
        raise InputError(f"cannot read the body file {text[1:]}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise InputError(f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError("the body must be a JSON object")
    return doc


def call_from_line(line: str, options: ImportOptions) -> ApiCall | str:
    """The call a line asks for, or why it cannot be sent."""
    if not line.strip():
        return "an empty line"
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if not isinstance(doc, dict):
        return 'not a JSON object: {"request": PATH, "body": {...}}'
    path, body = doc.get("request"), doc.get("body", {})
    if not isinstance(path, str) or not path.strip("/ "):
        return 'no "request": the API method to call, e.g. "api/v1.1/profiles/import"'
    if not isinstance(body, dict):
        return '"body" is not a JSON object'
    return ApiCall(path.strip().lstrip("/"), body, options.account_id, options.api_token)


def build_calls(frame: pl.DataFrame, options: ImportOptions, run_id: str) -> Batch:
    """The messages of a slice of a requests file (a row per line), and the lines refused."""
    rows: list[int] = []
    bodies: list[bytes] = []
    ids: list[bytes] = []
    keys: list[str | None] = []
    reasons: list[str | None] = []
    rejected_rows: list[int] = []
    rejected_reasons: list[str] = []
    for row, line in zip(frame[ROW].to_list(), frame[LINE].to_list(), strict=True):
        call = call_from_line(line or "", options)
        if isinstance(call, str):
            keys.append(None)
            reasons.append(call)
            rejected_rows.append(row)
            rejected_reasons.append(call)
            continue
        rid = request_id(run_id, row, 1)
        keys.append(call.path)
        reasons.append(None)
        rows.append(row)
        bodies.append(call.message(rid))
        ids.append(rid.encode())
    table = pl.DataFrame(
        {"row": frame[ROW], "key": keys, "reason": reasons},
        schema={"row": pl.Int64(), "key": pl.String(), "reason": pl.String()},
    )
    return Batch(rows, bodies, ids, rejected_rows, rejected_reasons, table)
