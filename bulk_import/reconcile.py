"""What became of each row: a one-byte state per row that only moves forward (but for a retry).

::

    pending ──sent──▶ sent ──confirmed──▶ confirmed ──reply──▶ answered (──retry──▶ pending)
       │                │  └──nacked (retries spent)──▶ failed
       ├──rejected      └──reply (before its confirm)──▶ answered
       └──skipped (another row of its key is sent)

A row's final status follows from its state (:func:`final_status`); the reply's details are in the
journal. The state array costs one byte per row, so ten million rows need 10 MB. A reply is taken
only for a row the run has sent (or, resumed, that an earlier attempt may have sent): one naming
any other row, however large its number, is counted and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

Status = Literal["ok", "error", "rejected", "skipped_duplicate", "not_sent", "not_confirmed", "no_reply"]
STATUSES: Final[tuple[Status, ...]] = (
    "ok",
    "error",
    "rejected",
    "skipped_duplicate",
    "not_sent",
    "not_confirmed",
    "no_reply",
)
#: Statuses of rows that never went out: never counted in a rate.
UNSENT: Final[tuple[Status, ...]] = ("rejected", "skipped_duplicate", "not_sent")

PENDING: Final = 0
REJECTED: Final = 1
SENT: Final = 2
CONFIRMED: Final = 3
FAILED: Final = 4
ANSWERED: Final = 5
SKIPPED: Final = 6

#: The final status of every state but ``answered``, whose status is the reply's.
UNANSWERED_STATUS: Final[dict[int, Status]] = {
    PENDING: "not_sent",
    REJECTED: "rejected",
    SENT: "not_confirmed",
    CONFIRMED: "no_reply",
    FAILED: "not_confirmed",
    SKIPPED: "skipped_duplicate",
}


_TO_SENT: Final = bytes.maketrans(bytes((PENDING, FAILED)), bytes((SENT, SENT)))
_TO_CONFIRMED: Final = bytes.maketrans(bytes((SENT,)), bytes((CONFIRMED,)))


def _span(rows: Sequence[int]) -> slice | None:
    """The rows as one slice when they are consecutive and ascending (a batch's, most often).

    A batch's rows move together a thousand at a time, so their bytes are translated at once.
    """
    if len(rows) < 2 or rows[-1] - rows[0] + 1 != len(rows):
        return None
    first = rows[0]
    span = range(first, first + len(rows))
    if first < 0 or (rows != span and list(rows) != list(span)):
        return None
    return slice(first, first + len(rows))


def final_status(state: int, reply_error: int | None) -> Status:
    if state == ANSWERED:
        return "ok" if reply_error == 0 else "error"
    return UNANSWERED_STATUS[state]


@dataclass
class Ledger:
    """Per-row states of one run, and the counters the pipeline waits on."""

    state: bytearray = field(default_factory=bytearray)
    #: Rows sent and not yet answered (confirmed or not): what the run still waits for.
    awaiting: int = 0
    answered: int = 0
    rejected: int = 0
    #: Rows left out because another row of the file has their key.
    skipped: int = 0
    duplicates: int = 0
    #: Replies carrying this run's id for a row that was never sent.
    unexpected: int = 0
    #: The first row such a reply named, for the log.
    first_unexpected: int | None = None
    #: Rows below it may have been sent by an earlier attempt of the run (``--resume``), so a reply
    #: may come for them before this attempt sends them.
    sent_before: int = 0

    def _grow(self, row: int) -> None:
        if row >= len(self.state):
            self.state.extend(bytes(row + 1 - len(self.state)))

    def is_answered(self, row: int) -> bool:
        return row < len(self.state) and self.state[row] == ANSWERED

    def any_answered(self, rows: Sequence[int]) -> bool:
        """Whether any of ``rows`` (ascending) may be answered already (by an earlier attempt of a
        resumed run): a batch read for the first time has none, and is sent without a look at each row."""
        return bool(rows) and ANSWERED in self.state[rows[0] : rows[-1] + 1]

    def reject(self, rows: Iterable[int]) -> None:
        self.rejected += self._never_sent(rows, REJECTED)

    def skip(self, rows: Iterable[int]) -> None:
        self.skipped += self._never_sent(rows, SKIPPED)

    def _never_sent(self, rows: Iterable[int], final: int) -> int:
        """Pending rows that will not go out moved to ``final``; how many."""
        moved = 0
        for row in rows:
            self._grow(row)
            if self.state[row] == PENDING:
                self.state[row] = final
                moved += 1
        return moved

    def reopen(self, rows: Iterable[int]) -> int:
        """Answered rows to be sent again (their reply's error is worth a retry); how many."""
        state, opened = self.state, 0
        for row in rows:
            if row < len(state) and state[row] == ANSWERED:
                state[row] = PENDING
                self.answered -= 1
                opened += 1
        return opened

    def send(self, rows: Sequence[int]) -> None:
        state = self.state
        if rows:
            self._grow(max(rows))
        if (span := _span(rows)) is not None:
            part = state[span]
            self.awaiting += part.count(PENDING) + part.count(FAILED)
            state[span] = part.translate(_TO_SENT)
            return
        for row in rows:
            if state[row] in (PENDING, FAILED):
                state[row] = SENT
                self.awaiting += 1

    def confirm(self, rows: Sequence[int]) -> None:
        state = self.state
        if (span := _span(rows)) is not None:
            state[span] = state[span].translate(_TO_CONFIRMED)
            return
        for row in rows:
            if state[row] == SENT:
                state[row] = CONFIRMED

    def fail(self, rows: Iterable[int]) -> None:
        state = self.state
        for row in rows:
            if state[row] in (SENT, CONFIRMED):
                state[row] = FAILED
                self.awaiting -= 1

    def answer_all(self, rows: Sequence[int]) -> list[int] | None:
        """Record the replies of one message; None when every row was awaited (a batch's, almost
        always: its rows move at once), else the positions of the rows :meth:`answer` took."""
        state = self.state
        if (span := _span(rows)) is not None:
            part = state[span]
            awaited = part.count(SENT) + part.count(CONFIRMED)
            if awaited == len(rows):
                state[span] = bytes((ANSWERED,)) * awaited
                self.awaiting -= awaited
                self.answered += awaited
                return None
        answer = self.answer
        taken = [i for i, row in enumerate(rows) if answer(row)]
        return None if len(taken) == len(rows) else taken

    def answer(self, row: int) -> bool:
        """Record a reply; False when the row was answered already, or is not one the run sent."""
        current = self.state[row] if 0 <= row < len(self.state) else PENDING
        if current == ANSWERED:
            self.duplicates += 1
            return False
        if current in (REJECTED, SKIPPED) or (current == PENDING and not 0 <= row < self.sent_before):
            self.unexpected += 1
            if self.first_unexpected is None:
                self.first_unexpected = row
            return False
        self._grow(row)
        if current in (SENT, CONFIRMED):
            self.awaiting -= 1
        self.state[row] = ANSWERED
        self.answered += 1
        return True
