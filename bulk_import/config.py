"""The options of a run, frozen, so they cross from the CLI into the library as one value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

from .errors import InputError

Matching = Literal["email", "phone", "profile_id", "custom"]
MATCHINGS: tuple[Matching, ...] = ("email", "phone", "profile_id", "custom")
#: ``jsonl``: a file of API calls, a JSON object a line (``bulk-import api --requests``).
FileFormat = Literal["csv", "parquet", "jsonl"]

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
AMQP_URL_ENV = "BULK_IMPORT_AMQP_URL"
PASSWORD_FILE_ENV = "BULK_IMPORT_AMQP_PASSWORD_FILE"
DEFAULT_QUEUE = "database_import"
DEFAULT_RESULT_QUEUE = "database_import_result"
DEFAULT_API_QUEUE = "api_req"
DEFAULT_API_RESULT_QUEUE = "api_resp"
API_TOKEN_ENV = "BULK_IMPORT_API_TOKEN"
#: The platform's default ``RABBITMQ_X_MESSAGE_TTL``: a reply nobody reads is gone after a day.
DEFAULT_RESULT_TTL_S = 86_400
OnDuplicateKey = Literal["last", "first", "all", "fail"]
#: What ``--on-duplicate-key`` takes: which of a key's rows is sent (see :mod:`.duplicates`).
ON_DUPLICATE_KEY: tuple[OnDuplicateKey, ...] = ("last", "first", "all", "fail")
OnUnfinished = Literal["fail", "resume", "restart", "auto"]
#: What ``--on-unfinished`` takes: what a run does over an unfinished one it was not told about.
ON_UNFINISHED: tuple[OnUnfinished, ...] = ("fail", "resume", "restart", "auto")
#: Columns so named are the tool's own (``report --failed`` writes them): ``run`` never sends them.
RESERVED_PREFIX = "bulk_import_"
#: Parquet rows per batch: a few batches in flight on every core keep a run under 250 MB.
BATCH_ROWS = 32_768
#: Rows per api_req message (``--batch-size``): chosen from the bench's sweep (benchmarks/run.py, phase 8).
DEFAULT_BATCH_SIZE = 5000
#: Rows sent and not yet answered, at most, unless ``--max-pending`` says otherwise.
DEFAULT_MAX_PENDING = 8192
#: With ``--via api``, the default bound is this many batches' rows, and at least
#: :data:`PENDING_API_ROWS`: a batch is one job for the platform, and with fewer in flight the client
#: and the platform wait on each other.
PENDING_BATCHES = 8
PENDING_API_ROWS = 16_384


def _split_userinfo(url: str) -> tuple[str, str, str] | None:
    """``(scheme://, user:password, host...)`` cut at the last ``@``, however the password is written."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return None
    return scheme + sep, userinfo, host


def censor_url(url: str) -> str:
    """The URL with its password replaced, for anything a user or a log may see.

    The userinfo is taken up to the last ``@``, so a password holding ``/``, ``?``, ``#`` or ``@``
    that was not percent-encoded is hidden whole too.
    """
    split = _split_userinfo(url)
    if split is None:
        return url
    head, userinfo, host = split
    user, colon, _ = userinfo.partition(":")
    return f"{head}{user}:******@{host}" if colon else url


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in it, percent-encoded, in place of any the URL had."""
    split = _split_userinfo(url)
    if split is None:
        head, _, rest = url.partition("://")
        return url if not rest else f"{head}://guest:{quote(password, safe='')}@{rest}"
    head, userinfo, host = split
    return f"{head}{userinfo.partition(':')[0]}:{quote(password, safe='')}@{host}"


def read_password(path: Path) -> str:
    """The first line of a password file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the password file {path}: {exc}") from None
    if not lines or not lines[0]:
        raise InputError(f"the password file {path} is empty")
    return lines[0]


@dataclass(frozen=True)
class BrokerSettings:
    """Where the platform's broker is and which of its queues to use."""

    url: str = DEFAULT_AMQP_URL
    queue: str = DEFAULT_QUEUE
    result_queue: str = DEFAULT_RESULT_QUEUE
    #: The platform's queues for any API call (``--via api``).
    api_queue: str = DEFAULT_API_QUEUE
    api_result_queue: str = DEFAULT_API_RESULT_QUEUE
    #: Create the queues (durable) instead of checking that the platform made them.
    declare: bool = False
    #: Reconnect attempts after a lost connection before the run gives up (exit 4).
    reconnect_attempts: int = 8
    connect_timeout: float = 10.0
    #: Seconds the result queue keeps a reply (its ``x-message-ttl``): what ``declare`` gives it,
    #: and how old an unfinished run can be before ``--resume`` finds its replies gone.
    result_ttl: float = DEFAULT_RESULT_TTL_S
    #: Seconds between heartbeats, unless the URL says (``?heartbeat=N``): a link that went silent
    #: is taken for dead after three of them, and reconnected (the broker's default, 60 s, meant
    #: over three minutes of a run waiting on a dead socket).
    heartbeat: int = 10

    def __post_init__(self) -> None:
        validate_amqp_url(self.url)

    @property
    def safe_url(self) -> str:
        return censor_url(self.url)


_ENCODE_HINT = (
    "a password holding / ? # @ or % must be percent-encoded (/ as %2F, ? as %3F, # as %23, @ as %40), "
    f"or kept in a file given with --password-file [env {PASSWORD_FILE_ENV}]"
)


def validate_amqp_url(url: str) -> None:
    """Refuse a URL aiormq would misread, with a message that never shows the password."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InputError(f"the AMQP URL {censor_url(url)!r} does not parse: {_ENCODE_HINT}") from None
    if "@" in url.partition("://")[2] and "@" not in parts.netloc:
        raise InputError(f"the AMQP URL {censor_url(url)!r} has an @ after the host: {_ENCODE_HINT}")
    if parts.scheme not in ("amqp", "amqps"):
        raise InputError(f"the AMQP URL {censor_url(url)!r} must start with amqp:// or amqps://")
    if not parts.hostname:
        raise InputError(f"the AMQP URL {censor_url(url)!r} names no host")


@dataclass(frozen=True)
class ImportOptions:
    """What to send for each row, and how the run behaves."""

    db_id: int
    account_id: int = 1
    matching: Matching = "email"
    #: The custom field's name (matching=custom): both the column read and the ``field_name`` sent.
    field_name: str | None = None
    #: The column that holds the key; defaults to the matching's own name, or ``field_name``.
    key_column: str | None = None
    update_only: bool = False
    skip_triggers: bool = False
    resource_id: int | None = None
    #: ``skip``: a null cell is left out of ``data``, so an import never blanks a field by accident.
    nulls: Literal["skip", "keep"] = "skip"
    file_format: FileFormat | None = None
    #: Publisher confirms in flight.
    window: int = 4096
    #: Rows sent and not yet answered, at most: what a crash or SIGTERM can leave in flight.
    #: 0 publishes without waiting for replies (replies read elsewhere, or measuring the broker).
    #: None: :attr:`pending_limit` chooses.
    max_pending: int | None = None
    #: Seconds without any reply, once everything is published, before the rest are ``no_reply``.
    reply_timeout: float = 60.0
    results_path: Path | None = None
    summary_path: Path | None = None
    #: Continue the run recorded in the journal instead of starting anew.
    resume: bool = False
    #: Discard a recorded unfinished run and start again.
    restart: bool = False
    #: Neither ``resume`` nor ``restart`` over an unfinished run: refuse, or do one of them
    #: (``auto``: resume when the input is unchanged, else restart).
    on_unfinished: OnUnfinished = "fail"
    #: CSV column types (name → str/int/float/bool/date/datetime); CSV cells are text otherwise.
    types: Mapping[str, str] = field(default_factory=dict)
    delimiter: str = ","
    #: The CSV file's text encoding.
    encoding: str = "utf-8"
    #: CSV cells that mean "no value" (``NULL``, ``n/a``): read as null, so ``--nulls`` applies.
    null_values: tuple[str, ...] = ()
    #: How ``--type COL:date`` and ``COL:datetime`` cells are written (strftime's codes, e.g.
    #: ``%d.%m.%Y``); ISO 8601 when None.
    date_format: str | None = None
    datetime_format: str | None = None
    #: Rows per batch read from the file.
    batch_rows: int = BATCH_ROWS
    #: Seconds to wait for in-flight confirms and replies after SIGTERM/SIGINT.
    drain_timeout: float = 30.0
    #: Times a nacked message is sent again before its row is ``not_confirmed``.
    nack_retries: int = 3
    #: File columns renamed before anything else (old → new): the other options use the new names.
    rename: Mapping[str, str] = field(default_factory=dict)
    #: Columns left out of the messages.
    exclude: tuple[str, ...] = ()
    #: Processes, each with its own connection, that share the rows (see :mod:`.workers`).
    workers: int = 1
    #: ``(k, n)``: this process sends the rows whose number modulo ``n`` is ``k``.
    shard: tuple[int, int] | None = None
    #: The run id of a new run (workers share their coordinator's); made up when None.
    run_id: str | None = None
    #: ``queue``: a ``database_import`` message per row; ``api``: batches through ``api_req``;
    #: ``calls``: a file of API calls (``bulk-import api --requests``), one through ``api_req`` a line.
    via: Literal["queue", "api", "calls"] = "queue"
    #: Rows per batch request (``--via api``), at most 10,000.
    batch_size: int = DEFAULT_BATCH_SIZE
    #: ``import`` (insert or update), ``add`` (insert only) or ``update`` (update only), ``--via api``.
    mode: Literal["import", "add", "update"] = "import"
    detect_geo: bool = False
    #: Refuse the file before anything is sent when a cell does not convert to its ``--type``
    #: (otherwise its row alone is ``rejected``).
    strict: bool = False
    #: Rows with one key: the file's ``last`` (or ``first``) is sent and the others skipped, ``all``
    #: are sent, or the file is refused (``fail``).
    on_duplicate_key: OnDuplicateKey = "last"
    #: Error codes worth sending a row again for (the platform's temporary failures): after every
    #: reply is in, such rows go again, up to ``retry_attempts`` times, after a growing pause.
    #: With ``resume``, rows an earlier attempt recorded with those codes go again too.
    retry_errors: frozenset[int] = frozenset()
    retry_attempts: int = 3
    #: Seconds before the first retry; each further one waits twice as long.
    retry_backoff: float = 5.0
    #: The API token every ``api_req`` body carries; never printed.
    api_token: str | None = field(default=None, repr=False)

    @property
    def pending_limit(self) -> int:
        """``max_pending``, or its default for the way rows are sent."""
        if self.max_pending is not None:
            return self.max_pending
        if self.via == "api":
            return max(PENDING_BATCHES * self.batch_size, PENDING_API_ROWS)
        return DEFAULT_MAX_PENDING

    def __post_init__(self) -> None:
        if self.matching not in MATCHINGS:
            raise InputError(f"unknown matching {self.matching!r}; use one of {', '.join(MATCHINGS)}")
        if self.matching == "custom" and not self.field_name:
            raise InputError("--matching custom needs --field NAME (the custom field to match on)")
        if self.matching != "custom" and self.field_name:
            raise InputError("--field only applies to --matching custom")
        if self.window < 1:
            raise InputError("--window must be at least 1")
        if self.max_pending is not None and self.max_pending < 0:
            raise InputError("--max-pending must be 0 (no limit) or more")
        if self.batch_rows < 1:
            raise InputError("the batch size must be at least 1")
        if self.resume and self.restart:
            raise InputError("--resume and --restart contradict each other; pass one")
        if self.reply_timeout <= 0:
            raise InputError("--reply-timeout must be positive")
        if self.workers < 1:
            raise InputError("--workers must be at least 1")
        if self.via == "api" and not self.api_token:
            raise InputError(f"--via api needs the API token: --token, or {API_TOKEN_ENV}")
        if self.via != "queue" and self.workers > 1:
            raise InputError(
                "--workers applies to --via queue only; batches already lift the per-message limit"
            )
        if not 1 <= self.batch_size <= 10_000:
            raise InputError("--batch-size must be between 1 and 10,000 (the platform's recommended most)")
        if self.via != "api" and (self.mode != "import" or self.detect_geo):
            raise InputError("--mode and --detect-geo apply to --via api")
        if self.retry_attempts < 0 or self.retry_backoff < 0:
            raise InputError("--retry-attempts and --retry-backoff must be 0 or more")
        if self.on_unfinished not in ON_UNFINISHED:
            raise InputError(f"--on-unfinished takes {', '.join(ON_UNFINISHED)}")
        if self.on_duplicate_key not in ON_DUPLICATE_KEY:
            raise InputError(f"--on-duplicate-key takes {', '.join(ON_DUPLICATE_KEY)}")
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise InputError(f"shard {self.shard} is not k of n with 0 <= k < n")

    @property
    def key(self) -> str:
        """The column that holds each row's matching key."""
        if self.key_column:
            return self.key_column
        if self.matching == "custom":
            assert self.field_name is not None
            return self.field_name
        return self.matching
