"""One run per results file: the lock, and what an earlier run left beside the results file."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bulk_import.errors import AlreadyRunning, InputError
from bulk_import.journal import journal_dir, workers_dir
from bulk_import.lock import RunLock, check_recorded, hold_run, lock_path


def test_a_second_lock_on_the_same_results_is_refused(tmp_path: Path) -> None:
    """The second taker is told which process runs the import; after release the lock is free."""
    results = tmp_path / "r.csv"
    lock = RunLock.take(results)
    with pytest.raises(AlreadyRunning) as refused:
        RunLock.take(results)
    assert str(refused.value) == (
        f"another bulk-import process (pid {os.getpid()}) is running this import "
        f"(results {results}); wait for it or stop it"
    )
    assert refused.value.exit_code == 2
    lock.release()
    assert not lock_path(results).exists()
    RunLock.take(results).release()


def test_a_killed_holder_lets_go(tmp_path: Path) -> None:
    """The OS frees the lock of a process killed with SIGKILL; the file it left does not hold."""
    results = tmp_path / "r.csv"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from bulk_import.lock import RunLock; "
            "RunLock.take(Path(sys.argv[1])); print('held', flush=True); time.sleep(600)",
            str(results),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(AlreadyRunning, match=f"pid {holder.pid}"):
        RunLock.take(results)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_path(results).exists()
    RunLock.take(results).release()


def test_the_processes_named_are_those_alive(tmp_path: Path) -> None:
    """Workers that inherited the lock are named once their coordinator is gone."""
    results = tmp_path / "r.csv"
    lock = RunLock.take(results)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        lock.pids = [2**22 + 1]  # a pid no process has
        lock.add(sleeper.pid)
        with pytest.raises(AlreadyRunning, match=rf"another bulk-import process \(pid {sleeper.pid}\)"):
            RunLock.take(results)
        lock.add(os.getpid())
        with pytest.raises(AlreadyRunning, match=rf"other bulk-import processes \(pids {sleeper.pid}, "):
            RunLock.take(results)
    finally:
        sleeper.kill()
        sleeper.wait()
        lock.release()


def test_a_lock_on_a_removed_file_holds_nothing(tmp_path: Path) -> None:
    """A process that opened the file before its holder removed it locks a file no one else sees."""
    results = tmp_path / "r.csv"
    first = RunLock.take(results)
    stale = os.open(lock_path(results), os.O_RDWR)
    try:
        first.release()
        fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)
        second = RunLock.take(results)
        with pytest.raises(AlreadyRunning):
            RunLock.take(results)
        second.release()
    finally:
        os.close(stale)


def _recorded(results: Path, *, single: bool = False, workers: int = 0) -> None:
    if single:
        journal_dir(results).mkdir()
        (journal_dir(results) / "run.json").write_text('{"run_id": "x"}')
    if workers:
        folder = workers_dir(results)
        folder.mkdir()
        (folder / f"part-0-of-{workers}.parquet.journal").mkdir()


@pytest.mark.parametrize("recorded", ["one process", "workers"])
@pytest.mark.parametrize("workers", [1, 2])
def test_a_plain_run_is_refused_whichever_kind_is_recorded(
    tmp_path: Path, recorded: str, workers: int
) -> None:
    """A one-process journal and a workers' folder are both the unfinished run, for either kind of run."""
    results = tmp_path / "r.csv"
    if recorded == "workers":
        _recorded(results, workers=2)
    else:
        _recorded(results, single=True)
    with pytest.raises(InputError, match="pass --resume to finish it, or --restart"):
        check_recorded(results, resume=False, restart=False, workers=workers)


def test_resume_says_what_to_pass(tmp_path: Path) -> None:
    results = tmp_path / "r.csv"
    _recorded(results, workers=3)
    with pytest.raises(InputError, match="ran with --workers 3: pass --resume --workers 3"):
        check_recorded(results, resume=True, restart=False, workers=1)
    check_recorded(results, resume=True, restart=False, workers=3)

    other = tmp_path / "o.csv"
    _recorded(other, single=True)
    with pytest.raises(InputError, match="ran in one process: pass --resume without --workers"):
        check_recorded(other, resume=True, restart=False, workers=2)
    check_recorded(other, resume=True, restart=False, workers=1)


def test_restart_discards_both_kinds(tmp_path: Path) -> None:
    results = tmp_path / "r.csv"
    _recorded(results, single=True, workers=2)
    with pytest.raises(InputError, match="two unfinished runs"):
        check_recorded(results, resume=True, restart=False, workers=1)
    with hold_run(results, resume=False, restart=True, workers=1):
        assert lock_path(results).exists()
        assert not journal_dir(results).exists()
        assert not workers_dir(results).exists()
    assert list(tmp_path.iterdir()) == []


def test_the_lock_is_taken_before_anything_is_checked(tmp_path: Path) -> None:
    """A refused process neither reads nor discards what the running one has recorded."""
    results = tmp_path / "r.csv"
    _recorded(results, workers=2)
    with hold_run(results, resume=True, restart=False, workers=2):
        began = time.monotonic()
        with pytest.raises(AlreadyRunning), hold_run(results, resume=False, restart=True, workers=1):
            pass  # pragma: no cover
        assert time.monotonic() - began < 1
        assert workers_dir(results).is_dir()
