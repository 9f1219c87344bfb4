"""The wire format: rows become ``database_import`` bodies, reply bodies become :class:`Reply`.

Everything here is pure. Bodies are built by polars expressions a batch at a time, one for the
whole body or, for a batch of few rows and many columns, a few for all its cells (JSON encoding
and string concatenation run in polars, not per row in Python); ``../PROTOCOL.md`` has the fields.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import orjson
import polars as pl

from .config import ImportOptions

#: The column the reader adds: each row's number in the file, from 0.
ROW: Final = "__row"
#: Why a row's cells do not convert to their ``--type`` (null when they do): the reader's word.
CELL_ERROR: Final = "__cell_error"
#: Beside a row another of its key is sent for: that row's number (see :mod:`.duplicates`).
DUPLICATE_OF: Final = "__duplicate_of"
#: How a skipped row's reason starts (the row sent instead follows).
SKIPPED_REASON: Final = "duplicate key: row "
_KEY: Final = "__key"
_REASON: Final = "__reason"
_FEEDBACK: Final = "__feedback_id"

#: An email: no whitespace and no control character (``\p{Cc}``: U+0000 to U+001F, U+007F to U+009F).
EMAIL_RE: Final = r"^[^@\s\p{Cc}]+@[^@\s\p{Cc}]+$"
PHONE_RE: Final = r"^\+?[0-9]{7,15}$"
PHONE_NOISE_RE: Final = r"[\s\-().]"
PROFILE_ID_RE: Final = r"^[0-9a-fA-F]{24}$"
RUN_ID_RE: Final = re.compile(r"^[0-9a-z]{1,32}$")
#: The types ``field_value`` takes (PROTOCOL.md §1), said in every reason a custom key is refused for.
FIELD_VALUE_TYPES: Final = "field_value is an int or a string"
#: A tag-type custom key as text: its tags joined by this (the documented ``"tag-1, tag-2"``).
TAG_SEPARATOR: Final = ", "
_ISO_DATETIME: Final = "%Y-%m-%dT%H:%M:%S%.f"


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


def request_id(run_id: str, first: int, count: int) -> str:
    """The id of an API request carrying rows ``first`` to ``first + count``: it names them all."""
    return f"{run_id}-{first}-{count}"


def parse_request_id(value: object) -> tuple[str, int, int] | None:
    """``(run id, first row, count)`` of an id made by :func:`request_id`, or None for any other."""
    if not isinstance(value, str):
        return None
    parts = value.split("-")
    if len(parts) != 3 or not RUN_ID_RE.match(parts[0]) or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return parts[0], int(parts[1]), int(parts[2])


@dataclass(frozen=True, slots=True)
class Batch:
    """The messages of a slice of the file; rows are file row numbers."""

    rows: list[int]
    bodies: list[bytes]
    #: Each body's feedback id, sent as its AMQP ``message_id`` too; empty with ``--via api``, where
    #: a request's ``request_id`` names its rows and a profile carries no id of its own.
    ids: list[bytes]
    rejected_rows: list[int]
    rejected_reasons: list[str]
    #: Every row of the slice with its matching key as text, for the results file.
    keys: pl.DataFrame
    #: Rows not sent because another row of their key is (their reason says which).
    skipped_rows: list[int] = field(default_factory=list)

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


def _inner(dtype: pl.List | pl.Array) -> pl.DataType:
    """A list's item type as an instance (polars gives the class of a type without parameters)."""
    inner = dtype.inner
    return inner() if isinstance(inner, type) else inner


def _nested(dtype: pl.DataType) -> bool:
    """Whether a value has no text of its own: a struct, or a list of lists or of structs."""
    if isinstance(dtype, pl.List | pl.Array):
        dtype = _inner(dtype)
    return isinstance(dtype, pl.Struct | pl.List | pl.Array)


def _kind(dtype: pl.DataType) -> str:
    """A nested type in words, for a reject reason."""
    if isinstance(dtype, pl.List | pl.Array):
        return f"list of {type(_inner(dtype)).__name__.lower()}s"
    return type(dtype).__name__.lower()


def _whole(value: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A float or decimal as Int64 when it is a whole number that fits one (42.0 → 42), else null."""
    ints = value.cast(pl.Int64, strict=False)
    return pl.when(ints.cast(dtype) == value).then(ints)


def _is_fractional(dtype: pl.DataType) -> bool:
    return dtype.is_float() or isinstance(dtype, pl.Decimal)


def _value_text(value: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A scalar as the text a platform field holds: whole floats without ``.0``, ISO datetimes."""
    if dtype == pl.String:
        return value
    if _is_fractional(dtype):
        return pl.coalesce(_whole(value, dtype).cast(pl.String), value.cast(pl.String))
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return value.dt.to_string(_ISO_DATETIME)
    return value.cast(pl.String)


def _as_list(value: pl.Expr, dtype: pl.List | pl.Array) -> pl.Expr:
    return value.cast(pl.List(_inner(dtype))) if isinstance(dtype, pl.Array) else value


def _tags(value: pl.Expr, dtype: pl.List | pl.Array) -> pl.Expr:
    """A list as the documented tag string ``"tag-1, tag-2"``: items trimmed, empty ones dropped."""
    item = _value_text(pl.element(), _inner(dtype)).str.strip_chars()
    return _as_list(value, dtype).list.eval(item.filter(item != "")).list.join(TAG_SEPARATOR)


def _phones(value: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """``phones`` as a list of strings, each cleaned as the ``phone`` key is; empty items dropped.

    A list or a comma-separated string gives its items; any other value is one phone. A float that
    is not a whole number is no phone (its ``.`` would be cleaned away into other digits).
    """

    def phone(item: pl.Expr, item_type: pl.DataType) -> pl.Expr:
        text = (
            _whole(item, item_type).cast(pl.String)
            if _is_fractional(item_type)
            else _value_text(item, item_type)
        )
        return text.str.replace_all(PHONE_NOISE_RE, "")

    if _nested(dtype):
        return value
    if isinstance(dtype, pl.List | pl.Array):
        item = phone(pl.element(), _inner(dtype))
        return _as_list(value, dtype).list.eval(item.filter(item != ""))
    if dtype == pl.String:
        items = value.str.replace_all(PHONE_NOISE_RE, "").str.split(",")
    else:
        items = pl.when(value.is_not_null()).then(pl.concat_list(phone(value, dtype)))
    return items.list.eval(pl.element().filter(pl.element() != ""))


def _wire_value(name: str, dtype: pl.DataType) -> pl.Expr:
    """A column in the types the platform takes: ISO dates, lists of strings for ``phones``."""
    col = pl.col(name)
    if name == "phones":
        return _phones(col, dtype)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return col.dt.to_string(_ISO_DATETIME)
        return col
    if isinstance(dtype, pl.Time | pl.Duration | pl.Categorical | pl.Enum | pl.Object):
        return col.cast(pl.String)
    if isinstance(dtype, pl.Decimal):
        return col.cast(pl.Float64)
    if dtype == pl.Binary:
        return col.cast(pl.String, strict=False)
    return col


def _key_text(options: ImportOptions, dtype: pl.DataType) -> pl.Expr:
    """The key as the platform will see it: cleaned for phone, trimmed for the rest.

    The results file shows this text, and a custom key that is not an int is sent as it. A list is
    its tag string; a whole float its int. Only those types pay for more than a cast.
    """
    key = pl.col(options.key)
    if _nested(dtype):
        return _json_value(key)
    text = _tags(key, dtype) if isinstance(dtype, pl.List | pl.Array) else _value_text(key, dtype)
    if options.matching == "phone":
        return text.str.replace_all(PHONE_NOISE_RE, "")
    return text.str.strip_chars()


def _reject_reason(text: pl.Expr, options: ImportOptions, dtype: pl.DataType) -> pl.Expr:
    """Why a row cannot be valid (from its key ``text`` and type), or null when it can be sent."""
    key = pl.col(options.key)
    rule = {
        "email": EMAIL_RE,
        "phone": PHONE_RE,
        "profile_id": PROFILE_ID_RE,
    }.get(options.matching)
    invalid: pl.Expr = pl.lit(f"invalid {options.matching} in {options.key}")
    cases = [
        (text.is_null() | (text == ""), pl.lit(f"empty {options.key}")),
        # Whatever the matching: no store keeps it as typed, and no one types it.
        (text.str.contains("\x00", literal=True), pl.lit(f"NUL character in {options.key}")),
    ]
    if _nested(dtype):
        wants = FIELD_VALUE_TYPES if rule is None else f"{options.matching} is a string"
        cases.append((pl.lit(True), pl.lit(f"{options.key} is a {_kind(dtype)}: {wants}")))
    elif _is_fractional(dtype) and options.matching in ("custom", "phone"):
        if rule is None:
            number = key.cast(pl.Float64)
            whole = number.is_finite() & (number == number.floor())
            too_large, fraction = pl.lit(" is too large for an int"), pl.lit(" is not a whole number")
            why = pl.when(whole).then(too_large).otherwise(fraction)
            value = key.cast(pl.String)
            invalid = pl.concat_str(pl.lit(f"{options.key} "), value, why, pl.lit(f": {FIELD_VALUE_TYPES}"))
        cases.append((_whole(key, dtype).is_null(), invalid))
    if rule is not None:
        cases.append((~text.str.contains(rule), invalid))
    reason: pl.Expr = pl.lit(None, pl.String)
    for failed, because in reversed(cases):
        reason = pl.when(failed).then(because).otherwise(reason)
    return reason


def _sent_key(options: ImportOptions, dtype: pl.DataType) -> pl.Expr | None:
    """The custom key column as sent, in ``data`` and as ``field_value``, or None when as read.

    Ints and lists go as they are (a list is a JSON array in ``data``); a whole float as its int;
    anything else as its text, the results file's key, so that the profile holds what matched.
    """
    if dtype.is_integer() or isinstance(dtype, pl.List | pl.Array) or _nested(dtype):
        return None
    if _is_fractional(dtype):
        return pl.col(options.key).cast(pl.Int64, strict=False)
    return pl.col(_KEY)


def _key_source(schema: pl.Schema, options: ImportOptions) -> str:
    """The column whose JSON text is the key's value: the sent key if an int or a string, else its text."""
    if options.matching == "custom":
        dtype = schema[options.key]
        if dtype.is_integer() or dtype == pl.String:
            return options.key
    return _KEY


def comparable_keys(frame: pl.DataFrame, options: ImportOptions, *, sendable: bool = True) -> pl.DataFrame:
    """``row, key`` with the key as the platform compares it; only the rows that can be sent,
    unless ``sendable`` is False (then cheaper: no row is checked).

    The key is the one :func:`build_batch` sends (trimmed; a phone cleaned), an email lowercased:
    two rows with equal keys here are one profile to the platform.
    """
    dtype = frame.get_column(options.key).dtype
    refused = sendable and CELL_ERROR in frame.columns
    keyed = frame.select(ROW, options.key, *([CELL_ERROR] if refused else [])).with_columns(
        _key_text(options, dtype).alias(_KEY)
    )
    if sendable:
        can = _reject_reason(pl.col(_KEY), options, dtype).is_null()
        keyed = keyed.filter(can & pl.col(CELL_ERROR).is_null() if refused else can)
    key = pl.col(_KEY).str.to_lowercase() if options.matching == "email" else pl.col(_KEY)
    return keyed.select(pl.col(ROW).alias("row"), key.alias("key"))


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
    """The columns that go into ``data``; the key travels on its own, except a custom field's.

    With ``--via api`` the key is a field of the profile under its matching's name (``email``,
    ``phone``, ``profile_id``): a column of that name besides the key column is not sent.
    """
    skip = {ROW, _KEY, _REASON, _FEEDBACK, CELL_ERROR, DUPLICATE_OF}
    if options.matching != "custom":
        skip.add(options.key)
        if options.via == "api":
            skip.add(options.matching)
    return [name for name in columns if name not in skip]


#: The characters that JSON escapes inside a string (searched as literals: cheaper than a regex).
_ESCAPED: Final = [chr(c) for c in range(0x20)] + ['"', "\\"]
#: What each of them becomes inside a JSON string, as orjson writes it (``\n``, ``\u0000``, ``\"``).
_ESCAPES: Final = [orjson.dumps(c).decode()[1:-1] for c in _ESCAPED]
#: Batches of fewer rows than this have their ``data`` made stacked (:func:`_stacked_data`).
STACK_BELOW_ROWS: Final = 1024


@dataclass(frozen=True, slots=True)
class Cells:
    """What a batch's cells hold, so that each column gets the cheapest exact JSON encoding."""

    #: Columns with at least one null.
    nullable: frozenset[str]
    #: String columns with no character that JSON escapes: they are only quoted.
    plain: frozenset[str]

    @classmethod
    def of(cls, frame: pl.DataFrame, names: list[str]) -> Cells:
        """The facts about the ``names`` columns of ``frame``, at a cost per cell, not per column.

        Null counts are kept with each column. The string columns are searched as one: stacked end
        to end (no copy), one search for what JSON escapes, each hit's position telling its column.
        An expression per column would cost far more to plan than a wide file's batch holds cells.
        """
        columns = [frame.get_column(name) for name in names]
        strings = [column for column in columns if column.dtype == pl.String]
        escaped: set[str] = set()
        if strings and frame.height:
            hits = pl.concat(strings, rechunk=False).str.contains_any(_ESCAPED).arg_true()
            escaped = {strings[i].name for i in (hits // frame.height).unique().to_list()}
        return cls(
            nullable=frozenset(column.name for column in columns if column.null_count()),
            plain=frozenset(column.name for column in strings if column.name not in escaped),
        )


#: Pieces of a ``concat_str``: literal text, or an expression giving text per row.
Piece = str | pl.Expr


def _json_text(name: str, dtype: pl.DataType, cells: Cells) -> list[Piece]:
    """The JSON text of a column's values as pieces, null for a null.

    Numbers, booleans, dates and strings are cast, escaped where they need it, and put between
    quote pieces, which costs a fraction of polars' JSON encoder; everything else goes through it.
    """
    col = pl.col(name)
    if name == "phones":
        return [_json_value(_wire_value(name, dtype))]
    if dtype == pl.String:
        return ['"', col if name in cells.plain else _escaped(col), '"']
    if dtype.is_integer():
        return [col.cast(pl.String)]
    if dtype == pl.Boolean:
        return [pl.when(col).then(pl.lit("true")).when(col.is_not_null()).then(pl.lit("false"))]
    if isinstance(dtype, pl.Date | pl.Time | pl.Duration) or (
        isinstance(dtype, pl.Datetime) and dtype.time_zone is None
    ):
        return ['"', _wire_value(name, dtype).cast(pl.String), '"']
    return [_json_value(_wire_value(name, dtype))]


def _escaped(text: pl.Expr) -> pl.Expr:
    """Text with what JSON escapes inside a string escaped, as orjson does it."""
    return text.str.replace_many(_ESCAPED, _ESCAPES)


def _concat(pieces: list[Piece], **kwargs: Any) -> pl.Expr:
    """One ``concat_str`` of the pieces, neighbouring literals joined into one."""
    merged: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        else:
            merged.append(piece)
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in merged], **kwargs)


def _data_pieces(
    schema: pl.Schema, options: ImportOptions, cells: Cells, *, after_key: bool = False
) -> list[Piece]:
    """``data``'s members as pieces of one ``concat_str`` that ignores nulls.

    A member never null is laid out flat. One that may be null is a single piece, null with its
    value, so the outer ``concat_str`` drops it whole (``--nulls skip``), or falls back to ``null``
    (``--nulls keep``). With skip, the members up to the first that is always there (all of them
    when none is) are joined with their own separator, so that no stray comma or name is left.
    ``after_key``: the members follow the key in one object, so each comes with its comma.
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
    out: list[Piece]
    if after_key:
        first, out = -1, []
    elif first or members[0][1]:
        lead = [_concat(pieces) for pieces, _ in members[: first + 1]]
        out = [pl.concat_str(lead, separator=",", ignore_nulls=True)]
    else:
        out = list(members[0][0])
    for pieces, optional in members[first + 1 :]:
        # An optional member is one inner concat_str: null, and so dropped, when its value is.
        out += [_concat([",", *pieces])] if optional else [",", *pieces]
    return out


def _stacked_data(frame: pl.DataFrame, schema: pl.Schema, options: ImportOptions, cells: Cells) -> pl.Series:
    """Each row's ``data`` members joined, for a batch of few rows: the same text as :func:`_data_pieces`.

    One ``concat_str`` of every column costs, besides its cells, a fixed amount per column (its
    pieces are planned, each makes an array): a batch of a few hundred rows of a file of thousands
    of columns pays far more for its columns than for its cells. Here the columns are stacked end to
    end (no copy), the strings in one stack and the JSON text of the others (as :func:`_json_text`
    makes it) in another, and each stack is named, quoted and escaped by one expression whatever the
    number of its columns. The members are then taken in row order, and each row's joined with
    commas, a null member left out (``--nulls skip``) or written ``null`` (``--nulls keep``).
    """
    names = data_columns(schema.names(), options)
    height, width = frame.height, len(names)
    if not width or not height:
        return pl.repeat("", height, dtype=pl.String, eager=True)
    strings = [name for name in names if isinstance(schema[name], pl.String) and name != "phones"]
    quoted = set(strings)
    others = [name for name in names if name not in quoted]
    keep = options.nulls == "keep"
    stacks = []
    if strings:
        columns = dict(zip(frame.columns, frame.get_columns(), strict=True))
        stacks.append(_members(strings, [columns[name] for name in strings], quote=True, keep=keep))
    if others:
        texts = frame.select(_concat(_json_text(name, schema[name], cells)).alias(name) for name in others)
        stacks.append(_members(others, texts.get_columns(), quote=False, keep=keep))
    # Member j of row i is cell i of the place of column j in the stacks.
    place = {name: i for i, name in enumerate(strings + others)}
    places = pl.lit(pl.Series([place[name] for name in names], dtype=pl.Int64))
    k = pl.int_range(0, width * height, dtype=pl.Int64)
    members = pl.lit(pl.concat(stacks, rechunk=False)).gather(places.gather(k % width) * height + k // width)
    return pl.select(members.reshape((height, width)).arr.join(",", ignore_nulls=True)).to_series()


def _members(names: list[str], texts: list[pl.Series], *, quote: bool, keep: bool) -> pl.Series:
    """``"name":value`` for each cell of the columns ``texts``, stacked: null for a null, or with
    ``keep`` the value ``null``; the values quoted and escaped as JSON strings with ``quote``."""
    height = texts[0].len()
    stacked = pl.lit(pl.concat(texts, rechunk=False))
    value = pl.concat_str(pl.lit('"'), _escaped(stacked), pl.lit('"')) if quote else stacked
    if keep:
        value = value.fill_null(pl.lit("null"))
    labels = pl.lit(pl.Series([orjson.dumps(name).decode() + ":" for name in names], dtype=pl.String))
    column = pl.int_range(0, len(names) * height, dtype=pl.Int64) // height
    return pl.select(pl.concat_str(labels.gather(column), value)).to_series()


def _members_of(schema: pl.Schema, options: ImportOptions, cells: Cells, data: pl.Expr | None) -> list[Piece]:
    return _data_pieces(schema, options, cells) if data is None else [data]


def body_expr(
    schema: pl.Schema, options: ImportOptions, cells: Cells, data: pl.Expr | None = None
) -> pl.Expr:
    """One expression that turns each row into its ``database_import`` body (or, ``--via api``,
    its profile in a batch request: its fields with the key among them, ``{"email": ..., "_fname":
    ...}``, as the documentation of ``import_batch`` shows a profile).

    A single ``concat_str`` of literal pieces and each column's JSON text. The envelope is the same
    for every row, so it is one literal. :func:`build_batch` adds the columns it takes besides
    the file's: the feedback id and the key as cleaned text, and puts a custom key as it is sent
    (:func:`_sent_key`) in place of the file's column. ``data`` gives the members' text when it is
    made apart (:func:`_stacked_data`).
    """
    api = options.via == "api"
    if api and options.matching == "custom":
        # A profile of a batch request (the request says the rest): its fields, the key one of them.
        return _concat(["{", *_members_of(schema, options, cells, data), "}"], ignore_nulls=True)
    key_field = "field_value" if options.matching == "custom" else options.matching
    source = _key_source(schema, options)
    key = [orjson.dumps(key_field).decode() + ":", *_json_text(source, schema[source], cells)]
    if api:
        # The key first, then the other fields, each with its comma.
        if data is None:
            rest = _data_pieces(schema, options, cells, after_key=True)
        else:  # the members made apart, "" when there are none
            rest = [pl.when(data.str.len_bytes() > 0).then(pl.lit(",") + data)]
        return _concat(["{", *key, *rest, "}"], ignore_nulls=True)
    members = _members_of(schema, options, cells, data)
    fields = [',"data":{', *members, "}"]
    return _concat(
        [f"{envelope_prefix(options)},", *key, *fields, ',"feedback_id":"', pl.col(_FEEDBACK), '"}'],
        ignore_nulls=True,
    )


def build_batch(frame: pl.DataFrame, options: ImportOptions, run_id: str) -> Batch:
    """Bodies for the rows that can be valid, and the reason for each that cannot.

    Keys, reasons and feedback ids are worked out on the row number and key columns alone, so
    that a file of many columns pays for them once per row, not once per column.
    """
    dtype = frame.get_column(options.key).dtype
    refused = [CELL_ERROR] if CELL_ERROR in frame.columns else []
    duplicate = [DUPLICATE_OF] if DUPLICATE_OF in frame.columns else []
    keyed = frame.select(ROW, options.key, *refused, *duplicate).with_columns(
        _key_text(options, dtype).alias(_KEY)
    )
    reason = _reject_reason(pl.col(_KEY), options, dtype)
    if refused:
        reason = pl.coalesce(reason, CELL_ERROR)
    skipped: list[int] = []
    if duplicate:
        kept = pl.col(DUPLICATE_OF)
        skipped = keyed.filter(kept.is_not_null())[ROW].to_list()
        sent_instead = pl.concat_str(pl.lit(SKIPPED_REASON), kept.cast(pl.String), pl.lit(" is sent"))
        reason = pl.when(kept.is_not_null()).then(sent_instead).otherwise(reason)
    keyed = keyed.with_columns(reason.alias(_REASON))
    keys = keyed.select(pl.col(ROW).alias("row"), pl.col(_KEY).alias("key"), pl.col(_REASON).alias("reason"))
    left_out = keys.filter(pl.col("reason").is_not_null())
    bad = left_out.filter(~pl.col("row").is_in(skipped)) if skipped else left_out
    if not left_out.is_empty():
        sendable = keyed.get_column(_REASON).is_null()
        frame, keyed = frame.filter(sendable), keyed.filter(sendable)
    per_row = options.via != "api"
    added = [pl.col(_KEY)]
    if per_row:
        added.append((pl.lit(f"{run_id}-") + pl.col(ROW).cast(pl.String)).alias(_FEEDBACK))
    if options.matching == "custom" and (sent := _sent_key(options, dtype)) is not None:
        added.append(sent.alias(options.key))
    good = frame.with_columns(keyed.select(added).get_columns())
    schema = good.schema
    source = _key_source(schema, options)
    if good.height < STACK_BELOW_ROWS:
        cells = Cells.of(good, [source])
        data = _stacked_data(good, schema, options, cells)
        bodies = good.select(body_expr(schema, options, cells, pl.lit(data)))
    else:
        used = list(dict.fromkeys([source, *data_columns(schema.names(), options)]))
        bodies = good.select(body_expr(schema, options, Cells.of(good, used)))
    return Batch(
        rows=good[ROW].to_list(),
        bodies=bodies.to_series().cast(pl.Binary).to_list(),
        ids=good[_FEEDBACK].cast(pl.Binary).to_list() if per_row else [],
        rejected_rows=bad["row"].to_list(),
        rejected_reasons=bad["reason"].to_list(),
        keys=keys,
        skipped_rows=skipped,
    )


@dataclass(frozen=True, slots=True)
class Reply:
    """One row's answer: a ``database_import_result`` message as the platform sent it, or a row's
    part of an API response."""

    feedback_id: str
    error: int
    error_text: str
    matching_field: str
    profile_id: str
    #: The ``request_id`` of the API request that carried the row (a batch's names all its rows).
    request_id: str | None = None
    #: An API call's whole response body, as JSON text.
    response: str | None = None


@dataclass(frozen=True, slots=True)
class Answers:
    """The rows one reply answers, a column per field: a batch's thousand rows are a few lists,
    not a thousand objects, from the response to the ledger and the journal."""

    rows: Sequence[int]
    error: Sequence[int]
    error_text: Sequence[str]
    profile_id: Sequence[str]
    matching_field: str
    #: The ``request_id`` of the API request that carried the rows.
    request_id: str | None = None
    #: An API call's whole response body, as JSON text.
    response: str | None = None

    @classmethod
    def of(cls, row: int, reply: Reply) -> Answers:
        """One row's reply."""
        return cls(
            (row,),
            (reply.error,),
            (reply.error_text,),
            (reply.profile_id,),
            reply.matching_field,
            reply.request_id,
            reply.response,
        )

    def __len__(self) -> int:
        return len(self.rows)

    def only(self, keep: Sequence[int]) -> Answers:
        """The answers at positions ``keep``."""
        return replace(
            self,
            rows=[self.rows[i] for i in keep],
            error=[self.error[i] for i in keep],
            error_text=[self.error_text[i] for i in keep],
            profile_id=[self.profile_id[i] for i in keep],
        )


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
    return reply_from(doc)


def reply_from(doc: dict[str, Any]) -> Reply:
    """The reply a parsed JSON object holds; raises :class:`MalformedReply` saying what is wrong."""
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
