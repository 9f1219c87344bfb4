"""How the run's lines look on stderr: text for people and cron mail, JSON for log pipelines.

Every line is stamped. ``text`` is ``<time> <LEVEL> <message>``; on a terminal showing the progress
bar, lines go through rich's console so they print above the bar instead of onto it. ``json``
(``--log-format json``) is one object a line, made by structlog from the standard library's
records: ``timestamp``, ``level``, ``logger``, ``event`` (the message) and the record's fields
(the counts of a progress or summary line), so a pipeline reads numbers, not sentences.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from typing import Any, Literal

import structlog

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_TIME = "%Y-%m-%dT%H:%M:%S"

#: The run's own lines (its summary, an error, a signal): shown even with ``--quiet``.
said = logging.getLogger("bulk_import.run")
said.setLevel(logging.INFO)

_format: LogFormat = "text"


def current_format() -> LogFormat:
    return _format


def setup(verbose: int, quiet: bool, log_format: LogFormat = "text", name: str = "") -> None:
    """Send log records to stderr in ``log_format``; ``name`` marks a worker's lines."""
    global _format
    _format = log_format
    level = logging.WARNING if quiet else logging.INFO if verbose == 0 else logging.DEBUG
    handler: logging.Handler
    if log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_json_formatter(name))
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        from .progress import STDERR

        handler = RichHandler(console=STDERR, show_path=False, log_time_format=LOG_TIME, markup=False)
        handler.setFormatter(logging.Formatter(f"{_who(name)}%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {_who(name)}%(message)s", LOG_TIME)
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiormq reports every reconnect and alarm at WARNING/ERROR; ours say it in the user's terms.
    logging.getLogger("aiormq").setLevel(logging.DEBUG if verbose > 1 else logging.CRITICAL)
    # Reading object storage, polars may ask boto3 for credentials, which says where it found them.
    for chatty in ("botocore", "boto3"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def say(text: str, level: int = logging.INFO, **fields: Any) -> None:
    """A line of the run's own, whatever ``--quiet``: plain and stamped, or a JSON object with ``fields``."""
    if _format == "json":
        said.log(level, text, extra=fields)
        return
    if sys.stderr.isatty():
        from .progress import STDERR

        STDERR.print(f"{_now()} {text}", markup=False, highlight=False, soft_wrap=True)
        return
    sys.stderr.write(f"{_now()} {text}\n")
    sys.stderr.flush()


def _now() -> str:
    return datetime.now().astimezone().strftime(LOG_TIME)


def _who(name: str) -> str:
    return f"[{name}] " if name else ""


def _json_formatter(name: str) -> structlog.stdlib.ProcessorFormatter:
    stamp: list[structlog.typing.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=False),
    ]
    if name:
        stamp.append(lambda _logger, _method, event: {**event, "worker": name})
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=stamp,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
