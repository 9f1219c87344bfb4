"""A good citizen on the platform's broker: other runs' replies, the platform's queues, refusals, secrets.

Each case runs the real CLI against the real broker and the stand-in, on queues (or a vhost) of
its own, and puts the broker back as it found it.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiormq
import orjson
import polars as pl
import pytest

from bulk_import.consumer import ALIVE_S, HOLD_ALIVE_S, HOLD_IDLE_S
from tests.faults import broker_control
from tests.faults.proxy import relay_to_broker
from tests.faults.test_faults import ROWS, accounted, exited, note, run_args, start_run, when_replies_reach
from tests.helpers import (
    AMQP_URL,
    Queues,
    declare,
    delete,
    emulator,
    queue_state,
    run_cli,
    status_counts,
)

pytestmark = [pytest.mark.broker, pytest.mark.faults]

Message = tuple[bytes, str | None, dict[str, object] | None, str | None]


async def _drain_snapshot(queue: str) -> list[Message]:
    """Every ready message of ``queue`` (body, message_id, headers, expiration), put back unchanged."""
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        got: list[Message] = []
        tags: list[int] = []
        while True:
            message = await channel.basic_get(queue, no_ack=False)
            if isinstance(message.delivery, aiormq.spec.Basic.GetEmpty):
                break
            p = message.header.properties
            got.append((message.body, p.message_id, p.headers, p.expiration))
            tags.append(message.delivery_tag)
        if tags:
            await channel.basic_nack(max(tags), multiple=True, requeue=True)
        return got
    finally:
        await connection.close()


def snapshot(queue: str) -> list[Message]:
    return sorted(asyncio.run(_drain_snapshot(queue)), key=repr)


def publish_foreign(queue: str, messages: list[tuple[bytes, str | None]]) -> None:
    async def go() -> None:
        connection = await aiormq.connect(AMQP_URL)
        channel = await connection.channel()
        for body, message_id in messages:
            await channel.basic_publish(
                body,
                routing_key=queue,
                properties=aiormq.spec.Basic.Properties(
                    delivery_mode=2, message_id=message_id, headers={"origin": "another-importer"}
                ),
            )
        await connection.close()

    asyncio.run(go())


def abandoned_and_odd(count: int) -> list[tuple[bytes, str | None]]:
    """An abandoned run's replies, and replies nobody can attribute (as the platform may send them)."""
    out: list[tuple[bytes, str | None]] = [
        (
            orjson.dumps({"error": 0, "error_text": "", "feedback_id": f"deadbeef00-{i}", "profile_id": "p"}),
            f"m{i}",
        )
        for i in range(count)
    ]
    out += [
        (orjson.dumps({"error": 0, "profile_id": "no-feedback-id"}), None),
        (orjson.dumps({"error": 0, "feedback_id": ""}), None),
        (orjson.dumps({"error": 0, "feedback_id": 12345}), None),
        (orjson.dumps({"error": "0", "feedback_id": "otherrun-7"}), "x"),
        (b"not json at all", None),
    ]
    return out


def test_two_runs_share_a_result_queue_with_strangers_in_it(
    samples: dict[str, Path], queues: Queues, tmp_path: Path
) -> None:
    """Two runs at once, an abandoned run's replies and unattributable ones already in the queue:
    both runs finish all ok, and every message not theirs is still there, byte for byte."""
    declare(queues.request)
    declare(queues.result, arguments={"x-message-ttl": 3_600_000})
    publish_foreign(queues.result, abandoned_and_odd(300))
    before = snapshot(queues.result)
    assert len(before) == 305
    data, rows = samples["small.csv"], 500
    with emulator(queues):
        procs = [
            start_run(data, queues, tmp_path / f"r{i}.csv", "--summary", str(tmp_path / f"s{i}.json"))
            for i in range(2)
        ]
        outs = [p.communicate(timeout=600) for p in procs]
    for i, (proc, (_, err)) in enumerate(zip(procs, outs, strict=True)):
        assert exited(proc) == 0, err
        assert status_counts(accounted(rows, tmp_path / f"r{i}.csv")) == {"ok": rows}
        summary = orjson.loads((tmp_path / f"s{i}.json").read_bytes())
        assert summary["foreign_replies"] >= 1
        assert "foreign replies" in err
    after = snapshot(queues.result)
    # Redelivery marks a message, but body, id, headers and expiry are the ones that went in.
    assert after == before


def test_foreign_replies_come_round_rarely(samples: dict[str, Path], queues: Queues, tmp_path: Path) -> None:
    """With replies of a run that nobody reads in the queue, a run re-receives each only a few times."""
    declare(queues.request, queues.result)
    publish_foreign(queues.result, abandoned_and_odd(2000))
    with emulator(queues, "--delay", "0"):
        done = run_cli(
            *run_args(
                samples["100k.parquet"],
                queues,
                tmp_path / "r.csv",
                "--summary",
                str(tmp_path / "s.json"),
                "-v",
            )
        )
    assert exited(done) == 0, done.stderr
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert summary["foreign_replies"] == 2005
    assert summary["foreign_owners"]["deadbeef00"] == 2000
    assert queue_state(queues.result)[0] == 2005
    deliveries = summary["foreign_deliveries"]
    elapsed = summary["elapsed_s"]
    # Once when first seen, every HOLD_ALIVE_S while its run looks alive (ALIVE_S after that), then
    # every HOLD_IDLE_S; one more for slack: a few times a minute, not hundreds of times a second.
    per_reply = 1 + ALIVE_S / HOLD_ALIVE_S + 1 + elapsed / HOLD_IDLE_S + 1
    note(foreign_deliveries_per_reply=round(deliveries / 2005, 1), elapsed=elapsed)
    assert deliveries <= 2005 * per_reply


def test_replies_lists_by_owner_and_removes_only_the_named_run(queues: Queues) -> None:
    declare(queues.result)
    publish_foreign(queues.result, abandoned_and_odd(40))
    before = snapshot(queues.result)
    listed = run_cli("replies", "--result-queue", queues.result)
    assert listed.returncode == 0, listed.stderr
    assert "deadbeef00" in listed.stdout and " 40 " in listed.stdout
    assert snapshot(queues.result) == before
    removed = run_cli("replies", "--result-queue", queues.result, "--remove", "deadbeef00")
    assert removed.returncode == 0, removed.stderr
    assert "removed 40" in removed.stdout
    assert snapshot(queues.result) == [m for m in before if b"deadbeef00" not in m[0]]


def test_declare_leaves_the_platforms_queues_as_they_are(
    samples: dict[str, Path], queues: Queues, tmp_path: Path
) -> None:
    """--declare against a result queue with a message TTL (as the platform makes it) creates nothing."""
    declare(queues.result, arguments={"x-message-ttl": 86_400_000})
    with emulator(queues):  # the stand-in passes --declare
        done = run_cli(
            "run",
            samples["small.csv"],
            "--db",
            "1",
            *queues.args(),
            "--declare",
            "--results",
            tmp_path / "r.csv",
        )
    assert exited(done) == 0, done.stderr
    # Declared again with the platform's arguments: equivalent, so the queue is the one it was.
    declare(queues.result, arguments={"x-message-ttl": 86_400_000})


def test_the_stand_in_declares_the_result_queue_with_a_ttl(queues: Queues) -> None:
    with emulator(queues, "--result-ttl", "60"):
        pass
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
        declare(queues.result)  # without the TTL: inequivalent
    declare(queues.result, arguments={"x-message-ttl": 60_000})


@contextmanager
def user_with(vhost: str, configure: str, write: str, read: str) -> Iterator[str]:
    """A user of its own on ``vhost`` with those permissions; the URL to log in with."""
    name = f"bi-{uuid.uuid4().hex[:8]}"
    broker_control.rabbitmqctl("add_user", name, "pw")
    try:
        broker_control.rabbitmqctl("set_permissions", "-p", vhost, name, configure, write, read)
        yield f"amqp://{name}:pw@127.0.0.1:5672/{vhost}"
    finally:
        broker_control.rabbitmqctl("delete_user", name)


@pytest.fixture
def vhost() -> Iterator[str]:
    name = f"bi-{uuid.uuid4().hex[:8]}"
    broker_control.rabbitmqctl("add_vhost", name)
    try:
        broker_control.rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        broker_control.rabbitmqctl("delete_vhost", name)


@pytest.mark.parametrize(
    ("perms", "needs", "declare_flag"),
    [
        ((".*", "", ".*"), "write permission", False),
        ((".*", ".*", ""), "read permission", False),
        (("", ".*", ".*"), "configure permission", True),
    ],
)
def test_a_missing_permission_stops_at_once_and_names_it(
    samples: dict[str, Path],
    vhost: str,
    tmp_path: Path,
    perms: tuple[str, str, str],
    needs: str,
    declare_flag: bool,
) -> None:
    """Refused is not a lost connection: exit 3, one line naming the permission, no journal left."""
    url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    if not declare_flag:
        asyncio.run(_declare_in(url, "database_import", "database_import_result"))
    with user_with(vhost, *perms) as user_url:
        args = [
            "run",
            samples["small.csv"],
            "--db",
            "1",
            "--results",
            tmp_path / "r.csv",
            "--amqp-url",
            user_url,
        ]
        done = run_cli(*args, *(["--declare"] if declare_flag else []), timeout=60)
    note(exit=done.returncode)
    assert done.returncode == 3, done.stderr
    assert needs in done.stderr
    assert "reconnecting" not in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert list(tmp_path.iterdir()) == []


async def _declare_in(url: str, *names: str) -> None:
    connection = await aiormq.connect(url)
    channel = await connection.channel()
    for name in names:
        await channel.queue_declare(name, durable=True)
    await connection.close()


def stop_and_wait(proc: subprocess.Popen[str], drain: float) -> tuple[int, str]:
    """SIGINT once; the run must end of itself, well within the drain time plus its clean-up."""
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=drain + 20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"one SIGINT did not end the run: {err[-2000:]}")
    return exited(proc) or 0, err


def test_one_signal_ends_a_run_while_it_reconnects(
    samples: dict[str, Path], queues: Queues, tmp_path: Path
) -> None:
    results = tmp_path / "r.csv"
    with emulator(queues):
        proc = start_run(samples["20k.parquet"], queues, results, "--drain-timeout", "3")
        when_replies_reach(results, 2000, proc)
        with broker_control.app_stopped():
            time.sleep(2)  # the run is reconnecting now
            code, err = stop_and_wait(proc, 3)
    assert code == 4, err
    assert "reconnecting" in err
    accounted(ROWS, results)


def test_one_signal_ends_a_blocked_run(samples: dict[str, Path], queues: Queues, tmp_path: Path) -> None:
    """A memory alarm blocks the run mid-way; one SIGINT ends it within the drain time.

    Replies come half a second late and 1,000 rows at most wait for one, so the run is still far
    from done (about 2,000 rows a second) when the alarm, which takes rabbitmqctl a second, is up.
    """
    results = tmp_path / "r.csv"
    with emulator(queues, "--delay", "0.5"):
        proc = start_run(
            samples["20k.parquet"], queues, results, "--drain-timeout", "3", "--max-pending", "1000"
        )
        when_replies_reach(results, 2000, proc)
        with broker_control.memory_alarm():
            time.sleep(2)
            code, err = stop_and_wait(proc, 3)
    assert code == 4, err
    accounted(ROWS, results)


def test_one_signal_ends_a_run_waiting_for_replies(
    samples: dict[str, Path], queues: Queues, tmp_path: Path
) -> None:
    """Nobody answers (no stand-in): the first SIGINT ends the wait within the drain time."""
    declare(queues.request, queues.result)
    results = tmp_path / "r.csv"
    proc = start_run(samples["small.csv"], queues, results, "--drain-timeout", "2", "--reply-timeout", "600")
    time.sleep(3)
    code, err = stop_and_wait(proc, 2)
    assert code == 4, err
    assert status_counts(accounted(500, results)) == {"no_reply": 500}


@pytest.mark.parametrize("password", ["Zx9/Qw+7", "Pq3?Rs7#Tu5", "Kj8@Lm2:Nb%4"])
def test_the_password_never_shows(samples: dict[str, Path], tmp_path: Path, password: str) -> None:
    """A password the URL cannot hold raw: the error names the way out and never the password."""
    done = run_cli(
        "run", samples["small.csv"], "--db", "1", "--results", tmp_path / "r.csv",
        "--amqp-url", f"amqp://guest:{password}@127.0.0.1:5672/",
    )  # fmt: skip
    assert done.returncode in (2, 3), done.stderr
    for piece in {password, *password.replace("?", "/").replace("#", "/").replace("@", "/").split("/")} - {
        ""
    }:
        if len(piece) >= 3:
            assert piece not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_a_password_file_keeps_it_off_the_command_line(
    samples: dict[str, Path], queues: Queues, tmp_path: Path
) -> None:
    secret = tmp_path / "amqp.pw"
    secret.write_text("guest\n")
    with emulator(queues):
        done = run_cli(
            "run", samples["small.csv"], "--db", "1", *queues.args(), "--results", tmp_path / "r.csv",
            "--amqp-url", "amqp://guest@127.0.0.1:5672/", "--password-file", secret,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    secret.write_text("wrong-one\n")
    done = run_cli(
        "run", samples["small.csv"], "--db", "1", *queues.args(), "--results", tmp_path / "r2.csv",
        "--amqp-url", "amqp://guest@127.0.0.1:5672/", env={"BULK_IMPORT_AMQP_PASSWORD_FILE": str(secret)},
    )  # fmt: skip
    assert done.returncode == 3
    assert "wrong-one" not in done.stderr


def test_resume_after_the_replies_expired_says_what_it_will_do(
    samples: dict[str, Path], queues: Queues, tmp_path: Path
) -> None:
    declare(queues.request, queues.result)
    results = tmp_path / "r.csv"
    first = run_cli(*run_args(samples["small.csv"], queues, results, "--reply-timeout", "1"))
    assert first.returncode == 4, first.stderr
    time.sleep(1.5)
    with emulator(queues):
        again = run_cli(*run_args(samples["small.csv"], queues, results, "--resume", "--result-ttl", "1"))
    assert again.returncode == 0, again.stderr
    assert "imported a second time" in again.stderr
    assert "triggers fire again" in again.stderr


def test_keys_go_as_the_platform_documents_them(queues: Queues, tmp_path: Path) -> None:
    """Float and list keys through the real broker and the stand-in: whole floats and tag lists
    are imported (the same key twice finds the same profile), other floats are rejected, nothing
    exits 70."""
    data = tmp_path / "keys.parquet"
    pl.DataFrame(
        {
            "CRM_ID": [42.0, 42.5, 7.0, float("nan")],
            "tags": [["b", "a"], ["x"], [" a", "b"], []],
            "phones": [["+7 (900) 123-45-67"], None, ["8-900-000-00-00", ""], None],
        }
    ).write_parquet(data)
    with emulator(queues):
        by_crm = run_cli(
            "run", data, "--db", "1", *queues.args(), "--matching", "custom", "--field", "CRM_ID",
            "--results", tmp_path / "crm.csv",
        )  # fmt: skip
        by_tags = run_cli(
            "run", data, "--db", "1", *queues.args(), "--matching", "custom", "--field", "tags",
            "--results", tmp_path / "tags.csv",
        )  # fmt: skip
    assert by_crm.returncode == 1, by_crm.stderr
    crm = accounted(4, tmp_path / "crm.csv")
    assert crm["status"].to_list() == ["ok", "rejected", "ok", "rejected"]
    assert crm["key"].to_list()[0] == "42"
    assert "not a whole number" in crm["error_text"][1]
    assert by_tags.returncode == 1, by_tags.stderr
    tags = accounted(4, tmp_path / "tags.csv")
    assert tags["status"].to_list() == ["ok", "ok", "ok", "rejected"]
    # "b, a" and "a, b" are one set of tags: the third row updated the first row's profile.
    assert tags["profile_id"][0] == tags["profile_id"][2]


def test_a_dead_link_is_noticed_by_its_heartbeats(
    samples: dict[str, Path], queues: Queues, tmp_path: Path
) -> None:
    """The network path goes silent (no reset): the run notices within a few heartbeats,
    reconnects and finishes all ok, where it used to wait until the reply timeout."""
    results = tmp_path / "r.csv"
    with emulator(queues), relay_to_broker() as relay:
        url = f"amqp://guest:guest@127.0.0.1:{relay.port}/"
        proc = start_run(samples["20k.parquet"], queues, results, "--amqp-url", url, "--reply-timeout", "60")
        when_replies_reach(results, 2000, proc)
        relay.go_silent()
        _, err = proc.communicate(timeout=300)
    assert exited(proc) == 0, err
    assert "reconnected" in err
    assert status_counts(accounted(ROWS, results)) == {"ok": ROWS}


def test_a_deleted_request_queue_is_reported_at_once(
    samples: dict[str, Path], queues: Queues, tmp_path: Path
) -> None:
    """Messages to a request queue deleted mid-run come back (mandatory): exit 3 saying so."""
    results = tmp_path / "r.csv"
    declare(queues.request, queues.result)
    proc = start_run(samples["100k.parquet"], queues, results, "--max-pending", "0", "--reply-timeout", "600")
    time.sleep(1.5)
    delete(queues.request)
    _, err = proc.communicate(timeout=120)
    assert exited(proc) == 3, err
    assert "no longer exists" in err


def test_a_deleted_result_queue_is_reported_at_once(
    samples: dict[str, Path], queues: Queues, tmp_path: Path
) -> None:
    """The result queue deleted mid-run cancels the consumer: exit 3 saying so, not a reply timeout."""
    results = tmp_path / "r.csv"
    declare(queues.request, queues.result)
    proc = start_run(samples["small.csv"], queues, results, "--reply-timeout", "600")
    time.sleep(2)
    delete(queues.result)
    _, err = proc.communicate(timeout=120)
    assert exited(proc) == 3, err
    assert "cancelled the consumer" in err
