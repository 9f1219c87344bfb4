"""Options from a TOML file and the environment, under the command line."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from bulk_import.cli import cli

JOB = """
window = 512
nulls = "keep"

[jobs.contacts]
file = "exports/c.csv"
db = 23
matching = "custom"
field = "CRM_ID"
type = ["CRM_ID:int"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "c.csv").write_text("email,CRM_ID,city\na@b.c,1,\n")
    path = tmp_path / "job.toml"
    path.write_text(JOB)
    return path


def dry_run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    summary = tmp_path / "s.json"
    got = CliRunner().invoke(cli, ["run", *args, "--dry-run", "--summary", str(summary)], env=env)
    assert got.exit_code == 0, got.output
    return dict(orjson.loads(summary.read_bytes())["first_message"])


def test_a_job_of_the_file_sets_the_options_and_the_input(config: Path, tmp_path: Path) -> None:
    """The file path is the config's folder's, whatever the working directory."""
    sent = dry_run(tmp_path, "--config", str(config), "--job", "contacts")
    assert sent["db_id"] == 23 and sent["field_name"] == "CRM_ID" and sent["field_value"] == 1
    assert sent["data"] == {"email": "a@b.c", "CRM_ID": 1, "city": None}  # nulls = "keep": top level


def test_the_environment_wins_over_the_file_and_the_command_line_over_both(
    config: Path, tmp_path: Path
) -> None:
    env = {"BULK_IMPORT_RUN_DB_ID": "5"}
    assert dry_run(tmp_path, "--job", "contacts", "--config", str(config), env=env)["db_id"] == 5
    assert dry_run(tmp_path, "--config", str(config), "--job", "contacts", "--db", "7", env=env)["db_id"] == 7


@pytest.mark.parametrize(
    ("text", "job", "message"),
    [
        ("windw = 3\n", None, "no option windw in this command"),
        ("[jobs.a]\ndb = 1\n", "b", "no job 'b' ([jobs.b]); its jobs: a"),
        ("db = \n", None, "is not TOML"),
    ],
)
def test_a_config_mistake_is_one_clear_line(tmp_path: Path, text: str, job: str | None, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    data = tmp_path / "c.csv"
    data.write_text("email\na@b.c\n")
    args = [
        "run",
        str(data),
        "--db",
        "1",
        "--config",
        str(path),
        "--dry-run",
        *(["--job", job] if job else []),
    ]
    got = CliRunner().invoke(cli, args)
    assert got.exit_code == 2, got.output
    assert message in got.output and "Traceback" not in got.output


def test_every_run_option_names_its_environment_variable_in_help() -> None:
    got = CliRunner().invoke(cli, ["run", "--help"], terminal_width=200)
    for name in (
        "BULK_IMPORT_RUN_WINDOW",
        "BULK_IMPORT_RUN_DB_ID",
        "BULK_IMPORT_AMQP_URL",
        "BULK_IMPORT_RUN_VIA",
    ):
        assert name in got.output


def test_a_job_without_a_config_file_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "c.csv"
    data.write_text("email\na@b.c\n")
    got = CliRunner().invoke(cli, ["run", str(data), "--db", "1", "--job", "contacts", "--dry-run"])
    assert got.exit_code == 2
    assert "--job names a job of a --config file" in got.output
