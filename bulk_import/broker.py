"""The edge to RabbitMQ: connect, check or declare the queues, and turn aiormq's errors into ours.

Nothing above this module sees an aiormq exception: :func:`map_amqp_errors` translates them once
(the way httpx maps httpcore's errors in its transport).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import aiormq
import aiormq.exceptions as amqp_errors

from .config import BrokerSettings
from .delivery import Tap, TapTransport
from .errors import (
    AccessRefused,
    AuthenticationFailed,
    BrokerError,
    BrokerRefused,
    BrokerUnreachable,
    ConnectionLost,
    QueueMissing,
)
from .publisher import BLOCKED_CHECK_S, unblocked

log = logging.getLogger(__name__)


#: Reply codes after which trying again cannot help (AMQP 0-9-1 §1.9, RabbitMQ's own use of them):
#: a refusal, a missing or differently declared queue, an exclusive queue, a protocol error.
#: 320 (an operator or a shutdown closed the connection), 506 (out of resources) and 541 (internal
#: error) pass: they are reconnected like a dropped connection.
REFUSALS = {
    311: "CONTENT_TOO_LARGE",
    312: "NO_ROUTE",
    313: "NO_CONSUMERS",
    402: "INVALID_PATH",
    403: "ACCESS_REFUSED",
    404: "NOT_FOUND",
    405: "RESOURCE_LOCKED",
    406: "PRECONDITION_FAILED",
    501: "FRAME_ERROR",
    502: "SYNTAX_ERROR",
    503: "COMMAND_INVALID",
    504: "CHANNEL_ERROR",
    505: "UNEXPECTED_FRAME",
    530: "NOT_ALLOWED",
    540: "NOT_IMPLEMENTED",
}
_CODES = {
    amqp_errors.ChannelAccessRefused: 403,
    amqp_errors.ChannelNotFoundEntity: 404,
    amqp_errors.ChannelLockedResource: 405,
    amqp_errors.ChannelPreconditionFailed: 406,
    amqp_errors.ConnectionFrameError: 501,
    amqp_errors.ConnectionSyntaxError: 502,
    amqp_errors.ConnectionCommandInvalid: 503,
    amqp_errors.ConnectionChannelError: 504,
    amqp_errors.ConnectionUnexpectedFrame: 505,
    amqp_errors.ConnectionResourceError: 506,
    amqp_errors.ConnectionNotAllowed: 530,
    amqp_errors.ConnectionNotImplemented: 540,
    amqp_errors.ConnectionInternalError: 541,
}
_REFUSED_ON = re.compile(
    r"access to (queue|exchange) '([^']*)' in vhost '([^']*)' refused for user '([^']*)'"
)


def reply_code(exc: BaseException) -> int | None:
    """The AMQP reply code a broker closed a channel or connection with, if it was the broker."""
    for cls, code in _CODES.items():
        if isinstance(exc, cls):
            return code
    if isinstance(exc, amqp_errors.ChannelClosed | amqp_errors.ConnectionClosed) and exc.args:
        first = exc.args[0]
        return first if isinstance(first, int) else None
    return None


def refusal(exc: BaseException, where: str) -> BrokerError | None:
    """The error to stop with when ``exc`` is a refusal by the broker; None when reconnecting may help."""
    code = reply_code(exc)
    if code not in REFUSALS:
        return None
    text = _reason(exc)
    if code == 403:
        found = _REFUSED_ON.search(text)
        if found:
            kind, name, vhost, user = found.groups()
            needs = "write" if kind == "exchange" else "read"
            action = "publish to" if kind == "exchange" else "consume from"
            name = name if name != "amq.default" else "the default exchange (amq.default)"
            return AccessRefused(
                f"user {user!r} may not {action} {name} in vhost {vhost!r}: it needs {needs} "
                f"permission there (rabbitmqctl set_permissions -p {vhost} {user} ...)"
            )
        return AccessRefused(f"the broker at {where} refused access: {text}")
    if code == 404:
        return QueueMissing(f"{text} at {where}")
    return BrokerRefused(f"the broker at {where} refused an operation ({REFUSALS[code]}): {text}")


@contextmanager
def map_amqp_errors(settings: BrokerSettings) -> Iterator[None]:
    """Re-raise aiormq and socket errors as :class:`BrokerError` with a line a user can act on.

    A refusal (:data:`REFUSALS`) stops the run; anything else that ends a connection or channel is
    :class:`ConnectionLost`, which the run reconnects from.
    """
    where = settings.safe_url
    try:
        yield
    except BrokerError:
        raise
    except (amqp_errors.AuthenticationError, amqp_errors.ProbableAuthenticationError):
        raise AuthenticationFailed(
            f"the broker at {where} refused the login: check the user and password"
        ) from None
    except amqp_errors.InvalidFrameError as exc:
        if "Connection.Close" in str(exc):
            raise AuthenticationFailed(
                f"the broker at {where} refused the connection: the vhost does not exist "
                "or the user has no permission on it"
            ) from None
        raise ConnectionLost(f"the broker at {where} sent an unexpected frame: {exc}") from None
    except TimeoutError:  # before OSError, of which it is a subclass
        raise BrokerUnreachable(f"the broker at {where} did not answer in time") from None
    except (
        amqp_errors.AMQPError,
        ConnectionError,
        OSError,
        amqp_errors.ChannelInvalidStateError,
    ) as exc:
        refused = refusal(exc, where)
        if refused is not None:
            raise refused from None
        raise ConnectionLost(f"cannot talk to the broker at {where}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    args = [str(a) for a in exc.args if a is not None and not isinstance(a, int)]
    if isinstance(exc, amqp_errors.AMQPConnectionError) and exc.args and isinstance(exc.args[0], int):
        return args[0] if args else str(exc)
    return "; ".join(args) or type(exc).__name__


async def connect(settings: BrokerSettings, *, tap: Tap | None = None) -> aiormq.Connection:
    """An open connection, or :class:`BrokerUnreachable` / :class:`AuthenticationFailed`.

    With a ``tap``, one channel's deliveries are read in bulk (:mod:`bulk_import.delivery`).
    """
    url = settings.url
    if "heartbeat" not in parse_qs(urlsplit(url).query):
        url += f"{'&' if '?' in url else '?'}heartbeat={settings.heartbeat}"
    connection = aiormq.Connection(url, transport_factory=None if tap is None else TapTransport(tap))
    try:
        with map_amqp_errors(settings):
            async with asyncio.timeout(settings.connect_timeout):
                await connection.connect()
                return connection
    except ConnectionLost as exc:
        raise BrokerUnreachable(str(exc).replace("cannot talk to", "cannot connect to")) from None


async def open_channel(
    connection: aiormq.Connection, settings: BrokerSettings, *, confirms: bool
) -> aiormq.Channel:
    with map_amqp_errors(settings):
        channel = await connection.channel(publisher_confirms=confirms)
        assert isinstance(channel, aiormq.Channel)
        return channel


async def ensure_queues(
    connection: aiormq.Connection, settings: BrokerSettings, *queues: str
) -> dict[str, int]:
    """Check each queue, and with ``declare`` create the missing ones; message counts by name.

    A queue that exists is left exactly as it is: declaring it again with other arguments than
    its owner did (the platform's result queue has a message TTL) is a refusal. Each check gets
    its own channel, since a missing queue closes the channel it was asked on.
    """
    counts: dict[str, int] = {}
    for name in queues:
        try:
            counts[name] = await _queue_check(connection, settings, name, passive=True)
        except QueueMissing:
            if not settings.declare:
                raise QueueMissing(
                    f"the queue {name!r} does not exist at {settings.safe_url}: the platform creates it; "
                    "check the vhost in the AMQP URL, or pass --declare to create it"
                ) from None
            counts[name] = await _queue_check(connection, settings, name, passive=False)
            log.info("created the queue %r", name)
    return counts


def queue_arguments(settings: BrokerSettings, name: str) -> dict[str, int]:
    """The arguments the platform declares a queue with: its result queue has a message TTL."""
    if name == settings.result_queue and settings.result_ttl:
        return {"x-message-ttl": int(settings.result_ttl * 1000)}
    return {}


async def _queue_check(
    connection: aiormq.Connection, settings: BrokerSettings, name: str, *, passive: bool
) -> int:
    channel = await open_channel(connection, settings, confirms=False)
    try:
        with map_amqp_errors(settings):
            if passive:
                ok = await channel.queue_declare(name, passive=True)
            else:
                ok = await channel.queue_declare(
                    name,
                    durable=True,
                    arguments=queue_arguments(settings, name),  # type: ignore[arg-type]
                )
    except AccessRefused as exc:
        if passive:
            raise
        raise AccessRefused(f"{exc}; creating the queue {name!r} needs configure permission") from None
    finally:
        if not channel.is_closed:
            await channel.close()
    return ok.message_count or 0


async def consumer_count(connection: aiormq.Connection, settings: BrokerSettings, name: str) -> int | None:
    """How many consumers the queue ``name`` has now; None when the broker cannot say."""
    try:
        channel = await open_channel(connection, settings, confirms=False)
    except (aiormq.exceptions.AMQPError, BrokerError, OSError):
        return None
    try:
        ok = await channel.queue_declare(name, passive=True)
    except (aiormq.exceptions.AMQPError, OSError):
        return None
    finally:
        if not channel.is_closed:
            await channel.close()
    return ok.consumer_count


#: A routing key no queue can have (names starting ``amq.`` are the broker's): a message sent to it
#: through the default exchange is dropped, yet the broker checks the write permission first.
UNROUTABLE = "amq.bulk-import.write-check"


async def check_write(channel: aiormq.Channel, settings: BrokerSettings, stop: asyncio.Event) -> None:
    """Fail now, before anything is recorded, when the user may not publish on the default exchange.

    A broker under a resource alarm blocks the connection once it publishes, and so the check
    (and every frame after it) until the alarm clears: that is said once, and a stop ends the wait.
    """
    free = unblocked(channel.connection)
    with map_amqp_errors(settings):
        check = asyncio.ensure_future(channel.basic_publish(b"", exchange="", routing_key=UNROUTABLE))
        stopping = asyncio.ensure_future(stop.wait())
        clear = asyncio.ensure_future(free.wait())
        try:
            said = False
            while not (check.done() and free.is_set()):
                waits = {stopping, check if not check.done() else clear}
                await asyncio.wait(waits, timeout=BLOCKED_CHECK_S, return_when="FIRST_COMPLETED")
                if check.done() and free.is_set():
                    break
                if stop.is_set():
                    raise BrokerUnreachable(
                        "stopped while the broker was blocking publishing (a resource alarm)"
                    )
                if not said and not free.is_set():
                    said = True
                    log.warning(
                        "publishing paused: the broker is blocking this connection (a resource alarm)"
                    )
            check.result()
            if said:
                log.warning("publishing resumed: the broker unblocked this connection")
        finally:
            for waiter in (check, stopping, clear):
                waiter.cancel()


async def close_quietly(connection: aiormq.Connection | None) -> None:
    """Close without raising: used on the way out, when the run's own outcome matters more."""
    if connection is None or connection.is_closed:
        return
    try:
        async with asyncio.timeout(5):
            await connection.close()
    except Exception as exc:
        log.debug("closing the connection failed: %r", exc)
