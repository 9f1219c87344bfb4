"""Where an import starts: in this process, or shared by ``--workers`` processes.

The choice sits above both: :mod:`.pipeline` runs an import in one process, and :mod:`.workers`
starts processes that each run one of its shards with it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from .config import BrokerSettings, ImportOptions
from .pipeline import ImportSummary, open_input, results_path_for, run_in_process
from .progress import NullProgress, Observer
from .workers import run_workers


async def run_import(
    path: Path,
    options: ImportOptions,
    settings: BrokerSettings,
    *,
    stop: asyncio.Event | None = None,
    observer: Observer | None = None,
) -> ImportSummary:
    """Import ``path``; returns the summary, or raises a :class:`~.errors.BulkImportError`."""
    stop, observer = stop or asyncio.Event(), observer or NullProgress()
    if options.workers > 1:
        source = open_input(path, options)
        return await run_workers(source, options, settings, results_path_for(path, options), stop, observer)
    return await run_in_process(path, options, settings, stop=stop, observer=observer)
