"""Where the rows come from: a file, standard input (``-``), an HTTP(S) URL or object storage.

A run reads its input more than once (duplicate keys first, then the rows) and ``--resume`` needs
the same rows again, so stdin and a URL are first copied, as a stream, to a file beside the
results: ``<results>.input.<ext>``. It is removed when the run ends with every row accounted for
and kept when the run is unfinished, to be resumed from (the run says how).

``s3://``, ``gs://`` and ``az://`` objects are read by polars (credentials and endpoint from the
usual environment, ``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``...): Parquet as it is, CSV as UTF-8
text in its separator, each streamed into the copy.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import polars as pl

from .config import FileFormat
from .errors import InputError
from .journal import recorded_runs
from .reader import COMPRESSIONS, detect_format
from .results import default_results_path

STDIN = "-"
_HTTP = ("http://", "https://")
_STORAGE = ("s3://", "gs://", "gcs://", "az://", "abfs://")
_URL_SCHEMES = _HTTP + _STORAGE
#: Seconds a URL may keep the copy waiting for bytes.
URL_TIMEOUT_S = 60.0


def is_streamed(name: str) -> bool:
    """Whether ``name`` is read once from elsewhere (stdin, a URL) rather than a local file."""
    return name == STDIN or name.lower().startswith(_URL_SCHEMES)


def input_name(name: str, file_format: FileFormat | None) -> str:
    """The file name the input is known by: a URL's last part, ``stdin.csv`` for standard input."""
    if name == STDIN:
        return f"stdin.{file_format or 'csv'}"
    if is_streamed(name):
        last = PurePosixPath(urllib.parse.urlsplit(name).path).name
        return last or f"download.{file_format or 'csv'}"
    return Path(name).name


def results_for(name: str, results: Path | None, file_format: FileFormat | None) -> Path:
    """The results file: ``--results``, else beside a local input, else in the current folder."""
    if results is not None:
        return results
    if is_streamed(name):
        return default_results_path(Path(input_name(name, file_format)))
    return default_results_path(Path(name))


def spool_path(name: str, results: Path, file_format: FileFormat | None) -> Path:
    """Where stdin or a URL is copied: beside the results, with the input's own extension(s)."""
    suffixes = "".join(PurePosixPath(input_name(name, file_format)).suffixes) or ".csv"
    return results.with_name(f"{results.name}.input{suffixes}")


@contextlib.contextmanager
def local_input(
    name: str, results: Path, file_format: FileFormat | None, delimiter: str = ","
) -> Iterator[Path]:
    """The input as a local file for the length of the run (see the module's note)."""
    if not is_streamed(name):
        yield Path(name)
        return
    path = spool_path(name, results, file_format)
    if name.lower().startswith(_STORAGE):
        _copy_from_storage(name, path, file_format, delimiter)
    else:
        _copy(name, path)
    finished = False
    try:
        yield path
        finished = True
    finally:
        if not finished or not recorded_runs(results):
            path.unlink(missing_ok=True)


def spool_kept(name: str, results: Path, file_format: FileFormat | None) -> Path | None:
    """The copy of stdin or a URL an unfinished run keeps, to resume from; None for a local file."""
    if not is_streamed(name):
        return None
    path = spool_path(name, results, file_format)
    return path if path.exists() else None


def _copy(name: str, path: Path) -> None:
    """Stream ``name`` into ``path`` (through a temporary name: a half copy is never taken for one)."""
    partial = path.with_name(f".{path.name}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _opened(name) as src, partial.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        where = "standard input" if name == STDIN else name
        raise InputError(f"cannot copy {where} to {path}: {exc.strerror or exc}") from None


def _copy_from_storage(name: str, path: Path, file_format: FileFormat | None, delimiter: str) -> None:
    """Object storage through polars: Parquet as it is, CSV as UTF-8 text in its own separator."""
    partial = path.with_name(f".{path.name}.partial")
    fmt = file_format or detect_format(Path(input_name(name, file_format)))
    try:
        if fmt == "parquet":
            pl.scan_parquet(name).sink_parquet(partial)
        elif fmt == "csv" and not name.lower().endswith(COMPRESSIONS):
            scan = pl.scan_csv(name, infer_schema=False, separator=delimiter)
            scan.sink_csv(partial, separator=delimiter)
        else:
            raise InputError(f"{name}: from object storage, the input is Parquet or plain UTF-8 CSV")
        partial.replace(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise InputError(f"{name}: cannot be read: {str(exc).strip().splitlines()[0]}") from None
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def _opened(name: str) -> Iterator[BinaryIO]:
    if name == STDIN:
        yield sys.stdin.buffer
        return
    try:
        with urllib.request.urlopen(name, timeout=URL_TIMEOUT_S) as response:
            yield response
    except urllib.error.HTTPError as exc:
        raise InputError(f"{name}: the server answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise InputError(f"{name}: cannot be fetched: {exc.reason}") from None
