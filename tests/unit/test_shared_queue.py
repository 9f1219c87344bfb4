"""Sharing the result queue: which deliveries are acked or given back, in how few frames, and when."""

from __future__ import annotations

import itertools
import random

import orjson
from hypothesis import given
from hypothesis import strategies as st

from bulk_import.consumer import HOLD_ALIVE_S, HOLD_IDLE_S, UNATTRIBUTED, Strangers
from bulk_import.delivery import Settlements
from bulk_import.protocols import reply_owner


def outcome(frames: list[tuple[int, bool, bool]], n: int) -> dict[int, bool]:
    """What a broker does with frames: tag → acked (True) or requeued (False).

    ``multiple`` settles every delivery up to its tag that is still outstanding, held ones included;
    a frame naming a tag that is not outstanding is a channel error (unknown delivery tag).
    """
    done: dict[int, bool] = {}
    for tag, multiple, ack in frames:
        assert tag not in done, f"unknown delivery tag {tag}"
        for t in range(1, tag + 1) if multiple else [tag]:
            if t not in done:
                done[t] = ack
    return {t: done[t] for t in range(1, n + 1) if t in done}


def decide(s: Settlements, plan: str) -> None:
    """Deliveries 1..n: 'a' acked, 'b' given back, 'h' left pending (held, or being journaled)."""
    for tag, kind in enumerate(plan, 1):
        if kind == "a":
            s.ack([tag])
        elif kind == "b":
            s.give_back([tag])


@given(st.text("ab", min_size=1, max_size=300))
def test_every_delivery_is_settled_once_as_decided(plan: str) -> None:
    """Acks never touch a given-back delivery and the reverse, in one frame per run of one kind."""
    s = Settlements()
    decide(s, plan)
    frames = s.frames()
    assert outcome(frames, len(plan)) == {tag: kind == "a" for tag, kind in enumerate(plan, 1)}
    runs = 1 + sum(1 for x, y in itertools.pairwise(plan) if x != y)
    assert len(frames) == runs
    assert s.outstanding == 0


@given(st.text("abh", min_size=1, max_size=300), st.randoms(use_true_random=False))
def test_pending_deliveries_are_never_settled_by_a_frame(plan: str, rng: random.Random) -> None:
    """Frames stop below the first pending delivery; once the pending are decided, all is settled."""
    s = Settlements()
    decide(s, plan)
    frames = s.frames()
    pending = [t for t, k in enumerate(plan, 1) if k == "h"]
    first = pending[0] if pending else len(plan) + 1
    got = outcome(frames, len(plan))
    assert got == {t: k == "a" for t, k in enumerate(plan, 1) if t < first}
    assert s.waiting == sum(1 for t, k in enumerate(plan, 1) if t > first and k != "h")
    rng.shuffle(pending)
    for tag in pending:  # decided in any order, some acked, some given back
        (s.ack if tag % 2 else s.give_back)([tag])
        frames += s.frames()
    final = {t: (k == "a") if k != "h" else bool(t % 2) for t, k in enumerate(plan, 1)}
    assert outcome(frames, len(plan)) == final
    assert s.outstanding == 0


def test_a_reset_forgets_the_old_channel() -> None:
    s = Settlements()
    s.ack([1, 2, 3])
    s.reset()
    s.give_back([1])
    assert s.frames() == [(1, True, False)]


def test_first_deliveries_go_back_at_once_and_idle_owners_wait() -> None:
    """A fresh reply goes back at once; one of a run still answering waits a moment; an idle run's long."""
    strangers = Strangers()
    assert strangers.hold_for("live", redelivered=False, now=100.0) == 0
    assert strangers.hold_for("live", redelivered=True, now=101.0) == HOLD_ALIVE_S
    assert strangers.hold_for("gone", redelivered=True, now=101.0) == HOLD_IDLE_S
    assert strangers.hold_for("live", redelivered=True, now=200.0) == HOLD_IDLE_S


def test_strangers_are_counted_once_by_owner() -> None:
    strangers = Strangers()
    for body, owner in [(b"x", "a"), (b"x", "a"), (b"y", "a"), (b"z", None)]:
        strangers.note(owner, body)
    assert strangers.count == 3
    assert strangers.owners == {"a": 2, UNATTRIBUTED: 1}


def test_reply_owner_reads_only_ids_a_run_could_have_made() -> None:
    assert reply_owner(orjson.dumps({"feedback_id": "abc-12", "error": "0"})) == ("abc", 12)
    for body in [
        b"not json",
        b"[1]",
        orjson.dumps({"error": 0}),
        orjson.dumps({"feedback_id": ""}),
        orjson.dumps({"feedback_id": 17}),
        orjson.dumps({"feedback_id": "no-row-x"}),
    ]:
        assert reply_owner(body) == (None, None), body
