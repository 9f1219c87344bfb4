"""Run a command while sampling the CPU of everything involved, so a rate comes with its cost.

A rate alone hides where the time went: on two cores a publisher can look slow because it starves
the broker. Every 0.2 s the sampler records the cumulative CPU seconds of the command's process
tree, of each watched process (the broker, the stand-in) and of the machine, plus an optional probe
(the queue depth). CPU % over any window is then read off these series by interpolation, so each
phase can choose the window its rate was measured over. The command's own final CPU and peak RSS
come from ``wait4``'s rusage: exact, not sampled.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psutil

SAMPLE_S = 0.2
POLL_S = 0.02


class CommandTimeout(Exception):
    """The command outlived its timeout and was killed."""


@dataclass
class Series:
    """A cumulative counter sampled over time (CPU seconds, or a queue depth)."""

    t: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)

    def add(self, when: float, value: float | None) -> None:
        if value is not None:
            self.t.append(when)
            self.v.append(value)

    def at(self, when: float) -> float | None:
        """The value at ``when``, linear between samples, clamped to the first and last."""
        if not self.t:
            return None
        i = bisect.bisect_left(self.t, when)
        if i == 0:
            return self.v[0]
        if i == len(self.t):
            return self.v[-1]
        t0, t1, v0, v1 = self.t[i - 1], self.t[i], self.v[i - 1], self.v[i]
        return v0 if t1 == t0 else v0 + (v1 - v0) * (when - t0) / (t1 - t0)

    def pct(self, t0: float, t1: float) -> float | None:
        """CPU % of one core between ``t0`` and ``t1`` (None when the window is not covered)."""
        if len(self.t) < 2 or t1 <= t0 or t1 < self.t[0] or t0 > self.t[-1]:
            return None
        a, b = self.at(t0), self.at(t1)
        return None if a is None or b is None else 100.0 * (b - a) / (t1 - t0)

    def reached(self, level: float) -> float | None:
        """When the value first reached ``level``, interpolated between the samples around it."""
        for i, value in enumerate(self.v):
            if value >= level:
                if i == 0:
                    return self.t[0]
                t0, v0 = self.t[i - 1], self.v[i - 1]
                return t0 + (self.t[i] - t0) * (level - v0) / (value - v0)
        return None


@dataclass
class Measured:
    """What a command did: exit code, output, timing (``time.monotonic``) and the sampled series."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    started: float
    ended: float
    max_rss_mib: float
    cpu: dict[str, Series]
    depth: Series

    def cpu_pct(self, t0: float, t1: float) -> dict[str, float | None]:
        """CPU % of one core for every sampled role over ``[t0, t1]`` (machine: all cores summed)."""
        return {role: series.pct(t0, t1) for role, series in self.cpu.items()}

    def tail(self, lines: int = 8) -> str:
        """The end of stderr, for an error message."""
        return "\n".join(self.stderr.strip().splitlines()[-lines:])


def find_broker() -> psutil.Process | None:
    """The RabbitMQ node's Erlang VM (beam.smp), which does all of the broker's work."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "beam.smp" and any("rabbit" in arg for arg in cmdline):
            return proc
    return None


def tree_cpu(proc: psutil.Process) -> float | None:
    """CPU seconds of a process, its reaped children and its live descendants."""
    try:
        times = proc.cpu_times()
        total = float(times.user + times.system + times.children_user + times.children_system)
        kids = proc.children(recursive=True)
    except psutil.Error:
        return None
    for kid in kids:
        try:
            times = kid.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine, all cores summed (as psutil counts busy time)."""
    t = psutil.cpu_times()
    guest = getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    return float(sum(t) - guest - t.idle - getattr(t, "iowait", 0.0))


def _reap(pid: int) -> tuple[int, float, float] | None:
    """(exit code, CPU seconds, peak RSS MiB) once the child has exited, else None."""
    got, status, usage = os.wait4(pid, os.WNOHANG)
    if got == 0:
        return None
    return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the command's own process group (it was started in a new session) and reap it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_measured(
    argv: Sequence[str | Path],
    *,
    timeout: float,
    watch: Mapping[str, psutil.Process | None] | None = None,
    probe: Callable[[], int | None] | None = None,
    cwd: Path | None = None,
) -> Measured:
    """Run ``argv`` to completion under the sampler; kill it and raise :class:`CommandTimeout` if late.

    Roles in the result: ``client`` (the command), each of ``watch``, and ``machine``; ``probe``
    (called in the same loop) fills :attr:`Measured.depth`.
    """
    args = [str(a) for a in argv]
    watched = {role: proc for role, proc in (watch or {}).items() if proc is not None}
    series = {role: Series() for role in ("client", *watched, "machine")}
    depth = Series()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, start_new_session=True
        )
        started = time.monotonic()
        series["client"].add(started, 0.0)
        try:
            client: psutil.Process | None = psutil.Process(proc.pid)
        except psutil.Error:
            client = None

        def sample(now: float, include_client: bool = True) -> None:
            if include_client and client is not None:
                series["client"].add(now, tree_cpu(client))
            for role, watched_proc in watched.items():
                series[role].add(now, tree_cpu(watched_proc))
            series["machine"].add(now, machine_cpu())
            if probe is not None:
                depth.add(now, probe())

        try:
            next_sample = started
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    sample(now)
                    next_sample = max(next_sample + SAMPLE_S, now + SAMPLE_S / 2)
                reaped = _reap(proc.pid)
                if reaped is not None:
                    ended = time.monotonic()
                    proc.returncode, cpu_s, rss_mib = reaped
                    break
                if now - started > timeout:
                    raise CommandTimeout(f"{Path(args[0]).name} {args[1] if len(args) > 1 else ''}")
                time.sleep(POLL_S)
            series["client"].add(ended, cpu_s)
            sample(ended, include_client=False)
        finally:
            _kill_group(proc)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return Measured(args, proc.returncode, stdout, stderr, started, ended, rss_mib, series, depth)


class Background:
    """A long-running helper (the stand-in job server): started in its own session, always stopped.

    On exit it gets SIGTERM and ``grace`` seconds to finish, then SIGKILL; its stderr is kept.
    """

    def __init__(self, argv: Sequence[str | Path], *, grace: float = 30.0) -> None:
        self.argv = [str(a) for a in argv]
        self.grace = grace
        self.stderr = ""
        self.returncode: int | None = None
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._err,
            start_new_session=True,
        )
        try:
            self.ps = psutil.Process(self.proc.pid)
        except psutil.Error:
            self.stop()
            raise

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc)
        self.returncode = self.proc.returncode
        self._err.seek(0)
        self.stderr = self._err.read().decode(errors="replace")
        self._err.close()

    def __enter__(self) -> Background:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
