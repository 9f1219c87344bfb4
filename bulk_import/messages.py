"""The wire format: rows become ``database_import`` bodies, reply bodies become :class:`Reply`.

Everything here is pure. Bodies are built by one polars expression per batch (JSON encoding and
string concatenation run in polars, not per row in Python); ``../PROTOCOL.md`` has the fields.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import polars as pl

from .config import ImportOptions

#: The column the reader adds: each row's number in the file, from 0.
ROW: Final = "__row"
_KEY: Final = "__key"
_REASON: Final = "__reason"
_FEEDBACK: Final = "__feedback_id"

EMAIL_RE: Final = r"^[^@\s]+@[^@\s]+$"
PHONE_RE: Final = r"^\+?[0-9]{7,15}$"
PHONE_NOISE_RE: Final = r"[\s\-().]"
PROFILE_ID_RE: Final = r"^[0-9a-fA-F]{24}$"
RUN_ID_RE: Final = re.compile(r"^[0-9a-z]{1,32}$")


def feedback_id(run_id: str, row: int) -> str:
    """The correlation id of a row: the run id and the row number, so a reply finds its row."""
    return f"{run_id}-{row}"


def parse_feedback_id(value: object) -> tuple[str, int] | None:
    """``(run_id, row)`` of a feedback id made by :func:`feedback_id`, or None for any other."""
    if not isinstance(value, str):
        return None
    run_id, sep, row = value.rpartition("-")
    if not sep or not row.isdigit() or not RUN_ID_RE.match(run_id):
        return None
    return run_id, int(row)


@dataclass(frozen=True, slots=True)
class Batch:
    """The messages of a slice of the file; rows are file row numbers."""

    rows: list[int]
    bodies: list[bytes]
    #: Each body's feedback id, sent as its AMQP ``message_id`` too.
    ids: list[bytes]
    rejected_rows: list[int]
    rejected_reasons: list[str]
    #: Every row of the slice with its matching key as text, for the results file.
    keys: pl.DataFrame

    @property
    def size(self) -> int:
        return self.keys.height

    @property
    def first_row(self) -> int:
        return int(self.keys["row"][0])

    @property
    def end_row(self) -> int:
        """One past the last row."""
        return int(self.keys["row"][-1]) + 1


def _json_value(expr: pl.Expr) -> pl.Expr:
    """The JSON text of a value (polars encodes it; null stays null)."""
    encoded = pl.struct(expr.alias("v")).struct.json_encode()
    return pl.when(expr.is_not_null()).then(encoded.str.strip_prefix('{"v":').str.strip_suffix("}"))


def _wire_value(name: str, dtype: pl.DataType) -> pl.Expr:
    """A column in the types the platform takes: ISO dates, lists of strings for ``phones``."""
    col = pl.col(name)
    if name == "phones":
        if dtype == pl.String:
            return (
                col.str.split(",")
                .list.eval(pl.element().str.strip_chars())
                .list.eval(pl.element().filter(pl.element() != ""))
            )
        if isinstance(dtype, pl.List | pl.Array):
            return col.cast(pl.List(pl.String))
        return pl.when(col.is_not_null()).then(pl.concat_list(col.cast(pl.String)))
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return col.dt.to_string("%Y-%m-%dT%H:%M:%S%.f")
        return col
    if isinstance(dtype, pl.Time | pl.Duration | pl.Categorical | pl.Enum | pl.Object):
        return col.cast(pl.String)
    if isinstance(dtype, pl.Decimal):
        return col.cast(pl.Float64)
    if dtype == pl.Binary:
        return col.cast(pl.String, strict=False)
    return col


def _key_text(options: ImportOptions) -> pl.Expr:
    """The key as the platform will see it: cleaned for phone, trimmed for the rest."""
    key = pl.col(options.key)
    if options.matching == "phone":
        return key.cast(pl.String).str.replace_all(PHONE_NOISE_RE, "")
    return key.cast(pl.String).str.strip_chars()


def _reject_reason(text: pl.Expr, options: ImportOptions) -> pl.Expr:
    """Why a row cannot be valid (from its key ``text``), or null when it can be sent."""
    empty = text.is_null() | (text == "")
    rule = {
        "email": EMAIL_RE,
        "phone": PHONE_RE,
        "profile_id": PROFILE_ID_RE,
    }.get(options.matching)
    empty_reason = pl.when(empty).then(pl.lit(f"empty {options.key}"))
    if rule is None:
        return empty_reason.otherwise(pl.lit(None, pl.String))
    return (
        empty_reason.when(~text.str.contains(rule))
        .then(pl.lit(f"invalid {options.matching} in {options.key}"))
        .otherwise(pl.lit(None, pl.String))
    )


def envelope(options: ImportOptions) -> dict[str, object]:
    """The fields every message of a run shares, in the order they are sent."""
    head: dict[str, object] = {"account_id": options.account_id, "db_id": options.db_id}
    head["matching"] = options.matching
    if options.update_only:
        head["update_only"] = True
    if options.skip_triggers:
        head["skip_triggers"] = True
    if options.resource_id is not None:
        head["resource_id"] = options.resource_id
    if options.matching == "custom":
        head["field_name"] = options.field_name
    return head


def envelope_prefix(options: ImportOptions) -> str:
    """:func:`envelope` as the start of a JSON object."""
    return orjson.dumps(envelope(options)).decode()[:-1]


def data_columns(columns: Sequence[str], options: ImportOptions) -> list[str]:
    """The columns that go into ``data``; the key travels on its own, except a custom field's."""
    skip = {ROW, _KEY, _REASON, _FEEDBACK}
    if options.matching != "custom":
        skip.add(options.key)
    return [name for name in columns if name not in skip]


#: The characters that JSON escapes inside a string (searched as literals: cheaper than a regex).
_ESCAPED: Final = [chr(c) for c in range(0x20)] + ['"', "\\"]


@dataclass(frozen=True, slots=True)
class Cells:
    """What a batch's cells hold, so that each column gets the cheapest exact JSON encoding."""

    #: Columns with at least one null.
    nullable: frozenset[str]
    #: String columns with no character that JSON escapes: they are only quoted.
    plain: frozenset[str]

    @classmethod
    def of(cls, frame: pl.DataFrame, names: list[str]) -> Cells:
        """The facts about the ``names`` columns of ``frame``."""
        strings = [n for n in names if frame.schema[n] == pl.String]
        facts = frame.select(
            *(pl.col(n).null_count().alias(f"n{i}") for i, n in enumerate(names)),
            *(pl.col(n).str.contains_any(_ESCAPED).any().alias(f"e{i}") for i, n in enumerate(strings)),
        ).row(0)
        return cls(
            nullable=frozenset(n for n, count in zip(names, facts, strict=False) if count),
            plain=frozenset(n for n, escape in zip(strings, facts[len(names) :], strict=True) if not escape),
        )


#: Pieces of a ``concat_str``: literal text, or an expression giving text per row.
Piece = str | pl.Expr


def _json_text(name: str, dtype: pl.DataType, cells: Cells) -> list[Piece]:
    """The JSON text of a column's values as pieces, null for a null.

    Numbers, booleans, dates and strings with nothing to escape are cast and put between quote
    pieces, which costs a fraction of polars' JSON encoder; everything else goes through it.
    """
    col = pl.col(name)
    if name == "phones":
        return [_json_value(_wire_value(name, dtype))]
    if dtype == pl.String:
        return ['"', col, '"'] if name in cells.plain else [_json_value(col)]
    if dtype.is_integer():
        return [col.cast(pl.String)]
    if dtype == pl.Boolean:
        return [pl.when(col).then(pl.lit("true")).when(col.is_not_null()).then(pl.lit("false"))]
    if isinstance(dtype, pl.Date | pl.Time | pl.Duration) or (
        isinstance(dtype, pl.Datetime) and dtype.time_zone is None
    ):
        return ['"', _wire_value(name, dtype).cast(pl.String), '"']
    return [_json_value(_wire_value(name, dtype))]


def _concat(pieces: list[Piece], **kwargs: Any) -> pl.Expr:
    """One ``concat_str`` of the pieces, neighbouring literals joined into one."""
    merged: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        else:
            merged.append(piece)
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in merged], **kwargs)


def _data_pieces(schema: pl.Schema, options: ImportOptions, cells: Cells) -> list[Piece]:
    """``data``'s members as pieces of one ``concat_str`` that ignores nulls.

    A member never null is laid out flat. One that may be null is a single piece, null with its
    value, so the outer ``concat_str`` drops it whole (``--nulls skip``), or falls back to ``null``
    (``--nulls keep``). With skip, the members up to the first that is always there are joined
    with their own separator, so that no stray comma is left.
    """
    skip = options.nulls == "skip"
    members: list[tuple[list[Piece], bool]] = []
    for name in data_columns(schema.names(), options):
        pieces: list[Piece] = [orjson.dumps(name).decode() + ":", *_json_text(name, schema[name], cells)]
        if name not in cells.nullable:
            members.append((pieces, False))
        elif skip:
            members.append((pieces, True))
        else:
            members.append(([pieces[0], _concat(pieces[1:]).fill_null(pl.lit("null"))], False))
    if not members:
        return []
    first = next((i for i, (_, optional) in enumerate(members) if not optional), len(members) - 1)
    if first:
        lead = [_concat(pieces) for pieces, _ in members[: first + 1]]
        out: list[Piece] = [pl.concat_str(lead, separator=",", ignore_nulls=True)]
    else:
        out = list(members[0][0])
    for pieces, optional in members[first + 1 :]:
        # An optional member is one inner concat_str: null, and so dropped, when its value is.
        out += [_concat([",", *pieces])] if optional else [",", *pieces]
    return out


def body_expr(schema: pl.Schema, options: ImportOptions, cells: Cells) -> pl.Expr:
    """One expression that turns each row into its ``database_import`` body.

    A single ``concat_str`` of literal pieces and each column's JSON text. The envelope is the same
    for every row, so it is one literal. :func:`build_batch` adds the columns it takes besides
    the file's: the feedback id, and for matching other than custom the key as cleaned text.
    """
    if options.matching == "custom":
        key_field, key_value = "field_value", _json_text(options.key, schema[options.key], cells)
    else:
        key_field, key_value = options.matching, _json_text(_KEY, pl.String(), cells)
    return _concat(
        [
            f"{envelope_prefix(options)},{orjson.dumps(key_field).decode()}:",
            *key_value,
            ',"data":{',
            *_data_pieces(schema, options, cells),
            '},"feedback_id":"',
            pl.col(_FEEDBACK),
            '"}',
        ],
        ignore_nulls=True,
    )


def build_batch(frame: pl.DataFrame, options: ImportOptions, run_id: str) -> Batch:
    """Bodies for the rows that can be valid, and the reason for each that cannot."""
    keyed = frame.with_columns(_key_text(options).alias(_KEY))
    keyed = keyed.with_columns(_reject_reason(pl.col(_KEY), options).alias(_REASON))
    keys = keyed.select(pl.col(ROW).alias("row"), pl.col(_KEY).alias("key"), pl.col(_REASON).alias("reason"))
    bad = keys.filter(pl.col("reason").is_not_null())
    good = keyed.drop(_REASON) if bad.is_empty() else keyed.filter(pl.col(_REASON).is_null()).drop(_REASON)
    key = options.key if options.matching == "custom" else _KEY
    used = list(dict.fromkeys([key, *data_columns(good.columns, options)]))
    good = good.with_columns((pl.lit(f"{run_id}-") + pl.col(ROW).cast(pl.String)).alias(_FEEDBACK))
    bodies = good.select(body_expr(good.schema, options, Cells.of(good, used)))
    return Batch(
        rows=good[ROW].to_list(),
        bodies=bodies.to_series().cast(pl.Binary).to_list(),
        ids=good[_FEEDBACK].cast(pl.Binary).to_list(),
        rejected_rows=bad["row"].to_list(),
        rejected_reasons=bad["reason"].to_list(),
        keys=keys,
    )


@dataclass(frozen=True, slots=True)
class Reply:
    """One ``database_import_result`` message, as the platform sent it."""

    feedback_id: str
    error: int
    error_text: str
    matching_field: str
    profile_id: str


class MalformedReply(ValueError):
    """A reply body that is not the documented JSON object."""


def parse_reply(body: bytes) -> Reply:
    """The reply in ``body``; raises :class:`MalformedReply` saying what is wrong."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedReply(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedReply("not a JSON object")
    fid = doc.get("feedback_id")
    if not isinstance(fid, str) or not fid:
        raise MalformedReply("no feedback_id")
    error = doc.get("error", 0)
    if isinstance(error, bool) or not isinstance(error, int):
        raise MalformedReply(f"error is {type(error).__name__}, not an integer")
    text = doc.get("error_text")
    return Reply(
        feedback_id=fid,
        error=error,
        error_text="" if text is None else str(text),
        matching_field=_text(doc.get("matching_field")),
        profile_id=_text(doc.get("profile_id")),
    )


def _text(value: object) -> str:
    return "" if value is None else str(value)
