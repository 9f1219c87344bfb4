"""The run's journal on disk: what a crashed or stopped run needs to go on with ``--resume``.

A folder beside the results file::

    <results>.journal/
        run.json           run id, the input file's identity, the options that shape messages
        replies.ndjson     a line per reply: its row, or the rows of a batch's response as columns
                           (a thousand rows a line), appended, fsync'd at bounded intervals
        keys/<row>.parquet each batch's rows with their key and reject reason (for the results file)

Replies are recorded before they are acked, so a reply the broker forgets is on disk first. A
``--workers`` run keeps one journal per worker in ``<results>.workers/`` instead; either is the one
unfinished run of its results file (:func:`check_recorded`), and only the process holding the
results file's lock (:mod:`.lock`) reads or writes it. A file of the journal that cannot be written
(disk full) raises :class:`~.errors.LocalError`, naming the file and the OS's reason.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import polars as pl

from .errors import InputError, LocalError
from .messages import Answers, Reply

REPLY_SCHEMA = pl.Schema(
    {
        "row": pl.Int64(),
        "error": pl.Int64(),
        "error_text": pl.String(),
        "matching_field": pl.String(),
        "profile_id": pl.String(),
        "request_id": pl.String(),
        "response": pl.String(),
    }
)
#: How a line of one row begins (its values plain); a line of several rows begins with its rows'
#: ``first`` and ``count``, or with their list.
_ROW_LINE = b'{"row":'
_ROWS_LINE = b'{"row":['

FSYNC_INTERVAL_S = 1.0
#: Bytes of ``replies.ndjson`` parsed at once (twenty thousand replies of one row, some seventy
#: thousand in batch lines): bounds the memory of reading back a run of any size.
REPLY_BLOCK_BYTES = 2 << 20


def journal_dir(results_path: Path) -> Path:
    return results_path.with_name(results_path.name + ".journal")


def new_run_id() -> str:
    """When the run started (8 hex digits of Unix time), then 6 random ones: unique, and dated."""
    return f"{int(time.time()):08x}{os.urandom(3).hex()}"


def workers_dir(results_path: Path) -> Path:
    """Where a ``--workers`` run keeps its workers' journals and results parts."""
    return results_path.with_name(results_path.name + ".workers")


def unfinished_message(path: Path) -> str:
    """A refusal to start over an unfinished run, saying in plain words what that run was."""
    recorded = RecordedRun.read(path)
    what = f" ({recorded.described()})" if recorded is not None else ""
    return (
        f"an unfinished run of this file is recorded in {path}{what}: pass --resume to finish it, "
        "or --restart to start again (the rows it answered are kept in a file of their own); "
        "--on-unfinished auto lets a cron job decide"
    )


@dataclass(frozen=True)
class RecordedRun:
    """What a journal (or a workers' folder) says of the unfinished run it records."""

    path: Path
    run_id: str
    #: The rows with a reply recorded.
    answered: int
    #: The input it read, and whether that file is no longer the one it read (None: cannot tell).
    input: str | None
    input_changed: bool | None

    @classmethod
    def read(cls, path: Path) -> RecordedRun | None:
        try:
            journals = recorded_journals(path)
            answered = sum(journal.answered_rows().n_unique() for journal in journals)
        except (OSError, pl.exceptions.PolarsError):
            return None
        if not journals:
            return None
        first = journals[0]
        identity = first.identity
        source = identity.get("input")
        changed: bool | None = None
        if source is not None:
            try:
                stat = Path(source).stat()
                changed = (stat.st_size, stat.st_mtime_ns) != (identity.get("size"), identity.get("mtime_ns"))
            except OSError:
                changed = True
        return cls(path, first.run_id, answered, source, changed)

    def described(self) -> str:
        started = run_started(self.run_id)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(started)) if started else "at an unknown time"
        words = [f"run {self.run_id} started {when}", f"{self.answered} rows answered"]
        if self.input_changed:
            words.append(f"{self.input} has changed since (a new export?)")
        elif self.input_changed is False:
            words.append(f"{self.input} is unchanged")
        return ", ".join(words)


_PART = re.compile(r"part-\d+-of-(\d+)\.parquet")


def recorded_runs(results_path: Path) -> list[Path]:
    """What earlier runs left unfinished beside the results file: its journal, its workers' folder."""
    return [p for p in (journal_dir(results_path), workers_dir(results_path)) if p.exists()]


def recorded_journals(path: Path) -> list[Journal]:
    """The journals of a recorded run (a journal, or a workers' folder of them), to read: the ones
    whose ``run.json`` can be read."""
    folders = [path] if path.name.endswith(".journal") else sorted(path.glob("*.journal"))
    journals = []
    for folder in folders:
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            doc = orjson.loads((folder / "run.json").read_bytes())
            journals.append(Journal(folder, str(doc.get("run_id", "run")), doc.get("identity", {})))
    return journals


def recorded_workers(folder: Path) -> int | None:
    """The ``--workers`` of the run recorded in a workers' folder; None when it cannot be told."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return int(orjson.loads((folder / "run.json").read_bytes())["workers"])
    found = {int(m.group(1)) for p in folder.glob("part-*") if (m := _PART.match(p.name))}
    return found.pop() if len(found) == 1 else None


def os_reason(exc: BaseException) -> str | None:
    """The OS's reason when ``exc`` is a failure of the file system (as Python or polars tells it)."""
    found = re.search(r"\(os error (\d+)\)", str(exc))
    if found:
        return os.strerror(int(found.group(1)))
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return None


def cannot_write(what: str, exc: BaseException) -> LocalError | None:
    """``exc`` as a :class:`LocalError` saying ``what`` could not be written and why; None when
    it is not a failure of the file system."""
    reason = os_reason(exc)
    return None if reason is None else LocalError(f"cannot write {what}: {reason}")


def run_started(run_id: str) -> float | None:
    """When a run with an id from :func:`new_run_id` started; None for any other id."""
    if len(run_id) != 14 or not all(c in "0123456789abcdef" for c in run_id):
        return None
    return float(int(run_id[:8], 16))


@dataclass
class Journal:
    """An open journal; appends replies and batch keys, and knows the run it belongs to."""

    path: Path
    run_id: str
    identity: dict[str, Any]
    #: Rows below it may have been sent by an earlier attempt of this run (``--resume``): their
    #: replies are taken even before this attempt sends them again.
    sent_before: int = 0
    _replies: IO[bytes] | None = None
    _last_sync: float = 0.0
    _dirty: bool = False

    @property
    def replies_path(self) -> Path:
        return self.path / "replies.ndjson"

    @property
    def keys_dir(self) -> Path:
        return self.path / "keys"

    @staticmethod
    def check(path: Path, *, resume: bool) -> None:
        """Refuse early (before connecting) a run that would overwrite or miss a journal."""
        if path.exists() and not resume:
            raise InputError(unfinished_message(path))
        if resume and not (path / "run.json").exists():
            raise InputError(f"nothing to resume: no journal at {path}")

    @classmethod
    def open(
        cls, path: Path, identity: dict[str, Any], *, resume: bool, run_id: str | None = None
    ) -> Journal:
        """Start a journal (``run_id``, or a new id), or with ``resume`` reopen the matching one."""
        meta = path / "run.json"
        cls.check(path, resume=resume)
        try:
            if resume:
                recorded = orjson.loads(meta.read_bytes())
                differs = differences(recorded.get("identity", {}), identity)
                if differs:
                    raise InputError(
                        f"cannot resume the run recorded in {path}: {'; '.join(differs)}. Run it as it "
                        "was started to finish it, or pass --restart to start again"
                    )
                journal = cls(path, recorded["run_id"], identity)
                # The rows read before (their keys are about to be recorded again) bound the rows
                # an earlier attempt may have sent, over every attempt so far.
                journal.sent_before = max(int(recorded.get("read_rows", 0)), keys_end(journal.keys_dir))
                if journal.sent_before > int(recorded.get("read_rows", 0)):
                    write_atomic(meta, orjson.dumps({**recorded, "read_rows": journal.sent_before}))
                _truncate_partial_line(journal.replies_path)
                shutil.rmtree(journal.keys_dir, ignore_errors=True)
            else:
                journal = cls(path, run_id or new_run_id(), identity)
                path.mkdir(parents=True)
                try:
                    write_atomic(meta, orjson.dumps({"run_id": journal.run_id, "identity": identity}))
                except OSError:
                    shutil.rmtree(path, ignore_errors=True)  # half a journal would only mislead
                    raise
            journal.keys_dir.mkdir(exist_ok=True)
            journal._replies = journal.replies_path.open("ab")
        except OSError as exc:
            raise LocalError(f"cannot open the run's journal {path}: {os_reason(exc)}") from exc
        return journal

    def answered_rows(self) -> pl.Series:
        """Rows that have a reply recorded (from an earlier attempt of this run)."""
        rows = [block["row"] for block in self.reply_blocks()]
        return pl.concat(rows) if rows else pl.Series("row", [], pl.Int64)

    def rows_last_answered_with(self, codes: frozenset[int]) -> list[int]:
        """Rows whose latest recorded reply carries one of the error ``codes``."""
        if not codes:
            return []
        blocks = [block.select("row", "error") for block in self.reply_blocks()]
        if not blocks:
            return []
        last = pl.concat(blocks).unique("row", keep="last", maintain_order=True)
        return last.filter(pl.col("error").is_in(list(codes)))["row"].sort().to_list()

    def reply_blocks(self) -> Iterator[pl.DataFrame]:
        """The recorded replies, a block of the file at a time; a half-written last line is left out."""
        if not self.replies_path.exists():
            return
        with self.replies_path.open("rb") as fh:
            carry = b""
            while chunk := fh.read(REPLY_BLOCK_BYTES):
                data = carry + chunk
                cut = data.rfind(b"\n") + 1
                carry = data[cut:]
                if cut:
                    yield _reply_frame(data[:cut])

    def record_reply(self, row: int, reply: Reply) -> None:
        self.record_replies(Answers.of(row, reply))

    def record_replies(self, answers: Answers) -> None:
        """One line for the rows of one reply: plain values for one row, columns for a batch's
        (which share its request id)."""
        assert self._replies is not None
        doc: dict[str, object]
        if len(answers) == 1:
            doc = {
                "row": answers.rows[0],
                "error": answers.error[0],
                "error_text": answers.error_text[0],
                "matching_field": answers.matching_field,
                "profile_id": answers.profile_id[0],
            }
            if answers.response is not None:
                doc["response"] = answers.response
        else:
            rows = answers.rows
            # A batch's rows are a range (its request id names them); rows kept of one are a list.
            doc = {"first": rows[0], "count": len(rows)} if isinstance(rows, range) else {"row": list(rows)}
            doc["error"] = _column(answers.error)
            doc["error_text"] = _column(answers.error_text)
            doc["matching_field"] = answers.matching_field
            doc["profile_id"] = list(answers.profile_id)
        if answers.request_id is not None:
            doc["request_id"] = answers.request_id
        line = orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE)
        try:
            self._replies.write(line)
        except OSError as exc:
            raise self._cannot_write(self.replies_path, exc) from exc
        self._dirty = True

    def record_keys(self, first_row: int, keys: pl.DataFrame) -> None:
        target = self.keys_dir / f"{first_row:012d}.parquet"
        tmp = target.with_suffix(".tmp")
        try:
            keys.write_parquet(tmp, compression="lz4", statistics=False)
            os.replace(tmp, target)
        except (OSError, pl.exceptions.PolarsError) as exc:
            tmp.unlink(missing_ok=True)
            if os_reason(exc) is None:
                raise
            raise self._cannot_write(target, exc) from exc

    def sync(self, *, force: bool = False) -> None:
        """Flush replies to the OS, and fsync at most every :data:`FSYNC_INTERVAL_S`."""
        if self._replies is None or not self._dirty:
            return
        try:
            self._replies.flush()
            now = time.monotonic()
            if force or now - self._last_sync >= FSYNC_INTERVAL_S:
                os.fsync(self._replies.fileno())
                self._last_sync = now
                self._dirty = False
        except OSError as exc:
            raise self._cannot_write(self.replies_path, exc) from exc

    @staticmethod
    def _cannot_write(path: Path, exc: BaseException) -> LocalError:
        error = cannot_write(f"the run's journal ({path})", exc)
        assert error is not None
        return error

    def close(self) -> None:
        if self._replies is not None:
            try:
                self._dirty = True
                self.sync(force=True)
            finally:
                with contextlib.suppress(OSError):  # what could not be flushed was reported by sync
                    self._replies.close()
                self._replies = None

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


#: What each recorded fact of a run is called on the command line.
_OPTION_NAMES = {
    "account_id": "--account",
    "db_id": "--db",
    "matching": "--matching",
    "key": "the key column (--field or --key-column)",
    "shard": "the worker's share",
    "rename": "--rename",
    "exclude": "--exclude",
    "update_only": "--update-only",
    "skip_triggers": "--skip-triggers",
    "resource_id": "--resource-id",
    "nulls": "--nulls",
    "types": "--type",
    "delimiter": "--delimiter",
    "file_format": "--format",
    "via": "--via",
    "mode": "--mode",
    "detect_geo": "--detect-geo",
    "encoding": "--encoding",
    "null_values": "--null-value",
    "on_duplicate_key": "--on-duplicate-key",
    "date_format": "--date-format",
    "datetime_format": "--datetime-format",
}


def _column(values: Sequence[Any]) -> Any:
    """A batch's column as one value when every row has it (a batch answered ok: one code, one
    text), else the list."""
    first = values[0]
    return first if list(values).count(first) == len(values) else list(values)


def _rows_frame(line: bytes) -> pl.DataFrame:
    """A line of several rows: its rows as ``first``/``count`` (or a list), each column a list or,
    shared by every row, one value (made a column without a lazy step: those cost more than the
    line's rows)."""
    doc = orjson.loads(line)
    rows = doc.get("row")
    if not isinstance(rows, list):
        rows = range(doc["first"], doc["first"] + doc["count"])

    def column(name: str) -> pl.Series:
        value = doc.get(name)
        if isinstance(value, list):
            return pl.Series(name, value, REPLY_SCHEMA[name])
        return pl.Series(name, [value], REPLY_SCHEMA[name]).new_from_index(0, len(rows))

    return pl.DataFrame([pl.Series("row", rows, pl.Int64), *map(column, REPLY_SCHEMA.names()[1:])])


def _reply_frame(lines: bytes) -> pl.DataFrame:
    """Whole lines of ``replies.ndjson`` as a frame of a row each, in the order they were recorded
    (a row sent again is answered by its last line).

    Lines of one row are read by polars, a batch's (a few thousand rows each, so few) one by one.
    """
    split = lines.splitlines(keepends=True)
    many = [not line.startswith(_ROW_LINE) or line.startswith(_ROWS_LINE) for line in split]
    if not any(many):
        return pl.read_ndjson(io.BytesIO(lines), schema=REPLY_SCHEMA)
    frames = [_rows_frame(line) for line, several in zip(split, many, strict=True) if several]
    if all(many):
        return pl.concat(frames)
    numbers = [i for i, several in enumerate(many) if several]
    batched = pl.concat(
        [frame.with_columns(_line=pl.lit(n, pl.Int64)) for n, frame in zip(numbers, frames, strict=True)]
    )
    single = b"".join(line for line, several in zip(split, many, strict=True) if not several)
    singles = pl.read_ndjson(io.BytesIO(single), schema=REPLY_SCHEMA).with_columns(
        _line=pl.Series([i for i, several in enumerate(many) if not several], dtype=pl.Int64)
    )
    return pl.concat([singles, batched]).sort("_line", maintain_order=True).drop("_line")


def differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between a recorded run and this one, in the words of the command line."""
    out: list[str] = []
    if recorded.get("input") != now.get("input"):
        out.append(f"it read {recorded.get('input')}, not {now.get('input')}")
    elif recorded.get("size") != now.get("size") or recorded.get("mtime_ns") != now.get("mtime_ns"):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(recorded.get("mtime_ns", 0)) / 1e9))
        out.append(
            f"the input file changed since ({recorded.get('size')} bytes modified {when} then, "
            f"{now.get('size')} bytes now): its rows may not be the ones sent"
        )
    for key, name in _OPTION_NAMES.items():
        before, after = recorded.get(key), now.get(key)
        if key in now and key in recorded and before != after:
            out.append(f"{name} was {_shown(before)}, now {_shown(after)}")
    return out


def _shown(value: Any) -> str:
    if value is None or value is False or value in ({}, []):
        return "not given"
    if value is True:
        return "given"
    return repr(value)


def _truncate_partial_line(path: Path) -> None:
    """Cut a last line a crash left half-written."""
    if not path.exists():
        return
    with path.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(max(0, size - 65536))
        tail = fh.read()
        if tail.endswith(b"\n"):
            return
        keep = size - len(tail) + tail.rfind(b"\n") + 1
        fh.truncate(keep)


def keys_end(keys_dir: Path) -> int:
    """One past the last row whose keys are recorded in ``keys_dir``; 0 when none are."""
    files = sorted(keys_dir.glob("*.parquet"))
    if not files:
        return 0
    try:
        last = pl.scan_parquet(files[-1]).select(pl.col("row").max()).collect().item()
    except (OSError, pl.exceptions.PolarsError):
        last = None
    return int(last) + 1 if last is not None else int(files[-1].stem) + 1


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` as ``path``, whole or not at all: a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
