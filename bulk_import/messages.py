"""The wire format: rows become ``database_import`` bodies, reply bodies become :class:`Reply`.

Everything here is pure. Bodies are built by one polars expression per batch (JSON encoding and
string concatenation run in polars, not per row in Python); ``../PROTOCOL.md`` has the fields.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

import orjson
import polars as pl

from .config import ImportOptions

#: The column the reader adds: each row's number in the file, from 0.
ROW: Final = "__row"
_KEY: Final = "__key"
_REASON: Final = "__reason"

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
    rejected_rows: list[int]
    rejected_reasons: list[str]
    #: Every row of the slice with its matching key as text, for the results file.
    keys: pl.DataFrame

    @property
    def size(self) -> int:
        return self.keys.height


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


def data_columns(schema: pl.Schema, options: ImportOptions) -> list[str]:
    """The columns that go into ``data``; the key travels on its own, except a custom field's."""
    skip = {ROW}
    if options.matching != "custom":
        skip.add(options.key)
    return [name for name in schema.names() if name not in skip]


def _nests_objects(dtype: object) -> bool:
    if isinstance(dtype, pl.Struct):
        return True
    if isinstance(dtype, pl.List | pl.Array):
        return _nests_objects(dtype.inner)
    return False


def _regex_literal(text: str) -> str:
    return "".join("\\" + ch if ch in r"\.+*?()|[]{}^$#&-~" else ch for ch in text)


def body_expr(
    schema: pl.Schema,
    options: ImportOptions,
    run_id: str,
    key_text: pl.Expr | None = None,
    with_nulls: Collection[str] | None = None,
) -> pl.Expr:
    """One expression that turns each row into its ``database_import`` body.

    The message is one struct encoded by polars. With ``nulls=skip`` the null members of ``data``
    are then cut out by regex: inside a JSON string every quote is escaped, so a raw ``,"name":null``
    or ``{"name":null`` is always a member, and the envelope's own fields are never null. Cutting
    ``,"name":null`` first and then ``{"name":null`` with its comma always leaves valid JSON. A
    column holding objects could hold same-named members, so then ``data`` is built member by member.
    ``with_nulls`` names the columns that hold a null at all (None: any may): only those are cut.
    """
    columns = data_columns(schema, options)
    wire = [_wire_value(c, schema[c]).alias(c) for c in columns]
    if options.matching == "custom":
        key_field, key_value = "field_value", _wire_value(options.key, schema[options.key])
    else:
        key_field = options.matching
        key_value = _key_text(options) if key_text is None else key_text
    feedback = pl.lit(f"{run_id}-") + pl.col(ROW).cast(pl.String)
    skip = options.nulls == "skip" and bool(columns)
    if skip and any(_nests_objects(schema[c]) for c in columns):
        return _body_by_members(options, key_field, key_value, columns, wire, feedback)
    # The envelope is the same for every row: a literal prefix costs less than struct fields.
    data = pl.struct(wire) if columns else pl.lit({})
    fields = [key_value.alias(key_field), data.alias("data"), feedback.alias("feedback_id")]
    encoded = pl.struct(fields).struct.json_encode()
    body = pl.concat_str([pl.lit(envelope_prefix(options) + ","), encoded.str.slice(1)])
    nullable = [c for c in columns if with_nulls is None or c in with_nulls]
    if not skip or not nullable:
        return body
    names = "|".join(_regex_literal(orjson.dumps(c).decode()) for c in nullable)
    return body.str.replace_all(f",(?:{names}):null", "").str.replace_all(f"\\{{(?:{names}):null,?", "{")


def _body_by_members(
    options: ImportOptions,
    key_field: str,
    key_value: pl.Expr,
    columns: list[str],
    wire: list[pl.Expr],
    feedback: pl.Expr,
) -> pl.Expr:
    """The body with ``data`` joined from one JSON member per non-null cell (slower, exact)."""
    members = [
        pl.lit(orjson.dumps(c).decode() + ":") + _json_value(w) for c, w in zip(columns, wire, strict=True)
    ]
    return pl.concat_str(
        [
            pl.lit(f'{envelope_prefix(options)},"{key_field}":'),
            _json_value(key_value),
            pl.lit(',"data":{'),
            pl.concat_str(members, separator=",", ignore_nulls=True),
            pl.lit('},"feedback_id":"'),
            feedback,
            pl.lit('"}'),
        ]
    )


def build_batch(frame: pl.DataFrame, options: ImportOptions, run_id: str) -> Batch:
    """Bodies for the rows that can be valid, and the reason for each that cannot."""
    keyed = frame.with_columns(_key_text(options).alias(_KEY))
    keyed = keyed.with_columns(_reject_reason(pl.col(_KEY), options).alias(_REASON))
    keys = keyed.select(pl.col(ROW).alias("row"), pl.col(_KEY).alias("key"), pl.col(_REASON).alias("reason"))
    bad = keys.filter(pl.col("reason").is_not_null())
    good = keyed if bad.is_empty() else keyed.filter(pl.col(_REASON).is_null())
    with_nulls = {c for c, n in zip(frame.columns, frame.null_count().row(0), strict=True) if n}
    bodies = good.select(body_expr(frame.schema, options, run_id, pl.col(_KEY), with_nulls))
    return Batch(
        rows=good[ROW].to_list(),
        bodies=bodies.to_series().cast(pl.Binary).to_list(),
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
