from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from bulk_import.sample import write_sample
from tests.helpers import Queues, delete

# No example is held to a time: the two cores are shared with the broker and whatever else runs.
settings.register_profile("shared-machine", deadline=None)
settings.load_profile("shared-machine")


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
