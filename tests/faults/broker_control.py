"""Doing things to the real broker, each undone afterwards so the next test finds it as it was."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers import queue_state


def rabbitmqctl(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=timeout, check=True
    )
    return done.stdout.strip()


def wait_until_up(timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rabbitmqctl("await_startup", timeout=30)
            queue_state("amq.rabbitmq.never-exists")
            return
        except Exception:
            time.sleep(1)
    raise RuntimeError("RabbitMQ did not come back")


def close_all_connections(reason: str = "fault test") -> None:
    rabbitmqctl("close_all_connections", reason)


@contextmanager
def app_stopped() -> Iterator[None]:
    """Stop the broker application (every connection drops); start it again on the way out."""
    rabbitmqctl("stop_app")
    try:
        yield
    finally:
        rabbitmqctl("start_app")
        wait_until_up()


def memory_watermark() -> str:
    return rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")


@contextmanager
def memory_alarm() -> Iterator[None]:
    """Raise the memory alarm (publishers are blocked); restore the watermark on the way out."""
    before = memory_watermark()
    rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
    try:
        deadline = time.monotonic() + 30
        while "memory" not in rabbitmqctl("eval", "rabbit_alarm:get_alarms()."):
            assert time.monotonic() < deadline, "the memory alarm did not go off"
            time.sleep(0.2)
        yield
    finally:
        absolute = re.fullmatch(r"\{absolute,\s*(\d+)\}", before)
        if absolute:
            rabbitmqctl("set_vm_memory_high_watermark", "absolute", absolute.group(1))
        else:
            rabbitmqctl("set_vm_memory_high_watermark", before if re.fullmatch(r"[\d.]+", before) else "0.4")


@contextmanager
def vhost_without_permission(name: str) -> Iterator[str]:
    """A vhost the guest user may not use."""
    rabbitmqctl("add_vhost", name)
    try:
        yield name
    finally:
        rabbitmqctl("delete_vhost", name)
