"""The file as batches of messages, read and built on every core a few batches ahead of the caller.

Reading (polars) and building (polars expressions) release the GIL, so threads use both cores;
the results still come in file order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial

import polars as pl

from .config import RESERVED_PREFIX, ImportOptions
from .duplicates import Duplicates
from .messages import ROW, Batch, build_batch
from .reader import Source, ahead


def mapped_columns(columns: list[str], options: ImportOptions) -> list[str]:
    """The file's columns as the messages see them: renamed, and without the excluded ones."""
    renamed = [options.rename.get(c, c) for c in columns]
    dropped = left_out(renamed, options)
    return [c for c in renamed if c not in dropped]


def left_out(renamed: list[str], options: ImportOptions) -> list[str]:
    """``--exclude``'s columns, and the tool's own (``bulk_import_*``, from ``report --failed``)."""
    return [
        *options.exclude,
        *(c for c in renamed if c.startswith(RESERVED_PREFIX) and c not in options.exclude),
    ]


def mapped_frames(
    source: Source, options: ImportOptions, start_row: int = 0, pool: Executor | None = None
) -> Iterator[pl.DataFrame]:
    """The file's frames from ``start_row`` on as the messages see them (renamed, columns left out)."""
    frames: Iterator[pl.DataFrame] = source.batches(start_row, pool)
    dropped = left_out([options.rename.get(c, c) for c in source.columns], options)
    if options.rename or dropped:
        frames = (f.rename(dict(options.rename)).drop(dropped) for f in frames)
    return frames


def key_frames(source: Source, options: ImportOptions) -> Iterator[pl.DataFrame]:
    """The whole file's frames with the key column (renamed), and the typed columns of a CSV (a
    cell that does not convert keeps its row from being sent), read alone."""
    wanted = [c for c in source.columns if options.rename.get(c, c) == options.key or c in source.types]
    frames = source.batches(columns=wanted)
    return (f.rename(dict(options.rename), strict=False) for f in frames) if options.rename else frames


def built_batches(
    source: Source,
    options: ImportOptions,
    run_id: str,
    start_row: int = 0,
    *,
    lookahead: int | None = None,
    build: Callable[[pl.DataFrame, ImportOptions, str], Batch] = build_batch,
    skipped: Duplicates | None = None,
) -> Generator[Batch, None, None]:
    """Every batch from ``start_row`` on, in file order; only the shard's rows with ``options.shard``.
    The ``skipped`` rows are in them, marked, and are not sent.

    ``lookahead`` batches are built before they are asked for (default: one per core, for a caller
    that takes them as fast as they come). Each holds its messages in memory: a caller that sends
    them far slower than they are built, as a run does, needs none.
    """
    workers = max(2, os.cpu_count() or 1)
    depth = workers if lookahead is None else lookahead
    with ThreadPoolExecutor(workers, thread_name_prefix="build") as pool:
        frames = mapped_frames(source, options, start_row, pool)
        if skipped is not None and not skipped.skipped.is_empty():
            frames = (skipped.marked(f) for f in frames)
        if options.shard is not None:
            k, n = options.shard
            frames = (f for f in (f.filter(pl.col(ROW) % n == k) for f in frames) if f.height)
        yield from ahead(pool, (partial(build, frame, options, run_id) for frame in frames), depth)
