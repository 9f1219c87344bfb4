"""The edge to RabbitMQ: connect, check or declare the queues, and turn aiormq's errors into ours.

Nothing above this module sees an aiormq exception: :func:`map_amqp_errors` translates them once
(the way httpx maps httpcore's errors in its transport).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import aiormq
import aiormq.exceptions as amqp_errors

from .config import BrokerSettings
from .delivery import Tap, TapTransport
from .errors import (
    AuthenticationFailed,
    BrokerError,
    BrokerUnreachable,
    ConnectionLost,
    QueueMissing,
)

log = logging.getLogger(__name__)


@contextmanager
def map_amqp_errors(settings: BrokerSettings) -> Iterator[None]:
    """Re-raise aiormq and socket errors as :class:`BrokerError` with a line a user can act on."""
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
    except amqp_errors.ChannelAccessRefused as exc:
        raise AuthenticationFailed(f"the broker at {where} refused access: {_reason(exc)}") from None
    except amqp_errors.ChannelNotFoundEntity as exc:
        raise QueueMissing(f"{_reason(exc)} at {where}") from None
    except amqp_errors.ChannelPreconditionFailed as exc:
        raise BrokerError(
            f"the broker at {where} refused an operation (PRECONDITION_FAILED): {_reason(exc)}"
        ) from None
    except TimeoutError:  # before OSError, of which it is a subclass
        raise BrokerUnreachable(f"the broker at {where} did not answer in time") from None
    except (
        amqp_errors.AMQPError,
        ConnectionError,
        OSError,
        amqp_errors.ChannelInvalidStateError,
    ) as exc:
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
    connection = aiormq.Connection(settings.url, transport_factory=None if tap is None else TapTransport(tap))
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
    """Check (or with ``declare``, create durable) each queue; its message count by name.

    Each passive check gets its own channel: a missing queue closes the channel it was asked on.
    """
    counts: dict[str, int] = {}
    for name in queues:
        channel = await open_channel(connection, settings, confirms=False)
        try:
            with map_amqp_errors(settings):
                if settings.declare:
                    ok = await channel.queue_declare(name, durable=True)
                else:
                    ok = await channel.queue_declare(name, passive=True)
        except QueueMissing:
            raise QueueMissing(
                f"the queue {name!r} does not exist at {settings.safe_url}: the platform creates it; "
                "check the vhost in the AMQP URL, or pass --declare to create it"
            ) from None
        finally:
            if not channel.is_closed:
                await channel.close()
        counts[name] = ok.message_count or 0
    return counts


async def close_quietly(connection: aiormq.Connection | None) -> None:
    """Close without raising: used on the way out, when the run's own outcome matters more."""
    if connection is None or connection.is_closed:
        return
    try:
        async with asyncio.timeout(5):
            await connection.close()
    except Exception as exc:
        log.debug("closing the connection failed: %r", exc)
