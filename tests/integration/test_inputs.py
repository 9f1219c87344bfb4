"""Inputs as they come: standard input, an HTTP URL, zstd: read once, copied, imported as files."""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import zstandard

from tests.helpers import Queues, assert_every_row_accounted, cli, emulator, status_counts

pytestmark = pytest.mark.broker

ROWS = 3_000


def contacts_csv() -> bytes:
    frame = pl.DataFrame({"email": [f"u{i}@example.com" for i in range(ROWS)], "n": range(ROWS)})
    return frame.write_csv().encode()


def run_here(
    cwd: Path, *args: str | Path, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``bulk-import ARGS`` started in ``cwd``, as a cron job in its folder."""
    return subprocess.run(
        cli(*args), input=stdin, capture_output=True, cwd=cwd, timeout=300, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server of a folder: its URL and the folder."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_standard_input_is_imported_and_its_copy_removed(queues: Queues, tmp_path: Path) -> None:
    with emulator(queues):
        done = run_here(tmp_path, "run", "-", "--db", "1", *queues.args(), stdin=contacts_csv())
    assert done.returncode == 0, done.stderr.decode()
    assert status_counts(assert_every_row_accounted(ROWS, tmp_path / "stdin.results.csv")) == {"ok": ROWS}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stdin.results.csv"]


def test_a_url_of_gzipped_csv_is_imported(queues: Queues, tmp_path: Path, server: tuple[str, Path]) -> None:
    url, root = server
    (root / "contacts.csv.gz").write_bytes(gzip.compress(contacts_csv()))
    with emulator(queues):
        done = run_here(tmp_path, "run", f"{url}/contacts.csv.gz", "--db", "1", *queues.args())
    assert done.returncode == 0, done.stderr.decode()
    results = tmp_path / "contacts.csv.results.csv"
    assert status_counts(assert_every_row_accounted(ROWS, results)) == {"ok": ROWS}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contacts.csv.results.csv", "www"]


def test_a_url_that_is_not_there_is_one_line_and_exit_2(tmp_path: Path, server: tuple[str, Path]) -> None:
    url, _ = server
    done = run_here(tmp_path, "run", f"{url}/nothing.csv", "--db", "1")
    assert done.returncode == 2
    assert (
        done.stderr.decode()
        .strip()
        .endswith(f"error: {url}/nothing.csv: the server answered 404 File not found")
    )


def test_an_unfinished_run_from_stdin_keeps_its_copy_to_resume_from(queues: Queues, tmp_path: Path) -> None:
    results = tmp_path / "night.csv"
    args = ["--db", "1", *queues.args(), "--results", results]
    with emulator(queues, "--drop", "0.1", "--seed", "1"):
        first = run_here(tmp_path, "run", "-", *args, "--reply-timeout", "2", stdin=contacts_csv())
    assert first.returncode == 4, first.stderr.decode()
    kept = tmp_path / "night.csv.input.csv"
    assert (
        f"the input is kept in {kept}: finish with bulk-import run {kept} --resume" in first.stderr.decode()
    )
    again = run_here(tmp_path, "run", "-", *args, "--resume", stdin=b"")
    assert again.returncode == 2
    assert f"resume from the copy the run kept, bulk-import run {kept} --resume" in again.stderr.decode()
    with emulator(queues):
        done = run_here(tmp_path, "run", kept, *args, "--resume")
    assert done.returncode == 0, done.stderr.decode()
    assert status_counts(assert_every_row_accounted(ROWS, results)) == {"ok": ROWS}


def test_zstd_csv_is_read_as_a_stream(tmp_path: Path) -> None:
    data = tmp_path / "c.csv.zst"
    data.write_bytes(zstandard.ZstdCompressor().compress(contacts_csv()))
    done = run_here(tmp_path, "run", data, "--db", "1", "--dry-run")
    assert done.returncode == 0, done.stderr.decode()
    assert f"{ROWS} rows, {ROWS} would be sent" in done.stderr.decode()


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[dict[str, str], Any]]:
    """A local S3 endpoint (moto) with a bucket ``exports``: the environment to reach it, a client."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="exports")
    try:
        yield env, client
    finally:
        server.stop()


@pytest.mark.parametrize("name", ["c.parquet", "c.csv"])
def test_an_object_in_s3_is_imported(
    queues: Queues, tmp_path: Path, s3: tuple[dict[str, str], Any], name: str
) -> None:
    env, client = s3
    frame = pl.read_csv(contacts_csv(), infer_schema=False)
    body = io.BytesIO()
    frame.write_parquet(body) if name.endswith(".parquet") else frame.write_csv(body)
    client.put_object(Bucket="exports", Key=f"night/{name}", Body=body.getvalue())
    with emulator(queues):
        done = run_here(tmp_path, "run", f"s3://exports/night/{name}", "--db", "1", *queues.args(), env=env)
    assert done.returncode == 0, done.stderr.decode()
    results = tmp_path / f"{Path(name).stem}.results.csv"
    assert status_counts(assert_every_row_accounted(ROWS, results)) == {"ok": ROWS}
    assert sorted(p.name for p in tmp_path.iterdir()) == [results.name]


def test_an_object_that_is_not_there_is_one_line_and_exit_2(
    tmp_path: Path, s3: tuple[dict[str, str], Any]
) -> None:
    env, _ = s3
    done = run_here(tmp_path, "run", "s3://exports/none.parquet", "--db", "1", env=env)
    assert done.returncode == 2
    [line] = done.stderr.decode().splitlines()
    assert "error: s3://exports/none.parquet: cannot be read:" in line
