"""One run per results file: an OS lock that a second process on the same results path is refused
by, and a check of what an earlier run left beside it.

``<results>.lock`` beside the results file is locked (``flock``) before connecting and before any
journal is read or made, and held until the run ends; the OS lets go of it when the process dies,
however it dies. The file names the processes that hold it. With ``--workers`` the coordinator
takes it and its workers inherit it: the lock is free only once the last of them is gone, so an
orphaned worker still writing its journal keeps a new run out too.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import AlreadyRunning, InputError
from .journal import journal_dir, recorded_runs, recorded_workers, unfinished_message, workers_dir
from .results import keep_partial_results

log = logging.getLogger(__name__)


def lock_path(results_path: Path) -> Path:
    return results_path.with_name(results_path.name + ".lock")


class RunLock:
    """A held lock on a results path; :meth:`release` (or the end of the process) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.pids = [os.getpid()]
        self._write_pids()

    @classmethod
    def take(cls, results_path: Path) -> RunLock:
        """Lock ``results_path`` for this process, or raise :class:`AlreadyRunning` at once."""
        path = lock_path(results_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holders = _read_pids(fd)
                    os.close(fd)
                    raise AlreadyRunning(_held_message(results_path, holders)) from None
                except BaseException:
                    os.close(fd)
                    raise
                # Its last holder removes the file before letting go: a file locked after that is
                # no longer the one at the path, and another process may hold that one.
                if _same_file(fd, path):
                    return cls(path, fd)
                os.close(fd)
        except OSError as exc:
            raise InputError(f"cannot lock {path}: {exc.strerror or exc}") from None

    def add(self, pid: int) -> None:
        """Name another process that holds the lock too (a worker that inherited it)."""
        self.pids.append(pid)
        self._write_pids()

    def _write_pids(self) -> None:
        with contextlib.suppress(OSError):  # the names are for the message only
            data = "".join(f"{pid}\n" for pid in self.pids).encode()
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = -1


def _same_file(fd: int, path: Path) -> bool:
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)


def _read_pids(fd: int) -> list[int]:
    try:
        text = os.pread(fd, 4096, 0).decode("ascii", "replace")
    except OSError:
        return []
    return [int(word) for word in text.split() if word.isdigit()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _held_message(results_path: Path, pids: list[int]) -> str:
    alive = [pid for pid in pids if _alive(pid)]
    if len(alive) > 1:
        return (
            f"other bulk-import processes (pids {', '.join(map(str, alive))}) are running this import "
            f"(results {results_path}); wait for them or stop them"
        )
    who = f" (pid {alive[0]})" if alive else ""
    return (
        f"another bulk-import process{who} is running this import (results {results_path}); "
        "wait for it or stop it"
    )


@contextlib.contextmanager
def hold_run(results_path: Path, *, resume: bool, restart: bool, workers: int) -> Iterator[RunLock]:
    """The results file's lock, held while the block runs; taken first, then what an earlier run
    left is checked against the options (with ``restart``, discarded): nothing is read before."""
    lock = RunLock.take(results_path)
    try:
        check_recorded(results_path, resume=resume, restart=restart, workers=workers)
        yield lock
    finally:
        lock.release()


def check_recorded(results_path: Path, *, resume: bool, restart: bool, workers: int) -> None:
    """Check what an earlier run left beside the results file against --resume, --restart, --workers.

    A one-process journal and a workers' folder are the same thing, the unfinished run of this
    results file: a new run without ``--resume`` is refused, ``--restart`` discards either, and
    ``--resume`` must run as that run did (the message says what to pass). Called with the results
    file's lock held, before connecting. What a restarted run learned is kept first
    (:func:`~.results.keep_partial_results`).
    """
    single, multi = journal_dir(results_path), workers_dir(results_path)
    recorded = recorded_runs(results_path)
    if restart:
        for folder in recorded:
            for kept in keep_partial_results(folder, results_path):
                log.info("--restart: the rows the unfinished run answered are kept in %s", kept)
            shutil.rmtree(folder, ignore_errors=True)
        return
    if recorded and not resume:
        raise InputError(unfinished_message(recorded[0]))
    if not resume or not recorded:
        return
    if len(recorded) == 2:
        raise InputError(
            f"two unfinished runs of this file are recorded, in {single} and in {multi}: "
            "pass --restart to discard both and start again"
        )
    if multi.exists() and workers == 1:
        n = recorded_workers(multi)
        passing = f"--resume --workers {n}" if n else "--resume with the --workers it ran with"
        raise InputError(f"the unfinished run in {multi} ran with --workers {n or 'N'}: pass {passing}")
    if single.exists() and workers > 1:
        raise InputError(
            f"the unfinished run in {single} ran in one process: pass --resume without --workers"
        )
