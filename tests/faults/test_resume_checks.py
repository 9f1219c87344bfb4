"""--resume finishes a run only as it was started: every option that shapes a message is checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.test_faults import exited, run_args
from tests.helpers import Queues, declare, run_cli

pytestmark = [pytest.mark.broker, pytest.mark.faults]


@pytest.mark.parametrize(
    ("first", "then", "said"),
    [
        (["--update-only"], [], "--update-only was given, now not given"),
        ([], ["--skip-triggers"], "--skip-triggers was not given, now given"),
        ([], ["--nulls", "keep"], "--nulls was 'skip', now 'keep'"),
        ([], ["--resource-id", "5"], "--resource-id was not given, now 5"),
        ([], ["--type", "city:str"], "--type was not given"),
    ],
)
def test_resume_with_another_option_is_refused_naming_it(
    samples: dict[str, Path], queues: Queues, tmp_path: Path, first: list[str], then: list[str], said: str
) -> None:
    declare(queues.request, queues.result)
    results = tmp_path / "r.csv"
    started = run_cli(*run_args(samples["small.csv"], queues, results, "--reply-timeout", "1", *first))
    assert started.returncode == 4, started.stderr  # nobody answers: unfinished
    again = run_cli(*run_args(samples["small.csv"], queues, results, "--resume", *then))
    assert exited(again) == 2, again.stderr
    assert said in again.stderr
    assert "--restart" in again.stderr
    assert "Traceback" not in again.stderr
