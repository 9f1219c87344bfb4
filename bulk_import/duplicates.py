"""Rows whose key another row of the file has: found before anything is sent.

The platform applies the messages of a run in any order, so two rows for one profile leave either
of them behind. ``--on-duplicate-key`` chooses: ``last`` (the default) sends the file's last row of
each key, ``first`` its first, ``all`` sends every row, ``fail`` refuses the file. The rows not sent
are ``skipped_duplicate``, naming the row that was.

Keys are compared as the platform compares them (:func:`.messages.comparable_keys`). Memory stays
small whatever the file: a first pass keeps a hash per row and finds the hashes seen twice; a second
pass, only when there are some, reads the file again, keeps the keys of those rows alone and groups
them exactly, so a hash shared by two keys never skips a row. The hash is 64 bits up to
:data:`WIDE_HASH_ROWS` rows, so that a file without duplicates is read once (with 32 bits, a million
keys share some hash by chance); past that it is cut to 32 bits (40 MB for ten million rows).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .config import ImportOptions
from .errors import InputError
from .messages import DUPLICATE_OF, ROW, comparable_keys

#: Rows up to which the first pass keeps 64-bit hashes (at most 32 MB, in two copies while sorted).
WIDE_HASH_ROWS = 1 << 22

#: ``row, kept, key``: each row not sent, the row sent for its key, and the key.
SKIPPED_SCHEMA = pl.Schema({"row": pl.Int64(), "kept": pl.Int64(), "key": pl.String()})


@dataclass(frozen=True)
class Duplicates:
    """The rows a run skips, sorted by row, with the row kept for each."""

    skipped: pl.DataFrame

    @classmethod
    def none(cls) -> Duplicates:
        return cls(pl.DataFrame(schema=SKIPPED_SCHEMA))

    @property
    def rows(self) -> pl.Series:
        return self.skipped["row"]

    def marked(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with the kept row beside each skipped one in :data:`DUPLICATE_OF`, when it has any.

        A frame's rows are consecutive, so only the skipped rows in its span are looked at.
        """
        if self.skipped.is_empty() or frame.is_empty():
            return frame
        rows = self.rows
        lo = rows.search_sorted(frame[ROW][0], "left")
        hi = rows.search_sorted(frame[ROW][-1], "right")
        if hi == lo:
            return frame
        part = self.skipped.slice(lo, hi - lo).select(
            pl.col("row").alias(ROW), pl.col("kept").alias(DUPLICATE_OF)
        )
        return frame.join(part, on=ROW, how="left", maintain_order="left")


def find_duplicates(
    path: Path, options: ImportOptions, frames: Callable[[], Iterator[pl.DataFrame]]
) -> Duplicates:
    """The rows ``options.on_duplicate_key`` leaves out; an :class:`InputError` under ``fail``.

    ``frames()`` reads the whole file from its first row, renamed as the run sends it; it is called
    twice at most.
    """
    policy = options.on_duplicate_key
    if policy == "all" or options.via == "calls":
        return Duplicates.none()
    seen = _hashes_seen_twice(_hashes(frame, options) for frame in _readable(frames()))
    if seen.is_empty():
        return Duplicates.none()
    candidates = (
        comparable_keys(frame.filter(_as(_hashes(frame, options), seen).is_in(seen.implode())), options)
        for frame in _readable(frames())
    )
    groups = (
        pl.concat(candidates)
        .group_by("key", maintain_order=True)
        .agg(pl.col("row").sort())
        .filter(pl.col("row").list.len() > 1)
        .sort(pl.col("row").list.first())
    )
    if groups.is_empty():
        return Duplicates.none()
    if policy == "fail":
        key, rows = groups.row(0)
        raise InputError(
            f"{path}: rows {rows[0]} and {rows[1]} have the same key {key!r} ({groups.height} keys are "
            "on more than one row); --on-duplicate-key last, first or all chooses what is sent"
        )
    kept = pl.col("row").list.last() if policy == "last" else pl.col("row").list.first()
    skipped = (
        groups.with_columns(kept.alias("kept"))
        .explode("row")
        .filter(pl.col("row") != pl.col("kept"))
        .select("row", "kept", "key")
        .sort("row")
    )
    return Duplicates(skipped)


def _readable(frames: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """The frames up to a record that cannot be read: the run sends the rows before it, then says why."""
    with contextlib.suppress(InputError):
        yield from frames


def _hashes(frame: pl.DataFrame, options: ImportOptions) -> pl.Series:
    """Each row's key, as compared, hashed (rows are not checked: a row that cannot be sent is let
    go in the second pass)."""
    return comparable_keys(frame, options, sendable=False)["key"].hash().alias("hash")


def _narrow(hashes: pl.Series) -> pl.Series:
    return (hashes.cast(pl.UInt64) & 0xFFFFFFFF).cast(pl.UInt32)


def _as(hashes: pl.Series, seen: pl.Series) -> pl.Series:
    """``hashes`` as wide as the first pass kept them."""
    return _narrow(hashes) if seen.dtype == pl.UInt32 else hashes.cast(pl.UInt64)


def _hashes_seen_twice(parts: Iterator[pl.Series]) -> pl.Series:
    """The hashes that more than one row has, found by sorting them (no hash table of every key).

    At its peak it holds two copies of the hashes: the neighbours are compared as two views of the
    sorted one. Past :data:`WIDE_HASH_ROWS` rows every hash is cut to 32 bits.
    """
    kept: list[pl.Series] = []
    rows, wide = 0, True
    for part in parts:
        rows += len(part)
        if wide and rows > WIDE_HASH_ROWS:
            kept, wide = [_narrow(h) for h in kept], False
        kept.append(part.cast(pl.UInt64) if wide else _narrow(part))
    empty = pl.Series("hash", [], pl.UInt64 if wide else pl.UInt32)
    hashes = pl.concat([*kept, empty], rechunk=True)
    kept.clear()
    hashes = hashes.sort()
    if len(hashes) < 2:
        return hashes.clear()
    repeated = hashes.slice(1).filter(hashes.slice(1) == hashes.slice(0, len(hashes) - 1))
    return repeated.unique()
