"""The per-row ledger: states only move forward, replies count once, statuses follow."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bulk_import.reconcile import (
    ANSWERED,
    CONFIRMED,
    FAILED,
    PENDING,
    REJECTED,
    SENT,
    Ledger,
    final_status,
)


def test_happy_path() -> None:
    """sent → confirmed → answered leaves nothing awaited."""
    ledger = Ledger()
    ledger.send([0, 1])
    assert ledger.awaiting == 2
    ledger.confirm([0, 1])
    assert ledger.answer(0)
    assert ledger.answer(1)
    assert ledger.awaiting == 0
    assert list(ledger.state) == [ANSWERED, ANSWERED]


def test_reply_before_confirm() -> None:
    """A reply may overtake its confirm; the late confirm does not undo it."""
    ledger = Ledger()
    ledger.send([0])
    assert ledger.answer(0)
    ledger.confirm([0])
    assert ledger.state[0] == ANSWERED
    assert ledger.awaiting == 0


def test_duplicate_reply_counts_once() -> None:
    """The second reply for a row is a duplicate, not a second answer."""
    ledger = Ledger()
    ledger.send([0])
    assert ledger.answer(0)
    assert not ledger.answer(0)
    assert (ledger.answered, ledger.duplicates) == (1, 1)


def test_reply_for_rejected_row_is_unexpected() -> None:
    """A reply for a row never sent is counted and ignored."""
    ledger = Ledger()
    ledger.reject([0])
    assert not ledger.answer(0)
    assert ledger.unexpected == 1
    assert ledger.state[0] == REJECTED


def test_reply_from_earlier_attempt_before_the_row_is_read() -> None:
    """On resume a reply can arrive for a row not read yet: it is answered and never sent again."""
    ledger = Ledger(sent_before=11)
    assert ledger.answer(10)
    assert ledger.is_answered(10)
    assert ledger.awaiting == 0


def test_reply_naming_a_row_far_beyond_the_run_changes_nothing() -> None:
    """A reply naming row 999999999999 of this run is counted, and the ledger does not grow to it."""
    ledger = Ledger()
    ledger.send([0, 1])
    assert not ledger.answer(999_999_999_999)
    assert not ledger.answer(999_999_999_999)
    assert (ledger.unexpected, ledger.first_unexpected) == (2, 999_999_999_999)
    assert len(ledger.state) == 2
    assert (ledger.awaiting, ledger.answered, ledger.duplicates) == (2, 0, 0)
    assert not ledger.is_answered(999_999_999_999)


def test_reply_for_a_row_not_sent_yet_is_unexpected() -> None:
    """Only rows the run has sent are answered: not a row it has yet to send, nor one it skipped."""
    ledger = Ledger()
    ledger.send([0, 2])
    assert not ledger.answer(1)
    assert not ledger.answer(3)
    assert ledger.unexpected == 2
    assert list(ledger.state) == [SENT, PENDING, SENT]
    assert ledger.answer(2)
    assert ledger.awaiting == 1


def test_resumed_run_takes_earlier_attempts_rows_only() -> None:
    """Resumed, a reply for a row an earlier attempt may have sent counts; one past them does not."""
    ledger = Ledger(sent_before=100)
    assert ledger.answer(99)
    assert not ledger.answer(100)
    assert not ledger.answer(999_999_999_999)
    assert ledger.unexpected == 2
    assert len(ledger.state) == 100


def test_failed_rows_stop_being_awaited() -> None:
    """A row the broker kept refusing is not waited for."""
    ledger = Ledger()
    ledger.send([0, 1])
    ledger.fail([1])
    assert ledger.awaiting == 1
    assert ledger.state[1] == FAILED


def test_final_statuses() -> None:
    """Each state maps to the documented status; an answer's is its error code's."""
    assert final_status(ANSWERED, 0) == "ok"
    assert final_status(ANSWERED, 3) == "error"
    assert final_status(REJECTED, None) == "rejected"
    assert final_status(CONFIRMED, None) == "no_reply"
    assert final_status(SENT, None) == "not_confirmed"
    assert final_status(FAILED, None) == "not_confirmed"
    assert final_status(PENDING, None) == "not_sent"


events = st.lists(
    st.tuples(st.sampled_from(["send", "confirm", "fail", "answer"]), st.integers(0, 9)), max_size=80
)


@given(events)
def test_awaiting_matches_the_states(steps: list[tuple[str, int]]) -> None:
    """In any order of events, awaiting equals the rows sent or confirmed, and answers count once."""
    ledger = Ledger()
    answers = set()
    for event, row in steps:
        if event == "send":
            ledger.send([row])
        elif event == "answer":
            if ledger.answer(row):
                answers.add(row)
        elif row < len(ledger.state):
            getattr(ledger, event)([row])
    outstanding = sum(1 for s in ledger.state if s in (SENT, CONFIRMED))
    assert ledger.awaiting == outstanding
    assert ledger.answered == len(answers)
    assert all(ledger.state[r] == ANSWERED for r in answers)


row_runs = st.one_of(
    st.tuples(st.integers(0, 4), st.integers(1, 4)).map(lambda t: list(range(t[0], t[0] + t[1]))),
    st.lists(st.integers(0, 7), min_size=1, max_size=4, unique=True).map(sorted),
)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["send", "confirm", "fail", "answer"]), row_runs), max_size=40))
@example([("send", [0, 1]), ("fail", [1]), ("send", [0, 1, 2]), ("confirm", [0, 1, 2])])
def test_runs_of_rows_move_like_single_rows(steps: list[tuple[str, list[int]]]) -> None:
    """Sending, confirming or answering a run of consecutive rows at once ends in the states row by row
    would, and a message's answers are taken where single ones would be."""
    together, alone = Ledger(), Ledger()
    for event, rows in steps:
        if event == "answer":
            taken = [i for i, row in enumerate(rows) if alone.answer(row)]
            got = together.answer_all(
                range(rows[0], rows[-1] + 1) if rows == list(range(rows[0], rows[-1] + 1)) else rows
            )
            assert got == (None if len(taken) == len(rows) else taken)
        elif event == "send" or max(rows) < len(together.state):
            getattr(together, event)(rows)
            for row in rows:
                getattr(alone, event)([row])
    assert together.state == alone.state
    assert (together.awaiting, together.answered) == (alone.awaiting, alone.answered)
    assert (together.duplicates, together.unexpected) == (alone.duplicates, alone.unexpected)


def test_any_answered_looks_at_the_rows_span() -> None:
    """A batch read for the first time has no answered row; one an earlier attempt answered has."""
    ledger = Ledger()
    ledger.send(range(10))
    assert not ledger.any_answered([]) and not ledger.any_answered(range(10))
    assert ledger.answer(7)
    assert ledger.any_answered([5, 6, 7, 8]) and ledger.any_answered(range(7, 20))
    assert not ledger.any_answered([0, 1, 2]) and not ledger.any_answered(range(8, 30))
