"""Progress of a run, for a person at a terminal (a rich bar) or a cron log (a line every so often).

The pipeline hands a :class:`Snapshot` to an observer twice a second from a task of its own; the
hot loop never asks whether it is on a terminal.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from rich.console import Console

log = logging.getLogger("bulk_import.progress")

#: stderr as rich sees it: the bar and the log lines share it, so lines print above the bar.
STDERR = Console(stderr=True)


@dataclass(frozen=True)
class Snapshot:
    rows_read: int
    total_rows: int | None
    sent: int
    confirmed: int
    answered: int
    elapsed_s: float


class Observer(Protocol):
    def update(self, snapshot: Snapshot) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """Says nothing (``--quiet``)."""

    def update(self, snapshot: Snapshot) -> None:
        pass

    def close(self) -> None:
        pass


class LogProgress:
    """One log line every ``every_s`` seconds: readable in a cron mail, greppable in a log."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last = time.monotonic()

    def update(self, snapshot: Snapshot) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        s = snapshot
        total = f"/{s.total_rows}" if s.total_rows is not None else ""
        rate = s.answered / s.elapsed_s if s.elapsed_s else 0.0
        fields = {
            "rows_read": s.rows_read,
            "total_rows": s.total_rows,
            "sent": s.sent,
            "confirmed": s.confirmed,
            "answered": s.answered,
            "rows_per_s": round(rate, 1),
        }
        log.info(
            "progress: read %d%s, sent %d, confirmed %d, answered %d (%.0f rows/s)",
            s.rows_read, total, s.sent, s.confirmed, s.answered, rate, extra=fields,
        )  # fmt: skip

    def close(self) -> None:
        pass


class RichProgress:
    """A live bar of rows answered, with percent, the rate and the time left, on stderr (80 columns).

    A CSV's total is an estimate from the bytes read so far until the file has been read.
    """

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            BarColumn(bar_width=16),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=STDERR,
            transient=True,
        )
        self._task = self._progress.add_task("rows", total=None, rate="")
        self._progress.start()

    def update(self, snapshot: Snapshot) -> None:
        s = snapshot
        rate = s.answered / s.elapsed_s if s.elapsed_s else 0.0
        self._progress.update(self._task, completed=s.answered, total=s.total_rows, rate=f"{rate:,.0f}/s")

    def close(self) -> None:
        self._progress.stop()
