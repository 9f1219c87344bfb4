"""The progress bar: one line of an 80-column terminal, with the percent, the count and the rate."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from bulk_import import progress
from bulk_import.progress import RichProgress, Snapshot


@pytest.mark.parametrize("total", [10_000_000, None])
def test_the_bar_fits_80_columns(monkeypatch: pytest.MonkeyPatch, total: int | None) -> None:
    monkeypatch.setattr(progress, "STDERR", Console(width=80, file=io.StringIO()))
    bar = RichProgress()
    bar.update(Snapshot(9_999_999, total, 9_999_999, 9_999_999, 4_900_000, elapsed_s=600))
    out = io.StringIO()
    Console(width=80, file=out).print(bar._progress.get_renderable())
    bar.close()
    [line] = out.getvalue().splitlines()
    assert len(line) <= 80
    assert "4900000" in line and "8,167/s" in line
    assert ("49%" in line) == (total is not None)
