"""The file as batches of messages, read and built on every core a few batches ahead of the caller.

Reading (polars) and building (polars expressions) release the GIL, so threads use both cores;
the results still come in file order.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from .config import ImportOptions
from .messages import Batch, build_batch
from .reader import Source, ahead


def built_batches(
    source: Source, options: ImportOptions, run_id: str, start_row: int = 0
) -> Generator[Batch, None, None]:
    """Every batch from ``start_row`` on, in file order."""
    workers = max(2, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="build") as pool:
        frames = source.batches(start_row, pool)
        yield from ahead(pool, (partial(build_batch, frame, options, run_id) for frame in frames), workers)
