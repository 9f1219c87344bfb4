"""Where an import starts: in this process, or shared by ``--workers`` processes.

The choice sits above both: :mod:`.pipeline` runs an import in one process, and :mod:`.workers`
starts processes that each run one of its shards with it. Over an unfinished run of the same
results file, ``--on-unfinished`` decides here whether this run resumes or restarts it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

from .config import BrokerSettings, ImportOptions
from .journal import RecordedRun, recorded_runs
from .pipeline import ImportSummary, open_input, results_path_for, run_in_process
from .progress import NullProgress, Observer
from .workers import run_workers

log = logging.getLogger(__name__)


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
    options = decided(path, options)
    if options.workers > 1:
        source = open_input(path, options)
        return await run_workers(source, options, settings, results_path_for(path, options), stop, observer)
    return await run_in_process(path, options, settings, stop=stop, observer=observer)


def decided(path: Path, options: ImportOptions) -> ImportOptions:
    """``--on-unfinished``: over an unfinished run, resume or restart as asked, or as ``auto`` judges."""
    if options.on_unfinished == "fail" or options.resume or options.restart:
        return options
    results = results_path_for(path, options)
    recorded = recorded_runs(results)
    if not recorded:
        return options
    choice = options.on_unfinished
    run = RecordedRun.read(recorded[0])
    if choice == "auto":
        choice = "resume" if run is not None and run.input_changed is False else "restart"
    what = run.described() if run is not None else str(recorded[0])
    log.info(
        "an unfinished run is recorded (%s): --on-unfinished %s %ss it", what, options.on_unfinished, choice
    )
    return replace(options, resume=choice == "resume", restart=choice == "restart")
