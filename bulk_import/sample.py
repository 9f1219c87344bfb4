"""Deterministic synthetic contacts, for the demo, the tests and the benchmarks.

Built by polars from the row number with integer mixing, so the same ``(rows, seed)`` gives the same
file on any machine, and ten million rows take seconds.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from .errors import InputError

FIRST = ["Anna", "Boris", "Chloé", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Inès", "João"]
LAST = ["Ivanova", "Smith", "Müller", "García", "Rossi", "Kowalski", "Nguyen", "O'Brien", "Dubois", "Sato"]
CITY = ["Moscow", "Berlin", "São Paulo", "Zürich", "Kraków", "Lyon", "Osaka", "Dublin", "Porto", "Oslo"]
LOCAL = ["Анна", "Борис", "Χλόη", "Дмитрий", "Елена", "فريد", "Грета", "浩", "Инес", "Жуан"]

_A = 6364136223846793005
_B = 1442695040888963407


def _mix(i: pl.Expr, salt: int) -> pl.Expr:
    """A pseudo-random non-negative integer per row: wrapping 64-bit arithmetic, stable anywhere."""
    x = i.cast(pl.UInt64) * pl.lit(_A, pl.UInt64) + pl.lit((salt * _B) % 2**64, pl.UInt64)
    x = (x ^ (x // (1 << 29))) * pl.lit(_A, pl.UInt64)
    return (x // (1 << 33)).cast(pl.Int64)


def _pick(words: list[str], i: pl.Expr, salt: int) -> pl.Expr:
    return pl.lit(pl.Series(words)).gather(_mix(i, salt) % len(words))


def sample_frame(rows: int, seed: int = 0, first_row: int = 0) -> pl.DataFrame:
    """``rows`` contacts; row ``i`` is the same whatever the batch it is generated in."""
    i = pl.int_range(first_row, first_row + rows, dtype=pl.Int64)
    born = pl.lit(dt.date(1950, 1, 1)) + pl.duration(days=_mix(i, seed + 7) % 20000)
    score = _mix(i, seed + 8) % 1000
    return pl.select(
        CRM_ID=i + 100_000 + seed * 10_000_000,
        email=pl.format("user{}.{}@example.com", i, seed),
        phone=pl.format("+7900{}", (_mix(i, seed + 1) % 10_000_000).cast(pl.String).str.zfill(7)),
        _fname=_pick(FIRST, i, seed + 2),
        _lname=_pick(LAST, i, seed + 3),
        city=_pick(CITY, i, seed + 4),
        birthday=born.cast(pl.Date),
        score=pl.when(_mix(i, seed + 9) % 10 != 0).then(score).cast(pl.Int64),
        vip=_mix(i, seed + 5) % 7 == 0,
        name_local=_pick(LOCAL, i, seed + 6),
    )


def write_sample(rows: int, path: Path, seed: int = 0, batch_rows: int = 1_000_000) -> None:
    """Write ``rows`` contacts to CSV or Parquet (by extension), a batch at a time."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InputError(f"{path}: write .csv or .parquet")
    if rows < 0:
        raise InputError("the number of rows cannot be negative")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if suffix == ".parquet":
        frames = [
            sample_frame(min(batch_rows, rows - start), seed, start).lazy()
            for start in range(0, rows, batch_rows)
        ] or [sample_frame(0, seed).lazy()]
        pl.concat(frames).sink_parquet(tmp, row_group_size=100_000)
    else:
        with tmp.open("wb") as fh:
            sample_frame(0, seed).write_csv(fh)
            for start in range(0, rows, batch_rows):
                frame = sample_frame(min(batch_rows, rows - start), seed, start)
                frame.write_csv(fh, include_header=False)
    tmp.replace(path)
