"""The file as batches of messages, read and built on every core a few batches ahead of the caller.

Reading (polars) and building (polars expressions) release the GIL, so threads use both cores;
the results still come in file order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import polars as pl

from .config import RESERVED_PREFIX, ImportOptions
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


def built_batches(
    source: Source,
    options: ImportOptions,
    run_id: str,
    start_row: int = 0,
    *,
    lookahead: int | None = None,
    build: Callable[[pl.DataFrame, ImportOptions, str], Batch] = build_batch,
) -> Generator[Batch, None, None]:
    """Every batch from ``start_row`` on, in file order; only the shard's rows with ``options.shard``.

    ``lookahead`` batches are built before they are asked for (default: one per core, for a caller
    that takes them as fast as they come). Each holds its messages in memory: a caller that sends
    them far slower than they are built, as a run does, needs none.
    """
    workers = max(2, os.cpu_count() or 1)
    depth = workers if lookahead is None else lookahead
    with ThreadPoolExecutor(workers, thread_name_prefix="build") as pool:
        frames: Iterator[pl.DataFrame] = source.batches(start_row, pool)
        dropped = left_out([options.rename.get(c, c) for c in source.columns], options)
        if options.rename or dropped:
            frames = (f.rename(dict(options.rename)).drop(dropped) for f in frames)
        if options.shard is not None:
            k, n = options.shard
            frames = (f for f in (f.filter(pl.col(ROW) % n == k) for f in frames) if f.height)
        yield from ahead(pool, (partial(build, frame, options, run_id) for frame in frames), depth)
