"""One call of the platform's HTTP API over RabbitMQ: a request on ``api_req``, its response on ``api_resp``.

The response queue is shared like the import result queue, so the response is found by its
``request_id`` with the same consumer as a run's replies; whatever else is there goes back as it was.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiormq
import orjson

from . import broker
from .calls import ApiCall
from .config import BrokerSettings
from .consumer import ReplyConsumer
from .delivery import Tap
from .journal import new_run_id
from .messages import Answers, parse_request_id, request_id
from .protocols import Read


async def call_api(
    settings: BrokerSettings, call: ApiCall, *, wait: bool, timeout: float
) -> dict[str, Any] | None:
    """Publish the call (persistent, confirmed); with ``wait``, its response body, or None in time."""
    tap = Tap()
    connection = await broker.connect(settings, tap=tap)
    try:
        queues = [settings.api_queue, settings.api_result_queue] if wait else [settings.api_queue]
        await broker.ensure_queues(connection, settings, *queues)
        run_id = new_run_id()
        rid = request_id(run_id, 0, 1) if wait else None
        got: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def read(body: bytes, owner_id: str) -> Read:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                return None, None
            parsed = parse_request_id(doc.get("request_id")) if isinstance(doc, dict) else None
            if parsed is None or parsed[0] != owner_id:
                return (parsed[0] if parsed else None), None
            response = doc.get("body")
            if not got.done():
                got.set_result(response if isinstance(response, dict) else {"body": response})
            return owner_id, Answers((0,), (0,), ("",), ("",), "", doc["request_id"])

        consumer = ReplyConsumer(
            run_id,
            settings.api_result_queue,
            on_replies=lambda replies: None,
            before_ack=lambda: None,
            read=read,
        )
        consuming: asyncio.Task[None] | None = None
        if wait:
            channel = await broker.open_channel(connection, settings, confirms=False)
            with broker.map_amqp_errors(settings):
                await consumer.attach(tap, channel)
            consuming = asyncio.create_task(consumer.run())
        publish = await broker.open_channel(connection, settings, confirms=True)
        with broker.map_amqp_errors(settings):
            await publish.basic_publish(
                call.message(rid),
                routing_key=settings.api_queue,
                mandatory=True,
                properties=aiormq.spec.Basic.Properties(
                    delivery_mode=2, content_type="text/plain", message_id=rid, timestamp=datetime.now(UTC)
                ),
            )
        if consuming is None:
            return None
        try:
            async with asyncio.timeout(timeout):
                return await got
        except TimeoutError:
            return None
        finally:
            consumer.stop()
            await asyncio.wait({consuming}, timeout=5)
            await consumer.flush_acks(final=True)
    finally:
        await broker.close_quietly(connection)
