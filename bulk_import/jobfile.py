"""Options from a TOML file (``--config``): a cron job's settings kept in one place.

::

    # for every job of the file
    amqp_url = "amqp://importer@mq.internal:5672/altcraft"
    password_file = "/etc/bulk-import/password"

    [jobs.contacts]
    file = "/data/exports/contacts.parquet"
    db = 23
    matching = "custom"
    field = "CRM_ID"

A key is an option's long name, with ``-`` or ``_`` (``key-column``, ``key_column``); ``file`` is
the input. A relative path (``file``, ``results``, ``summary``, ``password_file``) is taken from the
config file's folder, wherever cron starts the command. ``--job NAME`` adds the table
``[jobs.NAME]`` over the file's top-level keys. The command line wins over the environment, which
wins over the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from .errors import InputError


def read_job(path: Path, job: str | None) -> dict[str, Any]:
    """The options ``path`` sets for ``job`` (or its top-level keys alone), keys with ``_``."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read the config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"the config file {path} is not TOML: {exc}") from None
    jobs = doc.pop("jobs", {})
    if not isinstance(jobs, dict):
        raise InputError(f"{path}: jobs must be tables, [jobs.NAME]")
    options = {_key(k): v for k, v in doc.items()}
    if job is not None:
        chosen = jobs.get(job)
        if not isinstance(chosen, dict):
            known = ", ".join(sorted(jobs)) or "none"
            raise InputError(f"{path}: no job {job!r} ([jobs.{job}]); its jobs: {known}")
        options |= {_key(k): v for k, v in chosen.items()}
    for key in _PATHS & options.keys():
        if isinstance(options[key], str) and not Path(options[key]).is_absolute():
            options[key] = str(path.parent / options[key])
    return options


#: The keys that name files.
_PATHS = frozenset({"file", "results", "summary", "password_file", "requests"})


def _key(name: str) -> str:
    return name.replace("-", "_")
