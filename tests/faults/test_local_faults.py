"""Nothing lost on this side either: one run per results file, and a disk that fills up.

Each case runs the real CLI in child processes against the real broker and the stand-in, on queues
of its own, and checks that the results file accounts for every row once.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import polars as pl
import pytest

from tests.faults.test_faults import (
    ROWS,
    WINDOW,
    accounted,
    child_pids,
    exited,
    received,
    run_args,
    start_run,
    when_replies_reach,
)
from tests.helpers import (
    Emulator,
    Queues,
    emulator,
    publish,
    replies_recorded,
    run_cli,
    status_counts,
)

pytestmark = [pytest.mark.broker, pytest.mark.faults]


@pytest.fixture
def data(samples: dict[str, Path]) -> Path:
    return samples["20k.parquet"]


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    said = (re.sub(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d ", "", line) for line in stderr.splitlines())
    return [line for line in said if line.startswith("error: ")]


def gone(pid: int) -> bool:
    """The process has exited (an orphan nobody reaps stays a zombie, with its files closed)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_gone(pids: list[int], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not all(gone(pid) for pid in pids):
        assert time.monotonic() < deadline, f"processes {pids} are still running"
        time.sleep(0.1)


def kill_workers_run(data: Path, queues: Queues, results: Path) -> None:
    """Start a --workers 2 run, SIGKILL its coordinator at a third, let the orphaned workers end."""
    proc = start_run(data, queues, results, "--workers", "2", "--drain-timeout", "2")
    when_replies_reach(results, ROWS // 3, proc)
    workers = child_pids(proc.pid)
    assert len(workers) == 2, workers
    proc.kill()
    # The orphans write to the same stderr: it closes when the last of them has exited.
    _, err = proc.communicate(timeout=180)
    wait_gone(workers)
    assert "Traceback" not in err and "internal error" not in err, err
    assert results.with_name(results.name + ".workers").is_dir()


class TestOneRunPerResultsFile:
    @pytest.mark.parametrize("extra", [(), ("--resume",)], ids=["run", "resume"])
    def test_second_process_on_the_same_results_is_refused(
        self, data: Path, queues: Queues, tmp_path: Path, extra: tuple[str, ...]
    ) -> None:
        """A second run (or --resume) while the first goes: exit 2 at once, one line; the first ends exact."""
        results = tmp_path / "r.csv"
        # Replies held back half a second: the first run takes several seconds more than the second.
        with emulator(queues, "--delay", "0.5") as emu:
            first = start_run(data, queues, results)
            when_replies_reach(results, 1000, first)
            began = time.monotonic()
            second = run_cli(*run_args(data, queues, results, *extra), timeout=120)
            took = time.monotonic() - began
            assert first.poll() is None, "the first run ended before the second was refused"
            _, err = first.communicate(timeout=600)
        assert exited(second) == 2, second.stderr
        assert error_lines(second.stderr) == [
            f"error: another bulk-import process (pid {first.pid}) is running this import "
            f"(results {results}); wait for it or stop it"
        ]
        assert second.stderr.strip().count("\n") == 0, second.stderr
        assert took < 30
        assert first.returncode == 0, err
        assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}
        assert received(emu) == ROWS
        assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]

    def test_killed_workers_run_is_the_unfinished_run(
        self, data: Path, queues: Queues, tmp_path: Path
    ) -> None:
        """Coordinator SIGKILLed: a plain run is refused, --resume says which --workers; it finishes exact."""
        results = tmp_path / "r.csv"
        with emulator(queues) as emu:
            kill_workers_run(data, queues, results)
            plain = run_cli(*run_args(data, queues, results))
            assert exited(plain) == 2, plain.stderr
            [line] = error_lines(plain.stderr)
            assert f"an unfinished run of this file is recorded in {results}.workers" in line
            assert "pass --resume to finish it, or --restart" in line
            alone = run_cli(*run_args(data, queues, results, "--resume"))
            assert alone.returncode == 2, alone.stderr
            assert "pass --resume --workers 2" in error_lines(alone.stderr)[0]
            three = run_cli(*run_args(data, queues, results, "--resume", "--workers", "3"))
            assert three.returncode == 2, three.stderr
            assert "pass --resume --workers 2" in error_lines(three.stderr)[0]
            done = run_cli(*run_args(data, queues, results, "--resume", "--workers", "2"))
        assert exited(done) == 0, done.stderr
        assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]
        # Each worker may send its unanswered window again.
        assert ROWS <= received(emu) <= ROWS + 2 * WINDOW

    def test_restart_discards_a_workers_run(self, data: Path, queues: Queues, tmp_path: Path) -> None:
        """After a killed --workers run, --restart in one process discards its folder and starts again,
        the rows each worker had answered kept in a file of their own."""
        results = tmp_path / "r.csv"
        with emulator(queues):
            kill_workers_run(data, queues, results)
            done = run_cli(*run_args(data, queues, results, "--restart"))
        assert exited(done) == 0, done.stderr
        assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}
        partials = sorted(tmp_path.glob("r.*.partial.csv"))
        assert [p.name.split(".")[2] for p in partials] == ["1", "2"]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["r.csv", *(p.name for p in partials)])
        kept = pl.concat([pl.read_csv(p) for p in partials])
        assert kept.height > 0 and kept["row"].is_unique().all()
        assert kept["status"].unique().to_list() == ["ok"]
        assert f"kept in {partials[0]}" in done.stderr

    def test_one_process_journal_resumed_with_workers_is_refused(
        self, data: Path, queues: Queues, tmp_path: Path
    ) -> None:
        """A killed one-process run: --resume --workers 2 says to resume without --workers."""
        results = tmp_path / "r.csv"
        with emulator(queues):
            proc = start_run(data, queues, results)
            when_replies_reach(results, 1000, proc)
            proc.kill()
            proc.wait()
            wrong = run_cli(*run_args(data, queues, results, "--resume", "--workers", "2"))
            assert exited(wrong) == 2, wrong.stderr
            assert "pass --resume without --workers" in error_lines(wrong.stderr)[0]
            done = run_cli(*run_args(data, queues, results, "--resume"))
        assert exited(done) == 0, done.stderr
        assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}


class TestBadReply:
    def test_reply_naming_a_row_far_beyond_the_run(self, data: Path, queues: Queues, tmp_path: Path) -> None:
        """Replies of this run for row 999999999999 are counted and logged once; the run ends exact."""
        results = tmp_path / "r.csv"
        with emulator(queues, "--delay", "0.2") as emu:
            proc = start_run(data, queues, results)
            when_replies_reach(results, 1000, proc)
            meta = results.with_name(results.name + ".journal") / "run.json"
            run_id = orjson.loads(meta.read_bytes())["run_id"]
            forged = orjson.dumps({"feedback_id": f"{run_id}-999999999999", "error": 0, "profile_id": "x"})
            publish(queues.result, [forged] * 3)
            _, err = proc.communicate(timeout=600)
        assert exited(proc) == 0, err
        assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}
        assert received(emu) == ROWS
        lines = [line for line in err.splitlines() if "999999999999" in line]
        assert len(lines) == 1, err
        assert "3 replies named rows this run has not sent (the first: row 999999999999)" in lines[0]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a tmpfs of its own, 8 MB, unmounted afterwards."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """A file that takes all the room on ``folder``'s file system but ``leave`` bytes."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    assert free > leave, f"only {free} bytes free"
    filler = folder / "filler"
    with filler.open("wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, free - leave)
    return filler


class TestDiskFull:
    def test_results_file_on_a_full_disk(
        self, data: Path, queues: Queues, tmp_path: Path, small_disk: Path
    ) -> None:
        """No room for the results file: exit 4, one line, no temporary file; --resume then writes it."""
        results = small_disk / "r.csv"
        # The stand-in stops answering near the end; the disk fills up, with room left for the
        # rest of the journal (a few thousand replies) but not for the results file.
        crashing = Emulator(queues, "--exit-after", str(ROWS - 2000)).wait_ready()
        proc = start_run(data, queues, results)
        crashing.proc.wait(timeout=300)
        assert replies_recorded(results) >= ROWS // 2
        filler = fill(small_disk, leave=600_000)
        with emulator(queues):
            _, err = proc.communicate(timeout=600)
        assert exited(proc) == 4, err
        assert error_lines(err) == [
            f"error: cannot write the results file {results}: No space left on device; "
            "the journal is kept: make room, then run again with --resume"
        ]
        assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "r.csv.journal"]
        journal = small_disk / "r.csv.journal"
        assert sorted(p.name for p in journal.iterdir()) == ["keys", "replies.ndjson", "run.json"]
        assert replies_recorded(results) == ROWS

        filler.unlink()
        with emulator(queues) as emu:
            done = run_cli(*run_args(data, queues, results, "--resume"))
        assert exited(done) == 0, done.stderr
        assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}
        assert received(emu) == 0
        assert sorted(p.name for p in small_disk.iterdir()) == ["r.csv"]
