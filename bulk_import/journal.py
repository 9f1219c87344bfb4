"""The run's journal on disk: what a crashed or stopped run needs to go on with ``--resume``.

A folder beside the results file::

    <results>.journal/
        run.json           run id, the input file's identity, the options that shape messages
        replies.ndjson     one line per row's first reply, appended, fsync'd at bounded intervals
        keys/<row>.parquet each batch's rows with their key and reject reason (for the results file)

Replies are recorded before they are acked, so a reply the broker forgets is on disk first.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import polars as pl

from .errors import InputError
from .messages import Reply

REPLY_SCHEMA = pl.Schema(
    {
        "row": pl.Int64(),
        "error": pl.Int64(),
        "error_text": pl.String(),
        "matching_field": pl.String(),
        "profile_id": pl.String(),
    }
)
FSYNC_INTERVAL_S = 1.0
#: Bytes of ``replies.ndjson`` parsed at once (a few hundred thousand replies): bounds the memory
#: of reading back a run of any size.
REPLY_BLOCK_BYTES = 4 << 20


def journal_dir(results_path: Path) -> Path:
    return results_path.with_name(results_path.name + ".journal")


def new_run_id() -> str:
    return os.urandom(5).hex()


@dataclass
class Journal:
    """An open journal; appends replies and batch keys, and knows the run it belongs to."""

    path: Path
    run_id: str
    identity: dict[str, Any]
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
            raise InputError(
                f"an unfinished run of this file is recorded in {path}: "
                "pass --resume to finish it, or --restart to discard it and start again"
            )
        if resume and not (path / "run.json").exists():
            raise InputError(f"nothing to resume: no journal at {path}")

    @classmethod
    def open(
        cls, path: Path, identity: dict[str, Any], *, resume: bool, run_id: str | None = None
    ) -> Journal:
        """Start a journal (``run_id``, or a new id), or with ``resume`` reopen the matching one."""
        meta = path / "run.json"
        cls.check(path, resume=resume)
        if resume:
            recorded = orjson.loads(meta.read_bytes())
            differs = sorted(k for k, v in identity.items() if recorded.get("identity", {}).get(k) != v)
            if differs:
                raise InputError(
                    f"cannot resume: {', '.join(differs)} differ from the run recorded in {path}; "
                    "use --restart to start again"
                )
            journal = cls(path, recorded["run_id"], identity)
            _truncate_partial_line(journal.replies_path)
            shutil.rmtree(journal.keys_dir, ignore_errors=True)
        else:
            journal = cls(path, run_id or new_run_id(), identity)
            path.mkdir(parents=True)
            _write_atomic(meta, orjson.dumps({"run_id": journal.run_id, "identity": identity}))
        journal.keys_dir.mkdir(exist_ok=True)
        journal._replies = journal.replies_path.open("ab")
        return journal

    def answered_rows(self) -> pl.Series:
        """Rows that have a reply recorded (from an earlier attempt of this run)."""
        rows = [block["row"] for block in self.reply_blocks()]
        return pl.concat(rows) if rows else pl.Series("row", [], pl.Int64)

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
                    yield pl.read_ndjson(io.BytesIO(data[:cut]), schema=REPLY_SCHEMA)

    def record_reply(self, row: int, reply: Reply) -> None:
        assert self._replies is not None
        self._replies.write(
            orjson.dumps(
                {
                    "row": row,
                    "error": reply.error,
                    "error_text": reply.error_text,
                    "matching_field": reply.matching_field,
                    "profile_id": reply.profile_id,
                },
                option=orjson.OPT_APPEND_NEWLINE,
            )
        )
        self._dirty = True

    def record_keys(self, first_row: int, keys: pl.DataFrame) -> None:
        target = self.keys_dir / f"{first_row:012d}.parquet"
        tmp = target.with_suffix(".tmp")
        keys.write_parquet(tmp, compression="lz4", statistics=False)
        os.replace(tmp, target)

    def sync(self, *, force: bool = False) -> None:
        """Flush replies to the OS, and fsync at most every :data:`FSYNC_INTERVAL_S`."""
        if self._replies is None or not self._dirty:
            return
        self._replies.flush()
        now = time.monotonic()
        if force or now - self._last_sync >= FSYNC_INTERVAL_S:
            os.fsync(self._replies.fileno())
            self._last_sync = now
            self._dirty = False

    def close(self) -> None:
        if self._replies is not None:
            self._dirty = True
            self.sync(force=True)
            self._replies.close()
            self._replies = None

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


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


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
