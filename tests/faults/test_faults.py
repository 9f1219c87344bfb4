"""Nothing lost: whatever breaks, the results file accounts for every row with one final status.

Each case runs the real CLI against the real broker and the stand-in, then checks the invariant:
results rows == input rows, one status each, statuses match what happened, and the stand-in
received at most the input rows plus one in-flight window per interruption.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import polars as pl
import pytest

from bulk_import.emulator.profiles import TEMPORARY_FAILURE
from tests.faults import broker_control
from tests.helpers import (
    Emulator,
    Queues,
    assert_every_row_accounted,
    cli,
    declare,
    emulator,
    replies_recorded,
    run_cli,
    status_counts,
)

pytestmark = [pytest.mark.broker, pytest.mark.faults]

ROWS = 20_000
#: --max-pending of the runs: the most requests a crash can leave to be sent again.
WINDOW = 1024


#: Per test: rows in, rows accounted for, requests the stand-in received, exit code (printed at the end).
REPORT: dict[str, dict[str, object]] = {}


def note(**facts: object) -> None:
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0].rsplit("::", 1)[-1]
    REPORT.setdefault(test, {}).update(facts)


def received(emu: Emulator) -> int:
    """Requests the stand-in took from the queue, from the counts it prints on exit."""
    found = re.findall(r"received=(\d+)", emu.output)
    assert found, emu.output
    note(received=int(found[-1]))
    return int(found[-1])


def exited(done: subprocess.CompletedProcess[str] | subprocess.Popen[str]) -> int | None:
    note(exit=done.returncode)
    return done.returncode


def accounted(rows: int, results: Path) -> pl.DataFrame:
    frame = assert_every_row_accounted(rows, results)
    note(rows=rows, accounted=frame.height, statuses=status_counts(frame))
    return frame


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return sorted(found)


def run_args(data: Path, queues: Queues, results: Path, *extra: str) -> list[str | Path]:
    """``run`` on the test's queues, with at most :data:`WINDOW` rows unanswered."""
    return [
        "run",
        data,
        "--db",
        "1",
        *queues.args(),
        "--results",
        results,
        "--max-pending",
        str(WINDOW),
        *extra,
    ]


def start_run(data: Path, queues: Queues, results: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli(*run_args(data, queues, results, *extra)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def when_replies_reach(results: Path, count: int, proc: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while replies_recorded(results) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)


def reconnections(done: subprocess.CompletedProcess[str], emu: Emulator) -> tuple[int, int]:
    """How often the run (any of its processes) and the stand-in connected again."""
    run = done.stderr.count("reconnected to ")
    stand_in = len(re.findall(r"serving \S+ -> ", emu.output)) - 1
    note(reconnections=(run, stand_in))
    return run, stand_in


def run_with_fault(
    data: Path, queues: Queues, results: Path, fault: Callable[[], None], at: float = 0.3, *extra: str
) -> tuple[subprocess.CompletedProcess[str], int, int]:
    """Run the import, apply ``fault`` once ``at`` of the rows are answered.

    Returns the finished run, the stand-in's intake, and the most that intake may be: the stand-in
    takes at most :data:`WINDOW` requests unacked too, so each reconnection of either side may
    bring one window again (the run's unconfirmed messages, or the stand-in's unacked deliveries).
    A reconnection loop would show up as many reconnections, so their number is checked as well.
    """
    with emulator(queues, "--prefetch", str(WINDOW)) as emu:
        proc = start_run(data, queues, results, *extra)
        when_replies_reach(results, int(ROWS * at), proc)
        fault()
        out, err = proc.communicate(timeout=600)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    run, stand_in = reconnections(done, emu)
    processes = 1 + int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 1
    assert 1 <= run <= 2 * processes, done.stderr
    assert 1 <= stand_in <= 2, emu.output
    return done, received(emu), ROWS + WINDOW * (run + stand_in)


@pytest.fixture
def data(samples: dict[str, Path]) -> Path:
    return samples["20k.parquet"]


class TestBroker:
    def test_connections_closed_mid_run(self, data: Path, queues: Queues, tmp_path: Path) -> None:
        """All connections closed at 30%: both sides reconnect, every row ends ok."""
        results = tmp_path / "r.csv"
        done, intake, most = run_with_fault(data, queues, results, broker_control.close_all_connections)
        assert exited(done) == 0, done.stderr
        assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}
        assert ROWS <= intake <= most

    def test_broker_stopped_and_started(self, data: Path, queues: Queues, tmp_path: Path) -> None:
        """The broker application stops for 3 s mid-run and comes back: the run finishes, all ok."""
        results = tmp_path / "r.csv"

        def outage() -> None:
            with broker_control.app_stopped():
                time.sleep(3)

        done, intake, most = run_with_fault(data, queues, results, outage)
        assert exited(done) == 0, done.stderr
        assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}
        assert ROWS <= intake <= most

    def test_memory_alarm_pauses_publishing(self, data: Path, queues: Queues, tmp_path: Path) -> None:
        """A memory alarm blocks publishing; it resumes when cleared, and says why it paused."""
        results = tmp_path / "r.csv"
        with emulator(queues) as emu:
            with broker_control.memory_alarm():
                proc = start_run(data, queues, results)
                time.sleep(3)
                assert replies_recorded(results) == 0, "publishing went on under the alarm"
            out, err = proc.communicate(timeout=600)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        intake = received(emu)
        assert exited(done) == 0, done.stderr
        assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}
        assert "publishing paused" in done.stderr
        assert intake == ROWS

    def test_refused_messages_end_not_confirmed(self, data: Path, queues: Queues, tmp_path: Path) -> None:
        """A full queue that refuses publishes (nacks): those rows are retried, then not_confirmed."""
        declare(queues.request, arguments={"x-max-length": 300, "x-overflow": "reject-publish"})
        declare(queues.result)
        results = tmp_path / "r.csv"
        done = run_cli(*run_args(data, queues, results, "--reply-timeout", "2", "--max-pending", "0"))
        assert exited(done) == 4, done.stderr
        counts = status_counts(accounted(ROWS, results))
        assert counts == {"no_reply": 300, "not_confirmed": ROWS - 300}
        assert "refused" in done.stderr

    def test_broker_not_listening(self, data: Path, tmp_path: Path) -> None:
        """Nothing on the port: exit 3 with one line, and no results or journal left behind."""
        done = run_cli(
            "run",
            data,
            "--db",
            "1",
            "--results",
            tmp_path / "r.csv",
            "--amqp-url",
            "amqp://guest:guest@127.0.0.1:5999/",
        )
        assert exited(done) == 3
        assert "cannot connect" in done.stderr
        assert "Traceback" not in done.stderr
        assert list(tmp_path.iterdir()) == []

    def test_vhost_without_permission(self, data: Path, tmp_path: Path) -> None:
        """A vhost the user may not open: exit 3, saying so."""
        with broker_control.vhost_without_permission("bulk-import-no-access") as vhost:
            done = run_cli(
                "run", data, "--db", "1", "--results", tmp_path / "r.csv",
                "--amqp-url", f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
            )  # fmt: skip
        assert exited(done) == 3
        assert "vhost" in done.stderr
        assert "Traceback" not in done.stderr


class TestProcess:
    def test_sigkill_then_resume(self, data: Path, queues: Queues, tmp_path: Path) -> None:
        """Killed at half with SIGKILL, then --resume: every row once, ok, no row imported twice over."""
        results = tmp_path / "r.csv"
        with emulator(queues) as emu:
            proc = start_run(data, queues, results)
            when_replies_reach(results, ROWS // 2, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            done = run_cli(*run_args(data, queues, results, "--resume"))
        assert exited(done) == 0, done.stderr
        assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}
        assert ROWS <= received(emu) <= ROWS + WINDOW

    def test_rerun_without_resume_is_refused(self, data: Path, queues: Queues, tmp_path: Path) -> None:
        """An unfinished run is never overwritten silently: exit 2 with the hint."""
        results = tmp_path / "r.csv"
        with emulator(queues):
            proc = start_run(data, queues, results)
            when_replies_reach(results, 1000, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        again = run_cli("run", data, "--db", "1", *queues.args(), "--results", results)
        assert exited(again) == 2
        assert "--resume" in again.stderr

    def test_sigterm_drains_then_resume_finishes(self, data: Path, queues: Queues, tmp_path: Path) -> None:
        """SIGTERM: stop reading, finish in-flight, write every row (unsent: not_sent), exit 4."""
        results = tmp_path / "r.csv"
        with emulator(queues) as emu:
            proc = start_run(data, queues, results)
            when_replies_reach(results, ROWS // 4, proc)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
            assert exited(proc) == 4, err
            first = accounted(ROWS, results)
            counts = status_counts(first)
            assert set(counts) == {"ok", "not_sent"}
            assert counts["ok"] >= ROWS // 4
            assert "--resume" in err
            done = run_cli(*run_args(data, queues, results, "--resume"))
        assert exited(done) == 0, done.stderr
        assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}
        assert received(emu) == ROWS


class TestStandIn:
    def run(
        self, queues: Queues, data: Path, tmp_path: Path, *knobs: str
    ) -> tuple[int, dict[str, int], dict[str, object], int]:
        results, summary = tmp_path / "r.csv", tmp_path / "s.json"
        with emulator(queues, "--seed", "7", *knobs) as emu:
            done = run_cli(
                "run", data, "--db", "1", *queues.args(), "--results", results, "--summary", summary,
                "--reply-timeout", "3",
            )  # fmt: skip
        counts = status_counts(accounted(ROWS, results))
        note(exit=done.returncode)
        return done.returncode, counts, orjson.loads(summary.read_bytes()), received(emu)

    def test_dropped_replies_are_no_reply(self, queues: Queues, data: Path, tmp_path: Path) -> None:
        """A tenth of replies never come: those rows are no_reply, exit 4, the rest ok."""
        code, counts, _, intake = self.run(queues, data, tmp_path, "--drop", "0.1")
        assert code == 4
        assert set(counts) == {"ok", "no_reply"}
        assert 0.07 * ROWS < counts["no_reply"] < 0.13 * ROWS
        assert intake == ROWS

    def test_duplicated_replies_count_once(self, queues: Queues, data: Path, tmp_path: Path) -> None:
        """Replies sent twice count once: all ok, duplicates reported."""
        code, counts, summary, _ = self.run(queues, data, tmp_path, "--duplicate", "0.2")
        assert code == 0
        assert counts == {"ok": ROWS}
        assert 0.15 * ROWS < summary["duplicate_replies"] < 0.25 * ROWS  # type: ignore[operator]

    def test_error_replies_keep_code_and_text(self, queues: Queues, data: Path, tmp_path: Path) -> None:
        """Rows answered with an error are status error with the code and text verbatim; exit 1."""
        code, counts, _, _ = self.run(queues, data, tmp_path, "--error", "0.05")
        assert code == 1
        assert set(counts) == {"ok", "error"}
        frame = accounted(ROWS, tmp_path / "r.csv")
        errors = frame.filter(frame["status"] == "error")
        assert errors["error"].unique().to_list() == [str(TEMPORARY_FAILURE)]
        assert errors["error_text"].str.contains("temporary failure").all()

    def test_delayed_replies_still_arrive(self, queues: Queues, data: Path, tmp_path: Path) -> None:
        """Replies held back a second each still reconcile: all ok."""
        code, counts, _, _ = self.run(queues, data, tmp_path, "--delay", "1.0")
        assert code == 0
        assert counts == {"ok": ROWS}

    def test_malformed_replies_are_counted(self, queues: Queues, data: Path, tmp_path: Path) -> None:
        """Malformed replies are logged, counted and skipped; their rows end no_reply; nothing stops."""
        code, counts, summary, _ = self.run(queues, data, tmp_path, "--malformed", "0.02")
        assert code == 4
        assert set(counts) <= {"ok", "no_reply", "error"}
        malformed = summary["malformed_replies"]
        assert isinstance(malformed, int)
        assert malformed > 0
        assert counts.get("no_reply", 0) >= malformed * 2 // 3 - 5

    def test_stand_in_dies_and_comes_back(self, queues: Queues, data: Path, tmp_path: Path) -> None:
        """The stand-in exits abruptly mid-run; a new one picks up the unacked requests: all ok."""
        results = tmp_path / "r.csv"
        crashing = Emulator(queues, "--exit-after", str(ROWS // 3)).wait_ready()
        proc = start_run(data, queues, results)
        crashing.proc.wait(timeout=300)
        assert crashing.proc.returncode == 75
        with emulator(queues):
            _, err = proc.communicate(timeout=600)
        assert exited(proc) == 0, err
        assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}


class TestWorkers:
    def test_connections_closed_with_workers(self, data: Path, queues: Queues, tmp_path: Path) -> None:
        """--workers 2, all connections closed at 30%: coordinator and workers reconnect, all ok."""
        results = tmp_path / "r.csv"
        fault = broker_control.close_all_connections
        done, intake, most = run_with_fault(data, queues, results, fault, 0.3, "--workers", "2")
        assert exited(done) == 0, done.stderr
        assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}
        assert ROWS <= intake <= most

    def test_a_killed_worker_then_resume(self, data: Path, queues: Queues, tmp_path: Path) -> None:
        """One worker SIGKILLed: the other finishes, the run exits 4 naming it; --resume finishes."""
        results = tmp_path / "r.csv"
        with emulator(queues) as emu:
            proc = start_run(data, queues, results, "--workers", "2")
            when_replies_reach(results, ROWS // 3, proc)
            workers = child_pids(proc.pid)
            assert len(workers) == 2, workers
            os.kill(workers[0], signal.SIGKILL)
            _, err = proc.communicate(timeout=300)
            assert exited(proc) == 4, err
            assert "stopped without its results" in err
            done = run_cli(*run_args(data, queues, results, "--workers", "2", "--resume"))
        assert exited(done) == 0, done.stderr
        assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}
        assert ROWS <= received(emu) <= ROWS + WINDOW
