"""``run --dry-run``: read and build every message without connecting, and say what would be sent.

The same reading and building as a run, so a file that passes here fails only on the broker's or
the platform's side: the rows that would be rejected and why, and the first message as it would go.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import orjson

from .batches import built_batches, key_frames, mapped_columns
from .config import BrokerSettings, ImportOptions
from .duplicates import find_duplicates
from .errors import EXIT_OK, EXIT_ROWS_FAILED
from .messages import data_columns
from .pipeline import open_checked
from .protocols import protocol_for

#: Rejected rows shown by row number.
EXAMPLES = 5


@dataclass
class DryRun:
    """What a run of the file would send."""

    rows: int = 0
    valid: int = 0
    #: Rejected rows per reason.
    rejected: Counter[str] = field(default_factory=Counter)
    #: The first rejected rows, ``(row, reason)``.
    examples: list[tuple[int, str]] = field(default_factory=list)
    #: Rows another row of their key would be sent for (``--on-duplicate-key``).
    skipped_duplicates: int = 0
    #: The columns that go into each message's ``data``.
    data_fields: list[str] = field(default_factory=list)
    first_message: bytes | None = None
    elapsed_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_ROWS_FAILED if self.rejected else EXIT_OK

    def to_json(self) -> bytes:
        doc = {
            "dry_run": True,
            "rows": self.rows,
            "valid": self.valid,
            "rejected": sum(self.rejected.values()),
            "reasons": dict(self.rejected.most_common()),
            "examples": [{"row": row, "reason": reason} for row, reason in self.examples],
            "skipped_duplicates": self.skipped_duplicates,
            "data_fields": self.data_fields,
            "first_message": orjson.loads(self.first_message) if self.first_message else None,
            "elapsed_s": round(self.elapsed_s, 3),
            "exit_code": self.exit_code,
        }
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def first_message(rows: list[int], bodies: list[bytes], ids: list[bytes], options: ImportOptions) -> bytes:
    """The first message as it would go; ``--via api``: a batch request with its first few profiles,
    the API token hidden."""
    hidden = replace(options, api_token="******") if options.api_token else options
    protocol = protocol_for(hidden, BrokerSettings())
    few = slice(0, EXAMPLES)
    return protocol.messages(rows[few], bodies[few], ids[few], "dryrun").bodies[0]


def dry_run(path: Path, options: ImportOptions) -> DryRun:
    """Every row of ``path`` read and built as ``bulk-import run`` would; nothing is sent."""
    started = time.monotonic()
    source = open_checked(path, options)
    report = DryRun(data_fields=data_columns(mapped_columns(source.columns, options), options))
    duplicates = find_duplicates(path, options, partial(key_frames, source, options))
    for batch in built_batches(source, options, "dryrun", skipped=duplicates):
        report.rows += batch.size
        report.skipped_duplicates += len(batch.skipped_rows)
        report.valid += len(batch.bodies)
        report.rejected.update(batch.rejected_reasons)
        room = EXAMPLES - len(report.examples)
        report.examples += zip(batch.rejected_rows[:room], batch.rejected_reasons[:room], strict=True)
        if report.first_message is None and batch.bodies:
            report.first_message = first_message(batch.rows, batch.bodies, batch.ids, options)
    report.elapsed_s = time.monotonic() - started
    return report
