"""The results file of a finished run, written alone: ``results_file.py JOURNAL_DIR ROWS [--make]``.

With ``--make`` it first records a synthetic journal of ROWS rows (keys in batches as a run records
them, every row answered, replies in a shuffled arrival order) and exits; without, it writes the
results file from that journal as a run's end does and prints one JSON line, so that the driver
reads this process's peak RSS for exactly that work.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import polars as pl

from bulk_import.config import BATCH_ROWS
from bulk_import.journal import Journal
from bulk_import.reconcile import ANSWERED, Ledger
from bulk_import.results import write_run_results

RUN_ID = "benchrun00"


def make(folder: Path, rows: int) -> None:
    journal = Journal.open(folder, {}, resume=False, run_id=RUN_ID)
    for first in range(0, rows, BATCH_ROWS):
        numbers = pl.int_range(first, min(rows, first + BATCH_ROWS), dtype=pl.Int64, eager=True)
        keys = pl.DataFrame({"row": numbers, "key": "user" + numbers.cast(pl.String) + "@example.com"})
        journal.record_keys(first, keys.with_columns(reason=pl.lit(None, pl.String)))
        replies = pl.DataFrame(
            {
                "row": numbers.shuffle(seed=first),
                "error": 0,
                "error_text": "Successful operation",
                "matching_field": "email",
                "profile_id": "60f039e830b8bcb28392f8eb",
            }
        )
        assert journal._replies is not None
        journal._replies.write(replies.write_ndjson().encode())
    journal.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("journal", type=Path)
    p.add_argument("rows", type=int)
    p.add_argument("--make", action="store_true")
    args = p.parse_args()
    if args.make:
        make(args.journal, args.rows)
        return
    journal = Journal(args.journal, RUN_ID, {})
    ledger = Ledger(state=bytearray([ANSWERED]) * args.rows)
    out = args.journal.with_name("results.csv")
    t0 = time.monotonic()
    counts = write_run_results(journal, ledger, args.rows, out)
    t1 = time.monotonic()
    assert counts["ok"] == args.rows, counts
    line = {"rows": args.rows, "t0": t0, "t1": t1, "rows_per_s": args.rows / (t1 - t0)}
    print(json.dumps(line), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
