"""The ways rows reach the platform over RabbitMQ, behind the one run.

- :class:`PerRow`: one ``database_import`` message per row, answered on ``database_import_result``
  by one reply with the row's ``feedback_id``.
- :class:`Batched`: many rows per ``api_req`` message calling ``api/v1.1/profiles/import_batch``
  (or ``add_batch`` / ``update_batch``), answered on ``api_resp`` with one result per row, in
  order. A message carries a run of consecutive rows, so its ``request_id``,
  ``<run id>-<first row>-<count>``, names every row it holds, and a request-level error (a bad
  token, a tariff limit) can be spread over them.
- :class:`Calls`: a file of API calls (``bulk-import api --requests``), a line per message on
  ``api_req``, each answered on ``api_resp`` by its whole response.

A protocol decides how a slice of the file is built, how built rows become messages, how a reply
becomes row outcomes and what the results file calls its columns; the ledger, journal, results,
reconnects and signals are the run's and do not change with it.
Everything here is pure.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import polars as pl

from .calls import build_calls
from .config import BrokerSettings, ImportOptions
from .messages import (
    Answers,
    Batch,
    MalformedReply,
    build_batch,
    envelope,
    parse_feedback_id,
    parse_request_id,
    reply_from,
    request_id,
)

#: The most profiles the platform recommends in one batch request, and the most bytes.
MAX_BATCH_ROWS: Final = 10_000
MAX_BATCH_BYTES: Final = 10 * 1024 * 1024
#: The API method for each ``--mode``.
BATCH_METHODS: Final = {
    "import": "api/v1.1/profiles/import_batch",
    "add": "api/v1.1/profiles/add_batch",
    "update": "api/v1.1/profiles/update_batch",
}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Messages ready to frame: for each, its token (its first row), its body and its id."""

    tokens: list[int]
    bodies: list[bytes]
    ids: list[bytes]
    #: Rows per message, when a message holds more than one.
    counts: list[int] | None = None

    def rows(self, start: int, end: int) -> list[int]:
        """The rows of messages ``start`` to ``end``."""
        if self.counts is None:
            return self.tokens[start:end]
        return [
            r
            for t, c in zip(self.tokens[start:end], self.counts[start:end], strict=True)
            for r in range(t, t + c)
        ]


#: How a slice of the input (numbered rows) becomes a batch of messages.
Build = Callable[[pl.DataFrame, ImportOptions, str], Batch]
#: The results file of an import: these columns, named as they are.
IMPORT_COLUMNS: Final = (
    "row",
    "key",
    "feedback_id",
    "status",
    "error",
    "error_text",
    "matching_field",
    "profile_id",
)
#: The results file of a file of calls: the run's column → its name there.
CALL_COLUMNS: Final = {
    "row": "row",
    "key": "request",
    "feedback_id": "request_id",
    "status": "status",
    "error": "error",
    "error_text": "error_text",
    "response": "response",
}

#: What a reply says: whose it is (a run id, or None), and for this run the rows it answers
#: (None when it is this run's but cannot be read).
Read = tuple[str | None, Answers | None]


def _document(body: bytes) -> dict[str, Any] | None:
    """The JSON object a reply is, or None."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def reply_owner(body: bytes) -> tuple[str | None, int | None]:
    """``(run id, row)`` named by a reply's ``feedback_id`` (or a batch's ``request_id``: its first
    row), as far as it can be read."""
    doc = _document(body)
    if doc is None:
        return None, None
    parsed = parse_feedback_id(doc.get("feedback_id"))
    if parsed is not None:
        return parsed
    batch = parse_request_id(doc.get("request_id"))
    return (None, None) if batch is None else batch[:2]


def read_per_row(body: bytes, run_id: str) -> Read:
    """A ``database_import_result`` reply: whose it is, and for this run the row it answers."""
    doc = _document(body)
    if doc is None:
        return None, None
    parsed = parse_feedback_id(doc.get("feedback_id"))
    if parsed is None:
        return None, None
    owner, row = parsed
    if owner != run_id:
        return owner, None
    try:
        return owner, Answers.of(row, reply_from(doc))
    except MalformedReply:
        return owner, None


class PerRow:
    """``database_import``: a message per row."""

    name = "queue"
    build: Build = staticmethod(build_batch)
    columns: Mapping[str, str] = dict(zip(IMPORT_COLUMNS, IMPORT_COLUMNS, strict=True))

    def __init__(self, options: ImportOptions, settings: BrokerSettings) -> None:
        self.request_queue = settings.queue
        self.result_queue = settings.result_queue

    def messages(self, rows: list[int], bodies: list[bytes], ids: list[bytes], run_id: str) -> Outgoing:
        return Outgoing(rows, bodies, ids)

    def expand(self, tokens: list[int]) -> list[int]:
        return tokens

    read = staticmethod(read_per_row)


class Batched:
    """``api_req``: runs of consecutive rows per message, at most ``batch_size`` and 10 MB each."""

    name = "api"
    build: Build = staticmethod(build_batch)
    columns = PerRow.columns

    def __init__(self, options: ImportOptions, settings: BrokerSettings) -> None:
        self.request_queue = settings.api_queue
        self.result_queue = settings.api_result_queue
        self.batch_size = min(options.batch_size, MAX_BATCH_ROWS)
        self.max_bytes = MAX_BATCH_BYTES
        self.matching = options.matching
        self._counts: dict[int, int] = {}
        # What every database_import message would say, less what the request itself says.
        shared = {k: v for k, v in envelope(options).items() if k not in ("account_id", "update_only")}
        call: dict[str, object] = {"token": options.api_token or "", **shared}
        if options.detect_geo:
            call["detect_geo"] = True
        self._head = orjson.dumps({"account_id": options.account_id})[:-1] + b',"request_id":"'
        mode = "update" if options.update_only else options.mode
        self._middle = (
            b'","request":' + orjson.dumps(BATCH_METHODS[mode]) + b',"body":' + orjson.dumps(call)[:-1]
        )
        self._middle += b',"data":['
        self._overhead = len(self._head) + len(self._middle) + 64

    def messages(self, rows: list[int], bodies: list[bytes], ids: list[bytes], run_id: str) -> Outgoing:
        """Cut ``rows`` (each with its profile item) into runs of consecutive rows, then by count and
        size (a message holds one item at least, however large)."""
        # The items' bytes before each one: a message's size is a difference of two, plus its commas.
        before = list(itertools.accumulate(map(len, bodies), initial=0))
        room = self.max_bytes - self._overhead
        tokens: list[int] = []
        out: list[bytes] = []
        out_ids: list[bytes] = []
        counts: list[int] = []
        for start, run_end in _runs(rows):
            while start < run_end:
                end = _last_fitting(before, start, min(run_end, start + self.batch_size), room)
                first, count = rows[start], end - start
                rid = request_id(run_id, first, count).encode()
                # One join copies the items once: the envelope rides on the first, its end on the last.
                items = bodies[start:end]
                items[0] = b"".join((self._head, rid, self._middle, items[0]))
                items[-1] += b"]}}"
                out.append(b",".join(items))
                out_ids.append(rid)
                tokens.append(first)
                counts.append(count)
                self._counts[first] = count
                start = end
        return Outgoing(tokens, out, out_ids, counts)

    def expand(self, tokens: list[int]) -> list[int]:
        """The rows of the messages whose tokens these are."""
        counts = self._counts
        return [r for t in tokens for r in range(t, t + counts.get(t, 1))]

    def read(self, body: bytes, run_id: str) -> Read:
        doc = _document(body)
        if doc is None:
            return None, None
        parsed = parse_request_id(doc.get("request_id"))
        if parsed is None:
            return None, None
        owner, first, count = parsed
        if owner != run_id:
            return owner, None
        rid = doc["request_id"]
        response = doc.get("body")
        if not isinstance(response, dict):
            return owner, None
        try:
            return owner, self.outcomes(rid, first, count, response)
        except MalformedReply:
            return owner, None

    def outcomes(self, rid: str, first: int, count: int, response: dict[str, object]) -> Answers:
        """Each row's outcome: its item's result, or the request's own error for every row."""
        error = response.get("error", 0)
        results = response.get("result")
        rows = range(first, first + count)
        if isinstance(error, int) and not isinstance(error, bool) and error != 0:
            text = _text(response.get("error_text"))
            return Answers(rows, [error] * count, [text] * count, [""] * count, self.matching, rid)
        if not isinstance(results, list) or len(results) != count:
            raise MalformedReply(f"expected {count} results, got {_size(results)}")
        if not _types(results) <= {dict}:
            raise MalformedReply("a result is not an object")
        # Thousands of these a message: a column at a time, and a closer look only when one is odd.
        try:
            codes, texts, profiles = (list(map(field, results)) for field in _RESULT_FIELDS)
        except KeyError:  # a result leaves out a member: an error 0, an empty text or id
            codes = [item.get("error", 0) for item in results]
            texts = [item.get("error_text") for item in results]
            profiles = [item.get("profile_id") for item in results]
        if not _types(codes) <= {int}:
            odd = next(code for code in codes if type(code) is not int)
            raise MalformedReply(f"error is {type(odd).__name__}, not an integer")
        if not _types(texts) <= {str}:
            texts = [_text(text) for text in texts]
        if not _types(profiles) <= {str}:
            profiles = [_text(profile) for profile in profiles]
        return Answers(rows, codes, texts, profiles, self.matching, rid)


def _last_fitting(before: list[int], start: int, stop: int, room: int) -> int:
    """The furthest end up to ``stop`` whose items from ``start``, a comma after each, take at most
    ``room`` bytes (``before``: the items' bytes before each); ``start + 1`` at least."""
    limit = before[start] + start + room
    if before[stop] + stop <= limit:
        return stop
    lo, hi = start + 1, stop - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if before[mid] + mid <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    """``(start, end)`` positions of the runs of consecutive rows (a batch's rows ascend)."""
    if not rows:
        return []
    if rows[-1] - rows[0] + 1 == len(rows):
        return [(0, len(rows))]
    cuts = [0, *(i for i in range(1, len(rows)) if rows[i] != rows[i - 1] + 1), len(rows)]
    return list(itertools.pairwise(cuts))


#: What a batch response's result gives each row, in :class:`Answers`' order.
_RESULT_FIELDS: Final = tuple(map(operator.itemgetter, ("error", "error_text", "profile_id")))


def _types(values: list[Any]) -> set[type]:
    return set(map(type, values))


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _size(value: object) -> str:
    return str(len(value)) if isinstance(value, Sequence) else type(value).__name__


class Calls(PerRow):
    """``api_req``: a line of a requests file per message, its response kept whole."""

    name = "calls"
    build: Build = staticmethod(build_calls)
    columns: Mapping[str, str] = CALL_COLUMNS

    def __init__(self, options: ImportOptions, settings: BrokerSettings) -> None:
        self.request_queue = settings.api_queue
        self.result_queue = settings.api_result_queue

    def read(self, body: bytes, run_id: str) -> Read:
        doc = _document(body)
        parsed = None if doc is None else parse_request_id(doc.get("request_id"))
        if doc is None or parsed is None:
            return None, None
        owner, row, count = parsed
        if owner != run_id:
            return owner, None
        response = doc.get("body")
        error = response.get("error", 0) if isinstance(response, dict) else None
        if count != 1 or not isinstance(response, dict) or type(error) is not int:
            return owner, None
        rid = doc["request_id"]
        text = _text(response.get("error_text"))
        return owner, Answers((row,), (error,), (text,), ("",), "", rid, orjson.dumps(response).decode())


Protocol = PerRow | Batched | Calls


def protocol_for(options: ImportOptions, settings: BrokerSettings) -> Protocol:
    if options.via == "calls":
        return Calls(options, settings)
    return Batched(options, settings) if options.via == "api" else PerRow(options, settings)
