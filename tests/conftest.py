from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bulk_import.sample import write_sample
from tests.helpers import Queues, delete


@pytest.fixture
def queues() -> Iterator[Queues]:
    """A request and a reply queue of this test's own, deleted afterwards."""
    q = Queues.fresh()
    yield q
    delete(q.request, q.result, *q.api)


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated contacts shared by the tests: read-only."""
    folder = tmp_path_factory.mktemp("samples")
    files = {
        "small.csv": 500,
        "100k.parquet": 100_000,
        "100k.csv": 100_000,
        "20k.parquet": 20_000,
    }
    out = {}
    for name, rows in files.items():
        write_sample(rows, folder / name, seed=1)
        out[name] = folder / name
    return out
