"""bulk-import: stream CSV/Parquet profiles into Altcraft over RabbitMQ, with a result for every row."""

from __future__ import annotations

from .config import BrokerSettings, ImportOptions, censor_url
from .dry_run import DryRun, dry_run
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
from .importer import run_import
from .messages import Batch, Reply, build_batch, feedback_id, parse_feedback_id, parse_reply
from .pipeline import ImportSummary
from .reconcile import STATUSES, Ledger, Status
from .results import ResultsReport, report_results

__all__ = [
    "STATUSES",
    "AuthenticationFailed",
    "Batch",
    "BrokerError",
    "BrokerSettings",
    "BrokerUnreachable",
    "BulkImportError",
    "ConnectionLost",
    "DryRun",
    "ImportOptions",
    "ImportSummary",
    "IncompleteRun",
    "InputError",
    "Ledger",
    "QueueMissing",
    "Reply",
    "ResultsReport",
    "Status",
    "build_batch",
    "censor_url",
    "dry_run",
    "feedback_id",
    "parse_feedback_id",
    "parse_reply",
    "report_results",
    "run_import",
]
