"""Every error bulk-import raises, and the exit code each one means.

::

    BulkImportError                     base; never raised bare
    ├── InputError              2       bad file, missing key column, conflicting options, journal mismatch
    │   └── AlreadyRunning              another process is running an import to the same results file
    ├── BrokerError             3       the broker cannot be used: the edge's translation of aiormq errors
    │   ├── BrokerUnreachable           nothing listening, connection refused or timed out
    │   │   └── ConnectionLost          an open connection or channel dropped (reconnect and resend)
    │   ├── AuthenticationFailed        wrong credentials, or the vhost is refused
    │   ├── BrokerRefused               the broker refused an operation: retrying cannot help
    │   │   └── AccessRefused           the user lacks a permission (configure, write or read)
    │   └── QueueMissing                a platform queue does not exist (and --declare was not given)
    ├── IncompleteRun           4       retries exhausted or stopped by a signal: some rows have no final
    │                                   answer; the results file and journal are written, --resume goes on
    └── LocalError              4       this machine failed the run (disk full, no permission to write):
                                        stopped at once, the journal kept as far as it was written; a
                                        results file that could not be written leaves no temporary file,
                                        and --resume writes it once there is room

A run that finishes with some rows ``error`` or ``rejected`` is not an exception: its exit code (1)
comes from the counts (:attr:`bulk_import.pipeline.ImportSummary.exit_code`).
Exit 70 is reserved for bugs, so that cron can tell a defect from failed rows.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ROWS_FAILED = 1
EXIT_INPUT = 2
EXIT_BROKER = 3
EXIT_INCOMPLETE = 4
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70


class BulkImportError(Exception):
    """Base of every error a user can be shown; its message is one readable line."""

    exit_code = EXIT_INTERNAL


class InputError(BulkImportError):
    """The input file or the options cannot make a valid run."""

    exit_code = EXIT_INPUT


class AlreadyRunning(InputError):
    """Another bulk-import process holds the lock of the same results file."""


class BrokerError(BulkImportError):
    """The broker could not be used."""

    exit_code = EXIT_BROKER
    #: Whether trying again later can help (dlt's transient/terminal split).
    transient = False


class BrokerUnreachable(BrokerError):
    """Nothing answered at the AMQP address, or the connection dropped and did not come back."""

    transient = True


class ConnectionLost(BrokerUnreachable):
    """A connection or channel that was open has closed under the run."""


class AuthenticationFailed(BrokerError):
    """The broker refused the credentials or the vhost."""


class BrokerRefused(BrokerError):
    """The broker closed a channel or connection with a refusal (a reply code, not a lost link)."""


class AccessRefused(BrokerRefused):
    """The user may not do what the run needs: configure, write or read, named in the message."""


class QueueMissing(BrokerError):
    """A queue the platform should own does not exist."""


class IncompleteRun(BulkImportError):
    """The run stopped before every row had a final answer."""

    exit_code = EXIT_INCOMPLETE


class LocalError(BulkImportError):
    """A file of the run could not be written here; the broker is not at fault, so no reconnect."""

    exit_code = EXIT_INCOMPLETE
