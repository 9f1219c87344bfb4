"""The ``bulk-import`` command: options in, a library call, an exit code out. No logic lives here."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import orjson

from . import errors, logs
from .api_call import call_api
from .calls import ApiCall, parse_body
from .config import (
    AMQP_URL_ENV,
    API_TOKEN_ENV,
    DEFAULT_AMQP_URL,
    DEFAULT_API_QUEUE,
    DEFAULT_API_RESULT_QUEUE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_PENDING,
    DEFAULT_QUEUE,
    DEFAULT_RESULT_QUEUE,
    DEFAULT_RESULT_TTL_S,
    MATCHINGS,
    ON_DUPLICATE_KEY,
    ON_UNFINISHED,
    PASSWORD_FILE_ENV,
    PENDING_API_ROWS,
    PENDING_BATCHES,
    BrokerSettings,
    ImportOptions,
    read_password,
    with_password,
)
from .dry_run import dry_run as dry_run_file
from .emulator import API_ERROR_CODES, ERROR_CODES, EmulatorCounts, EmulatorSettings, serve_until_stopped
from .errors import BulkImportError, InputError
from .failed import input_of, write_failed_rows
from .heap import map_large_blocks
from .importer import run_import
from .inputs import is_streamed, local_input, results_for, spool_kept, spool_path
from .jobfile import read_job
from .journal import write_atomic
from .logs import LOG_FORMATS
from .pipeline import ImportSummary, summary_exit_code
from .progress import LogProgress, NullProgress, Observer, RichProgress
from .replies import list_replies
from .results import report_results
from .sample import write_sample
from .workers import serve_worker

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES_HELP = """\b
Exit codes:
  0   every row ok
  1   finished; some rows error or rejected (see the results file)
  2   usage or input-file error
  3   cannot connect, authenticate, or a queue is missing
  4   incomplete: rows not_sent, not_confirmed or no_reply; --resume goes on
  70  internal error (a bug: please report it)
  130 interrupted by a second Ctrl-C / signal
"""

log = logging.getLogger("bulk_import")
#: The time at the head of every line a run writes to stderr.


def _setup_logging(verbose: int, quiet: bool, name: str = "") -> None:
    """Logging as ``--log-format`` asked (read from the command's context, as every command has it)."""
    ctx = click.get_current_context(silent=True)
    log_format = ctx.params.get("log_format") if ctx is not None else None
    logs.setup(verbose, quiet, "json" if log_format == "json" else "text", name)


_say = logs.say


def _fail(exc: BulkImportError) -> NoReturn:
    _say(f"error: {exc}", logging.ERROR, exit_code=exc.exit_code)
    sys.exit(exc.exit_code)


def _run_async(
    make: Callable[[asyncio.Event], Coroutine[Any, Any, T]], second_signal_exits: bool = True, who: str = ""
) -> T:
    """Run on uvloop; the first SIGINT/SIGTERM asks to stop and drain, a second exits at once."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.Runner()
    with runner:
        loop = runner.get_loop()
        stop = asyncio.Event()

        def on_signal(signum: int) -> None:
            if stop.is_set() and second_signal_exits:
                _say("error: stopped at once by a second signal; the journal is kept")
                logging.shutdown()
                os._exit(errors.EXIT_INTERRUPTED)
            again = " (send it again to stop now)" if second_signal_exits and not who else ""
            name = signal.Signals(signum).name
            _say(f"{f'[{who}] ' if who else ''}{name}: finishing what is in flight{again}")
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        return runner.run(make(stop))


def option_group(*options: Callable[[Any], Any]) -> Callable[[F], F]:
    """Options several commands share, in one decorator: as if stacked in the order listed."""

    def apply(func: F) -> F:
        for decorate in reversed(options):
            func = decorate(func)
        return func

    return apply


#: Where the broker is and who logs in: every command that connects.
connection_options = option_group(
    click.option(
        "--amqp-url",
        envvar=AMQP_URL_ENV,
        default=DEFAULT_AMQP_URL,
        show_default=True,
        help=f"Broker URL with the platform's vhost, e.g. amqp://user@host:5672/altcraft [env {AMQP_URL_ENV}: keeps the password out of `ps`].",
    ),
    click.option(
        "--password-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar=PASSWORD_FILE_ENV,
        help=f"Read the broker password from this file (its first line), in place of the URL's [env {PASSWORD_FILE_ENV}].",
    ),
    click.option("--result-queue", default=DEFAULT_RESULT_QUEUE, show_default=True, help="Reply queue."),
)


#: Broker options shared by ``run`` and ``emulate``.
amqp_options = option_group(
    connection_options,
    click.option("--queue", default=DEFAULT_QUEUE, show_default=True, help="Request queue."),
    click.option(
        "--declare",
        is_flag=True,
        help="Create the queues that are missing (durable; the reply queue with --result-ttl); leave existing ones as they are.",
    ),
    click.option(
        "--result-ttl",
        type=float,
        default=DEFAULT_RESULT_TTL_S,
        show_default=True,
        help="Seconds the reply queue keeps a reply (the platform's RABBITMQ_X_MESSAGE_TTL): given to a queue --declare creates, and what --resume expects.",
    ),
)


#: How a run sends, finishes and is taken up again: ``run`` and ``api --requests``.
run_options = option_group(
    click.option(
        "--window", type=int, default=4096, show_default=True, help="Messages awaiting broker confirms."
    ),
    click.option(
        "--max-pending",
        type=int,
        default=None,
        help="Rows sent and not yet answered, at most: what a crash can leave to send again (0: no limit) "
        f"[default: {DEFAULT_MAX_PENDING}; with --via api, {PENDING_BATCHES} batches' rows, "
        f"at least {PENDING_API_ROWS}].",
    ),
    click.option(
        "--drain-timeout",
        type=float,
        default=30.0,
        show_default=True,
        help="Seconds to finish in-flight work after SIGTERM/SIGINT.",
    ),
    click.option(
        "--results",
        "results_path",
        type=click.Path(path_type=Path),
        help="Results file (.csv or .parquet). [default: FILE's stem + .results.csv]",
    ),
    click.option(
        "--summary",
        "summary_path",
        type=click.Path(path_type=Path),
        help="Also write the summary as JSON here.",
    ),
    click.option(
        "--resume", is_flag=True, help="Finish the unfinished run recorded beside the results file."
    ),
    click.option(
        "--restart",
        is_flag=True,
        help="Start again over an unfinished run recorded beside the results file (the rows it "
        "answered are kept in <results stem>.<run id>.partial.csv).",
    ),
    click.option(
        "--on-unfinished",
        type=click.Choice(ON_UNFINISHED),
        default="fail",
        show_default=True,
        help="With an unfinished run recorded and neither --resume nor --restart: fail (say what it "
        "was), resume, restart, or auto (resume when the input is the file it read, else restart): for cron.",
    ),
)


#: What a command says while it works: ``run`` and ``api``.
output_options = option_group(
    click.option(
        "--progress/--no-progress", default=None, help="Live progress bar. [default: on a terminal]"
    ),
    click.option("-q", "--quiet", is_flag=True, help="Only warnings, errors and the summary."),
    click.option("-v", "--verbose", count=True, help="More log lines (-vv: the AMQP client's too)."),
    click.option(
        "--log-format",
        type=click.Choice(LOG_FORMATS),
        default="text",
        show_default=True,
        help="text: stamped lines; json: one JSON object a line, counts as fields (for log pipelines).",
    ),
)


def _config_defaults(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """``--config`` and ``--job`` (eager, in either order): the file's options become the
    command's defaults, under the command line and the environment."""
    assert param.name is not None
    ctx.meta[f"bulk_import.{param.name}"] = value
    path = ctx.meta.get("bulk_import.config")
    if path is None:
        if param.name == "config" and ctx.meta.get("bulk_import.job") is not None:
            raise click.BadParameter(
                "--job names a job of a --config file: give the file", param_hint="--job"
            )
        return value
    try:
        found = read_job(path, ctx.meta.get("bulk_import.job"))
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None
    names: dict[str, str] = {}
    for p in ctx.command.params:
        if p.name is not None and p.name not in ("config", "job"):
            names[p.name] = p.name
            names |= {o.lstrip("-").replace("-", "_"): p.name for o in p.opts if o.startswith("--")}
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise click.BadParameter(
            f"{path}: no option {', '.join(unknown)} in this command", param_hint="--config"
        )
    ctx.default_map = {**(ctx.default_map or {}), **{names[k]: v for k, v in found.items()}}
    return value


#: ``--config FILE`` and ``--job NAME``: options from a TOML file (see :mod:`.jobfile`).
config_options = option_group(
    click.option(
        "--config",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        is_eager=True,
        expose_value=False,
        callback=_config_defaults,
        help="Take options from this TOML file (its top-level keys, and [jobs.NAME] with --job); the command line and the environment win over it.",
    ),
    click.option(
        "--job",
        is_eager=True,
        expose_value=False,
        callback=_config_defaults,
        help="The job of the --config file to run: its [jobs.NAME] table over the file's top-level keys.",
    ),
)


def _show_envvars(command: click.Command) -> click.Command:
    """List each option's environment variable in the command's --help."""
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in ("help", "config", "job"):
            param.show_envvar = True
    return command


def broker_settings(
    amqp_url: str, password_file: Path | None, result_queue: str, **more: Any
) -> BrokerSettings:
    """The settings from the command line, with the password read from its file if one is given."""
    if password_file is not None:
        amqp_url = with_password(amqp_url, read_password(password_file))
    return BrokerSettings(url=amqp_url, result_queue=result_queue, **more)


#: Every option of every command can be set as ``BULK_IMPORT_<COMMAND>_<OPTION>`` too.
ENV_PREFIX = "BULK_IMPORT"


@click.group(epilog=EXIT_CODES_HELP, context_settings={"auto_envvar_prefix": ENV_PREFIX})
@click.version_option(package_name="bulk-import")
def cli() -> None:
    """Import profiles from CSV or Parquet into Altcraft over RabbitMQ, with a result for every row."""


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    """``COLUMN:VALUE`` pairs; the column may itself hold colons, so the last one splits."""
    out: dict[str, str] = {}
    what = {"--type": "COLUMN:TYPE", "--rename": "COLUMN:FIELD"}[option]
    for value in values:
        column, sep, second = value.rpartition(":")
        if not sep or not column or not second:
            raise click.BadParameter(f"{value!r} is not {what}", param_hint=option)
        out[column] = second
    return out


@_show_envvars
@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("file")
@config_options
@click.option("--db", "db_id", type=int, required=True, help="Profile database ID (db_id).")
@click.option(
    "--account",
    "account_id",
    type=int,
    default=1,
    envvar="BULK_IMPORT_ACCOUNT",
    show_default=True,
    help="Account ID (account_id).",
)
@click.option(
    "--matching",
    type=click.Choice(MATCHINGS),
    default="email",
    show_default=True,
    help="How the platform finds the profile: by email, phone, profile_id or a custom field.",
)
@click.option(
    "--field", "field_name", help="Custom field to match on (--matching custom): column and field_name."
)
@click.option("--key-column", help="Column holding the key, when not named after the matching.")
@click.option("--update-only", is_flag=True, help="Only update existing profiles; never create one.")
@click.option("--skip-triggers", is_flag=True, help="Do not fire trigger events for these imports.")
@click.option("--resource-id", type=int, help="Resource used for email and phone matching.")
@click.option(
    "--nulls",
    type=click.Choice(["skip", "keep"]),
    default="skip",
    show_default=True,
    help="skip: leave empty cells out of data; keep: send them as null (blanks the field).",
)
@click.option(
    "--format", "file_format", type=click.Choice(["csv", "parquet"]), help="Override the extension."
)
@click.option(
    "--type",
    "types",
    multiple=True,
    metavar="COLUMN:TYPE",
    help="CSV column type: int, float, bool, date, datetime, str.",
)
@click.option(
    "--delimiter",
    default=",",
    show_default=True,
    help="CSV field separator (a .tsv file: tab, unless given).",
)
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    help="The CSV file's text encoding: cp1251, latin-1, utf-16 (with its BOM), any Python knows.",
)
@click.option(
    "--null-value",
    "null_values",
    multiple=True,
    metavar="TEXT",
    help="A CSV cell equal to TEXT has no value (e.g. NULL, n/a): left out under --nulls skip. Repeatable.",
)
@click.option(
    "--date-format",
    metavar="FMT",
    help="How --type COL:date cells are written, in strftime's codes (e.g. %d.%m.%Y) [default: ISO 8601, 2024-12-31].",
)
@click.option(
    "--datetime-format",
    metavar="FMT",
    help="How --type COL:datetime cells are written, e.g. '%d.%m.%Y %H:%M' [default: ISO 8601].",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse the file before sending anything when a cell does not convert to its --type (else that row alone is rejected).",
)
@click.option(
    "--rename",
    multiple=True,
    metavar="COLUMN:FIELD",
    help="Send COLUMN as FIELD (other options then use FIELD). Repeatable.",
)
@click.option(
    "--exclude", multiple=True, metavar="COLUMN", help="Leave COLUMN out of the messages. Repeatable."
)
@click.option(
    "--on-duplicate-key",
    type=click.Choice(ON_DUPLICATE_KEY),
    default="last",
    show_default=True,
    help="Rows with one key (compared as the platform does): send the file's last or first of them "
    "(the others are skipped_duplicate), all of them (the platform keeps any), or fail before sending.",
)
@click.option(
    "--retry-errors",
    metavar="CODES",
    callback=lambda _ctx, _param, value: _codes(value),
    help="Error codes to send a row again for (comma-separated, e.g. 1,503: the platform's temporary "
    "failures), once every reply is in; with --resume, rows an earlier attempt ended with them go again too.",
)
@click.option(
    "--retry-attempts",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Times a row is sent again for --retry-errors.",
)
@click.option(
    "--retry-backoff",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds before the first retry; each next one waits twice as long.",
)
@amqp_options
@run_options
@click.option(
    "--reply-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds without replies before the rest are no_reply.",
)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="Processes sharing the rows, each with its own connection: for a client-bound link (TLS, remote broker).",
)
@click.option(
    "--via",
    type=click.Choice(["queue", "api"]),
    default="queue",
    show_default=True,
    help="queue: a database_import message per row; api: batches of rows through api_req (profiles/import_batch).",
)
@click.option(
    "--batch-size",
    type=int,
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Rows per batch request with --via api (at most 10,000; a message is also cut at 10 MB).",
)
@click.option(
    "--mode",
    type=click.Choice(["import", "add", "update"]),
    default="import",
    show_default=True,
    help="With --via api: import (insert or update), add (insert only) or update (update only).",
)
@click.option("--detect-geo", is_flag=True, help="With --via api: let the platform fill geo data.")
@click.option(
    "--token",
    "api_token",
    envvar=API_TOKEN_ENV,
    help=f"API token for --via api [env {API_TOKEN_ENV}: keeps it out of `ps`]; never printed.",
)
@click.option(
    "--api-queue", default=DEFAULT_API_QUEUE, show_default=True, help="The API request queue (--via api)."
)
@click.option(
    "--api-result-queue",
    default=DEFAULT_API_RESULT_QUEUE,
    show_default=True,
    help="The API response queue (--via api).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Read and build every message without connecting: what would be sent and rejected, and why.",
)
@output_options
def run(
    file: str,
    amqp_url: str,
    password_file: Path | None,
    queue: str,
    result_queue: str,
    declare: bool,
    result_ttl: float,
    api_queue: str,
    api_result_queue: str,
    types: tuple[str, ...],
    rename: tuple[str, ...],
    exclude: tuple[str, ...],
    summary_path: Path | None,
    progress: bool | None,
    dry_run: bool,
    quiet: bool,
    verbose: int,
    log_format: str,
    **options: Any,
) -> None:
    """Import FILE (.csv or .parquet): a database_import message per row, or (--via api) batches
    of rows through api_req.

    Every row ends with one status in the results file: ok, error (the platform's code and text),
    rejected (never sent: no valid key, a bad cell), skipped_duplicate (another row of its key was
    sent), not_sent (the run stopped first), not_confirmed (the broker did not take it) or no_reply.
    """
    _setup_logging(verbose, quiet)
    out = SummaryFile.start(None if dry_run else summary_path, file, options.get("db_id"))
    try:
        settings = broker_settings(
            amqp_url,
            password_file,
            result_queue,
            queue=queue,
            declare=declare,
            result_ttl=result_ttl,
            api_queue=api_queue,
            api_result_queue=api_result_queue,
        )
        opts = ImportOptions(
            types=_pairs(types, "--type"),
            rename=_pairs(rename, "--rename"),
            exclude=exclude,
            summary_path=summary_path,
            **options,
        )
        results = results_for(file, opts.results_path, opts.file_format)
        if opts.resume and is_streamed(file):
            kept = spool_path(file, results, opts.file_format)
            raise InputError(
                f"--resume reads the input again: resume from the copy the run kept, "
                f"bulk-import run {kept} --resume --results {results}"
            )
        with local_input(file, results, opts.file_format, opts.delimiter) as path:
            opts = replace(opts, results_path=results)
            if dry_run:
                _dry_run(path, opts, summary_path)
            observer = _observer(quiet, progress)
            summary = _run_async(lambda stop: run_import(path, opts, settings, stop=stop, observer=observer))
    except BulkImportError as exc:
        out.fail(exc)
    _report(summary, out)
    if (spool := spool_kept(file, summary.results, opts.file_format)) is not None:
        _say(
            f"the input is kept in {spool}: finish with "
            f"bulk-import run {spool} --resume --results {summary.results}"
        )
    sys.exit(summary.exit_code)


@cli.command(hidden=True)
@click.option("--relay-fd", type=int, required=True)
@click.option("--log-level", type=int, default=logging.INFO)
@click.option("--name", default="worker")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text")
def worker(relay_fd: int, log_level: int, name: str, log_format: str) -> None:
    """One of the processes of `run --workers N`, started by it: what to import comes over RELAY_FD."""
    _setup_logging(1 if log_level < logging.INFO else 0, log_level > logging.INFO, name)
    try:
        summary = _run_async(lambda stop: serve_worker(relay_fd, stop), who=name)
    except BulkImportError as exc:
        _say(f"[{name}] error: {exc}")
        sys.exit(exc.exit_code)
    sys.exit(summary.exit_code)


def _dry_run(file: Path, options: ImportOptions, summary_path: Path | None) -> NoReturn:
    checked = dry_run_file(file, options)
    rejected = sum(checked.rejected.values())
    click.echo(
        f"dry run, nothing sent: {checked.rows} rows, {checked.valid} would be sent, {rejected} rejected, "
        f"{checked.skipped_duplicates} skipped as duplicate keys ({checked.elapsed_s:.1f}s)",
        err=True,
    )
    for reason, n in checked.rejected.most_common():
        click.echo(f"  {n:>9}  {reason}", err=True)
    for row, reason in checked.examples:
        click.echo(f"  row {row}: {reason}", err=True)
    click.echo(f"data fields: {', '.join(checked.data_fields) or '(none)'}", err=True)
    if checked.first_message:
        click.echo("first message:", err=True)
        click.echo(orjson.dumps(orjson.loads(checked.first_message), option=orjson.OPT_INDENT_2).decode())
    if summary_path:
        summary_path.write_bytes(checked.to_json())
    sys.exit(checked.exit_code)


def _observer(quiet: bool, progress: bool | None) -> Observer:
    """A live bar on a terminal, a log line every 10 s otherwise (cron), nothing with --quiet."""
    if quiet or progress is False:
        return NullProgress()
    if progress or sys.stderr.isatty():
        return RichProgress()
    return LogProgress()


@dataclass
class SummaryFile:
    """``--summary``: written whatever the exit code (an error's too), so that monitoring never
    reads an earlier run's; with the input, the tool's version and the start and end times."""

    path: Path | None
    facts: dict[str, Any]

    @classmethod
    def start(cls, path: Path | None, file: str | Path | None, db_id: int | None) -> SummaryFile:
        facts = {
            "input": str(file) if file is not None else None,
            "db_id": db_id,
            "version": importlib.metadata.version("bulk-import"),
            "started_at": _now(),
        }
        return cls(path, facts)

    def write(self, doc: dict[str, Any]) -> None:
        if self.path is None:
            return
        data = orjson.dumps(
            {**doc, **self.facts, "ended_at": _now()}, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
        )
        try:
            write_atomic(self.path, data)
        except OSError as exc:
            _say(f"error: cannot write the summary {self.path}: {exc.strerror}")

    def fail(self, exc: BulkImportError) -> NoReturn:
        self.write({"exit_code": exc.exit_code, "error": str(exc)})
        _fail(exc)


def _codes(value: str | None) -> frozenset[int]:
    """``--retry-errors 1,503``: the codes, or a usage error naming what is not one."""
    if not value:
        return frozenset()
    try:
        return frozenset(int(code) for code in value.replace(" ", "").split(",") if code)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of error codes") from None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _report(summary: ImportSummary, out: SummaryFile, what: str = "rows") -> None:
    counts = ", ".join(f"{status} {n}" for status, n in summary.counts.items())
    _say(
        f"run {summary.run_id}: {summary.rows} {what} in {summary.elapsed_s:.1f}s "
        f"({summary.rows_per_s:.0f} {what}/s; published {summary.publish_rows_per_s:.0f} {what}/s): {counts}",
        run_id=summary.run_id,
        rows=summary.rows,
        counts=summary.counts,
        elapsed_s=summary.elapsed_s,
        rows_per_s=summary.rows_per_s,
        publish_rows_per_s=summary.publish_rows_per_s,
        exit_code=summary.exit_code,
    )
    _say(f"results: {summary.results}", results=str(summary.results))
    if summary.reason:
        _say(f"ended early: {summary.reason}")
    if summary.foreign_replies:
        owners = ", ".join(f"{owner} {n}" for owner, n in list(summary.foreign_owners.items())[:10])
        more = f" and {len(summary.foreign_owners) - 10} more" if len(summary.foreign_owners) > 10 else ""
        _say(
            f"foreign replies: {summary.foreign_replies} of other runs seen in the result queue and left "
            f"there for their owners (by run id: {owners}{more}); `bulk-import replies` lists them"
        )
    if summary.journal:
        _say(f"unfinished: run again with --resume to finish (journal {summary.journal})")
    out.write(summary.to_dict())


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("results", type=click.Path(path_type=Path))
@click.option(
    "--failed",
    type=click.Path(path_type=Path),
    help="Write the input's rows that are not ok here, as they were, with bulk_import_row, _status, "
    "_error and _error_text (which run never sends): the night's command imports them again.",
)
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path),
    help="The file the run read, for --failed [default: the one beside RESULTS named as its default results].",
)
@click.option(
    "--delimiter", default=",", show_default=True, help="The input's CSV separator, as given to run."
)
@click.option(
    "--encoding", default="utf-8", show_default=True, help="The input's CSV encoding, as given to run."
)
@click.option("--top", type=int, default=10, show_default=True, help="Kinds of problem listed.")
def report(
    results: Path, failed: Path | None, input_path: Path | None, delimiter: str, encoding: str, top: int
) -> None:
    """What became of the rows of a RESULTS file: rows per status, the commonest problems.

    Exits as the run that wrote it did, so a cron job can check a results file later.
    """
    try:
        got = report_results(results, top)
        if failed is not None:
            source = input_path or input_of(results)
            written = write_failed_rows(results, source, failed, delimiter=delimiter, encoding=encoding)
    except BulkImportError as exc:
        _fail(exc)
    click.echo(f"{results}: {got.rows} rows")
    for status, n in got.counts.items():
        click.echo(f"  {status:<14}{n:>10}")
    if got.problems:
        click.echo("not ok, commonest first (rows, status, error, text):")
    for status, error, text, n in got.problems:
        click.echo(f"  {n:>9}  {status:<14}{error:<6}{text}")
    if failed is not None:
        click.echo(f"{written} rows not ok written to {failed}, from {source}")
    sys.exit(summary_exit_code(got.counts))


@cli.command()
@click.argument("rows", type=int)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same contacts.")
def sample(rows: int, path: Path, seed: int) -> None:
    """Write ROWS synthetic contacts to PATH (.csv or .parquet)."""
    try:
        write_sample(rows, path, seed)
    except BulkImportError as exc:
        _fail(exc)
    click.echo(f"wrote {rows} rows to {path}", err=True)


@cli.command(
    epilog="Error codes it replies with:\n\n"
    + "\n\n".join(f"{code}  {text}" for code, text in sorted(ERROR_CODES.items()))
    + "\n\nOn api_req, a call that fails as a whole:\n\n"
    + "\n\n".join(f"{code}  {text}" for code, text in sorted(API_ERROR_CODES.items()))
)
@amqp_options
@click.option(
    "--api-queue",
    default=DEFAULT_API_QUEUE,
    show_default=True,
    help="Also serve API calls (profiles/import_batch, add_batch, update_batch, import) from this queue; '' serves database_import alone.",
)
@click.option(
    "--api-result-queue",
    default=DEFAULT_API_RESULT_QUEUE,
    show_default=True,
    help="Where API responses go (a call with a request_id is answered).",
)
@click.option(
    "--token",
    envvar=API_TOKEN_ENV,
    help=f"The API token an api_req call must carry, or it is answered 401 [env {API_TOKEN_ENV}]; without it any token is accepted.",
)
@click.option(
    "--tariff-limit",
    type=int,
    help="Answer API calls 402 (tariff limit) once this many profiles have been imported through api_req.",
)
@click.option(
    "--store", type=click.Path(path_type=Path), help="Keep profiles in this SQLite file across restarts."
)
@click.option(
    "--prefetch", type=int, default=4096, show_default=True, help="Requests taken from the broker at once."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault knobs below.")
@click.option("--drop", type=float, default=0.0, help="Share of replies never sent (0-1).")
@click.option("--duplicate", type=float, default=0.0, help="Share of replies sent twice.")
@click.option(
    "--error",
    "error_share",
    type=float,
    default=0.0,
    help="Share of requests answered with a temporary error.",
)
@click.option(
    "--error-times",
    type=click.IntRange(min=0),
    help="A request answered with --error fails this many times, then is served (sent again, it goes "
    "through) [default: it always fails].",
)
@click.option("--delay", type=float, default=0.0, help="Seconds each reply is held back.")
@click.option("--malformed", type=float, default=0.0, help="Share of replies sent malformed.")
@click.option("--exit-after", type=int, help="Exit abruptly (code 75) after receiving this many requests.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("-v", "--verbose", count=True, help="More log lines.")
def emulate(
    amqp_url: str,
    password_file: Path | None,
    queue: str,
    result_queue: str,
    declare: bool,
    result_ttl: float,
    api_queue: str,
    api_result_queue: str,
    token: str | None,
    tariff_limit: int | None,
    store: Path | None,
    prefetch: int,
    seed: int,
    drop: float,
    duplicate: float,
    error_share: float,
    error_times: int | None,
    delay: float,
    malformed: float,
    exit_after: int | None,
    quiet: bool,
    verbose: int,
) -> None:
    """Stand in for the platform's job server: consume requests, import into a local store, reply.

    For demos, tests and benchmarks where the platform is out of reach. It serves database_import
    and the API calls on api_req that import profiles, on one store. Runs until SIGINT/SIGTERM,
    then prints its counts. The fault options make it misbehave on purpose, repeatably by --seed.
    """
    _setup_logging(verbose, quiet)
    try:
        settings = EmulatorSettings(
            broker=broker_settings(
                amqp_url, password_file, result_queue, queue=queue, declare=declare, result_ttl=result_ttl
            ),
            store_path=store,
            prefetch=prefetch,
            seed=seed,
            drop=drop,
            duplicate=duplicate,
            error=error_share,
            error_times=error_times,
            delay=delay,
            malformed=malformed,
            exit_after=exit_after,
            api_queue=api_queue or None,
            api_result_queue=api_result_queue,
            token=token,
            tariff_limit=tariff_limit,
        )

        async def serve_until_signal(stop: asyncio.Event) -> EmulatorCounts:
            return await serve_until_stopped(settings, stop, lambda: log.info("emulator ready on %s", queue))

        counts = _run_async(serve_until_signal, second_signal_exits=False)
    except BulkImportError as exc:
        _fail(exc)
    click.echo(" ".join(f"{k}={v}" for k, v in asdict(counts).items()), err=True)


@cli.command("api")
@click.argument("path", required=False)
@connection_options
@click.option("--body", "body_text", help="The API request body: JSON, or @FILE.json.")
@click.option(
    "--requests",
    "requests_file",
    type=click.Path(path_type=Path),
    help='Send every call of this JSON-lines file ({"request": PATH, "body": {...}} a line) as a run does: window, confirms, journal, --resume; a results line per call.',
)
@click.option(
    "--token", "api_token", envvar=API_TOKEN_ENV, help=f"API token put into the body [env {API_TOKEN_ENV}]."
)
@click.option(
    "--account",
    "account_id",
    type=int,
    default=1,
    show_default=True,
    envvar="BULK_IMPORT_ACCOUNT",
    help="account_id of the message.",
)
@click.option("--api-queue", default=DEFAULT_API_QUEUE, show_default=True, help="The API request queue.")
@click.option(
    "--api-result-queue", default=DEFAULT_API_RESULT_QUEUE, show_default=True, help="The API response queue."
)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for the response (--requests: without any response, before the rest are no_reply).",
)
@click.option("--no-wait", is_flag=True, help="Send without a request_id: no response is asked for.")
@click.option("--declare", is_flag=True, help="Create the API queues when they are missing (durable).")
@run_options
@output_options
def api(
    path: str | None,
    amqp_url: str,
    password_file: Path | None,
    result_queue: str,
    body_text: str | None,
    requests_file: Path | None,
    api_token: str | None,
    account_id: int,
    api_queue: str,
    api_result_queue: str,
    timeout: float,
    no_wait: bool,
    declare: bool,
    summary_path: Path | None,
    progress: bool | None,
    quiet: bool,
    verbose: int,
    log_format: str,
    **options: Any,
) -> None:
    """Call the API method PATH over RabbitMQ (api_req) and print its response body as JSON; or
    with --requests FILE, make every call of a file and write a results line for each.

    \b
    Exit codes: 0 the response's error is 0 (or --no-wait: the broker took the request),
    1 the response carries an error, 2 usage, 3 the broker, 4 no response within --timeout.
    With --requests, as `run`: 0 every call answered without error, 1 some with an error or
    refused, 4 some unanswered (--resume goes on).
    """
    _setup_logging(verbose, quiet or requests_file is None)
    out = SummaryFile.start(summary_path, requests_file, None)
    try:
        settings = broker_settings(
            amqp_url,
            password_file,
            result_queue,
            api_queue=api_queue,
            api_result_queue=api_result_queue,
            declare=declare,
        )
        if requests_file is not None:
            if path is not None or body_text is not None or no_wait:
                raise InputError(
                    "--requests FILE makes the calls the file lists: no PATH, --body or --no-wait"
                )
            opts = ImportOptions(
                db_id=0,
                account_id=account_id,
                via="calls",
                api_token=api_token,
                reply_timeout=timeout,
                summary_path=summary_path,
                **options,
            )
            observer = _observer(quiet, progress)
            summary = _run_async(
                lambda stop: run_import(requests_file, opts, settings, stop=stop, observer=observer)
            )
            _report(summary, out, "calls")
            sys.exit(summary.exit_code)
        if path is None or body_text is None:
            raise InputError("give the API method PATH and its --body, or --requests FILE")
        call = ApiCall(path, parse_body(body_text), account_id, api_token)
        response = _run_async(lambda stop: call_api(settings, call, wait=not no_wait, timeout=timeout))
    except BulkImportError as exc:
        out.fail(exc)
    if no_wait:
        click.echo("sent", err=True)
        sys.exit(errors.EXIT_OK)
    if response is None:
        click.echo(f"error: no response on {api_result_queue} within {timeout:g}s", err=True)
        sys.exit(errors.EXIT_INCOMPLETE)
    click.echo(orjson.dumps(response, option=orjson.OPT_INDENT_2).decode())
    sys.exit(errors.EXIT_OK if response.get("error", 0) == 0 else errors.EXIT_ROWS_FAILED)


@cli.command("replies", epilog=EXIT_CODES_HELP)
@connection_options
@click.option(
    "--remove", "remove", metavar="RUN_ID", help="Delete the replies of this run id, and only those."
)
@click.option(
    "--idle", type=float, default=1.0, show_default=True, help="Seconds of quiet that end the reading."
)
def replies(
    amqp_url: str, password_file: Path | None, result_queue: str, remove: str | None, idle: float
) -> None:
    """List what waits in the shared reply queue, by run id, and leave it there.

    Every reply goes back to the queue as it was (same message, same expiry); with --remove, the
    replies of that run id are deleted instead: an abandoned run's, say, once nobody will read them.
    """
    _setup_logging(0, True)
    try:
        settings = broker_settings(amqp_url, password_file, result_queue)
        listing = _run_async(lambda stop: list_replies(settings, remove=remove, idle_s=idle))
    except BulkImportError as exc:
        _fail(exc)
    click.echo(f"{listing.queue}: {listing.ready} replies ready, {listing.seen} read and put back")
    if listing.owners:
        click.echo(f"  {'run id':<20}{'replies':>10}  oldest (UTC)")
    for owner in listing.owners:
        when = owner.oldest.strftime("%Y-%m-%d %H:%M:%S") if owner.oldest else "-"
        click.echo(f"  {owner.run_id:<20}{owner.count:>10}  {when}")
    if remove is not None:
        click.echo(f"removed {listing.removed} replies of run {remove}")


def main() -> None:
    """Console entry point: a bug exits 70 with its traceback, never 1."""
    map_large_blocks()
    try:
        cli.main(standalone_mode=True)
    except SystemExit:
        raise
    except Exception:
        logging.getLogger("bulk_import").exception("internal error")
        sys.exit(errors.EXIT_INTERNAL)
