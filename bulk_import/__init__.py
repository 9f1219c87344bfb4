"""bulk-import: stream CSV/Parquet profiles into Altcraft over RabbitMQ, with a result for every row."""

from __future__ import annotations

from .config import BrokerSettings, ImportOptions, censor_url
from .errors import (
    AuthenticationFailed,
    BrokerError,
    BrokerUnreachable,
    BulkImportError,
    ConnectionLost,
    IncompleteRun,
    InputError,
    QueueMissing,
)
from .messages import Batch, Reply, build_batch, feedback_id, parse_feedback_id, parse_reply
from .pipeline import ImportSummary, run_import
from .reconcile import STATUSES, Ledger, Status

__all__ = [
    "STATUSES",
    "AuthenticationFailed",
    "Batch",
    "BrokerError",
    "BrokerSettings",
    "BrokerUnreachable",
    "BulkImportError",
    "ConnectionLost",
    "ImportOptions",
    "ImportSummary",
    "IncompleteRun",
    "InputError",
    "Ledger",
    "QueueMissing",
    "Reply",
    "Status",
    "build_batch",
    "censor_url",
    "feedback_id",
    "parse_feedback_id",
    "parse_reply",
    "run_import",
]
