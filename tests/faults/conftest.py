from __future__ import annotations

import pytest

from tests.faults.test_faults import REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault cases as a table: what went in, what the results file accounts for, what ran."""
    if not REPORT:
        return
    write = terminalreporter.write_line
    write("")
    write(
        "| case | rows in | rows accounted | requests received | reconnections (run, stand-in) | exit | statuses |"
    )
    write("|---|---|---|---|---|---|---|")
    for case, f in REPORT.items():
        keys = ("rows", "accounted", "received", "reconnections", "exit", "statuses")
        cells = [f.get(k, "–") for k in keys]
        write(f"| {case} | " + " | ".join(map(str, cells)) + " |")
