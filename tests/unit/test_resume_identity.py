"""What --resume compares with the run it finishes, said in the words of the command line."""

from __future__ import annotations

from bulk_import.journal import differences

BASE = {
    "input": "/data/c.csv",
    "size": 100,
    "mtime_ns": 1_700_000_000_000_000_000,
    "db_id": 1,
    "update_only": False,
    "skip_triggers": False,
    "resource_id": None,
    "nulls": "skip",
    "types": {},
}


def test_the_same_run_has_no_differences() -> None:
    assert differences(BASE, dict(BASE)) == []


def test_each_option_that_shapes_a_message_is_named() -> None:
    now = {**BASE, "update_only": True, "nulls": "keep", "types": {"score": "int"}, "resource_id": 3}
    said = differences(BASE, now)
    assert "--update-only was not given, now given" in said
    assert "--nulls was 'skip', now 'keep'" in said
    assert "--type was not given, now {'score': 'int'}" in said
    assert "--resource-id was not given, now 3" in said


def test_a_changed_input_is_said_plainly() -> None:
    said = differences(BASE, {**BASE, "size": 120, "mtime_ns": BASE["mtime_ns"] + 10**9})
    assert len(said) == 1
    assert said[0].startswith("the input file changed since (100 bytes modified")
    assert "120 bytes now" in said[0]
    assert "mtime_ns" not in said[0]


def test_facts_an_older_journal_did_not_record_are_not_held_against_it() -> None:
    old = {k: v for k, v in BASE.items() if k not in ("update_only", "types")}
    assert differences(old, {**BASE, "update_only": True}) == []
