"""Read + build of a wide CSV beside a normal one: ``wide_csv.py [--rows N] [--columns C]``.

A wide export (thousands of columns: survey answers, event flags) has few rows per byte block, so
whatever a batch costs per column weighs on every row. This writes an N-row by C-column CSV (an
``email`` key, then short numbers and words, a tenth of the cells empty, some quoted), and the
10-column sample contacts with ``--normal-rows`` rows, reads and builds each as ``bulk-import run``
does without a broker, and prints rows/s and MB/s of both, and the CPU time they took (on a
shared machine the wall time says more about the neighbours). The files are kept in
benchmarks/work/ for the next run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import polars as pl

from bulk_import.batches import built_batches
from bulk_import.config import ImportOptions
from bulk_import.reader import open_source
from bulk_import.sample import _mix, write_sample

HERE = Path(__file__).resolve().parent
WORDS = ["yes", "no", "São Paulo", "O'Brien", "Smith, J.", 'say "hi"', "n/a", "Zürich"]


def write_wide(rows: int, columns: int, path: Path) -> None:
    """``rows`` rows of ``columns`` columns, the same for the same size on any machine."""
    i = pl.int_range(0, rows, dtype=pl.Int64)
    words = pl.lit(pl.Series(WORDS))

    def cell(j: int) -> pl.Expr:
        x = _mix(i, j)
        text = words.gather(x % len(WORDS)) if j % 10 == 0 else (x % 100_000).cast(pl.String)
        return pl.when(x % 10 != 0).then(text).alias(f"q{j}")

    frame = pl.select(pl.format("user{}@example.com", i).alias("email"), *map(cell, range(1, columns)))
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_csv(tmp)
    tmp.replace(path)


def read_build(path: Path) -> tuple[int, float, float]:
    """Rows read and built, the seconds it took and the CPU seconds of this process meanwhile."""
    rows = 0
    started, cpu = time.monotonic(), time.process_time()
    for batch in built_batches(open_source(path), ImportOptions(db_id=1), "benchrun00"):
        rows += batch.size
    return rows, time.monotonic() - started, time.process_time() - cpu


def num(x: float) -> str:
    """Three significant digits, thousands separated."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2_000)
    p.add_argument("--columns", type=int, default=5_000)
    p.add_argument("--normal-rows", type=int, default=20_000)
    args = p.parse_args()
    work = HERE / "work"
    work.mkdir(exist_ok=True)
    wide = work / f"wide-{args.rows}x{args.columns}.csv"
    if not wide.exists():
        write_wide(args.rows, args.columns, wide)
    normal = work / f"narrow-{args.normal_rows}x10.csv"
    if not normal.exists():
        tmp = normal.with_name(f".{normal.name}.tmp.csv")
        write_sample(args.normal_rows, tmp, seed=1)
        tmp.replace(normal)
    print("| file | rows | columns | MB | s | CPU s | rows/s | MB/s |")
    print("|---|---|---|---|---|---|---|---|")
    for path in (wide, normal):
        columns = len(open_source(path).columns)
        rows, took, cpu = read_build(path)
        mb = path.stat().st_size / 1e6
        print(
            f"| {path.name} | {rows:,} | {columns:,} | {mb:.1f} | {num(took)} | {num(cpu)} "
            f"| {num(rows / took)} | {num(mb / took)} |"
        )


if __name__ == "__main__":
    main()
