"""The CLI's answers to a user's mistakes: one clear line, the documented exit code, no traceback.

None of these reach a broker: every check happens before connecting.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import click
import orjson
import pytest
from click.testing import CliRunner

import bulk_import
from bulk_import.cli import cli


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "c.csv"
    path.write_text("email,CRM_ID\na@b.c,1\n")
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "{dir}/missing.csv", "--db", "1"], "no such file"),
        (["run", "{csv}"], "Missing option '--db'"),
        (["run", "{csv}", "--db", "x"], "is not a valid integer"),
        (["run", "{csv}", "--db", "1", "--matching", "custom"], "needs --field"),
        (["run", "{csv}", "--db", "1", "--field", "CRM_ID"], "only applies to --matching custom"),
        (["run", "{csv}", "--db", "1", "--matching", "custom", "--field", "NOPE"], "no column 'NOPE'"),
        (["run", "{csv}", "--db", "1", "--matching", "phone"], "no column 'phone'"),
        (["run", "{csv}", "--db", "1", "--amqp-url", "http://x"], "must start with amqp://"),
        (["run", "{csv}", "--db", "1", "--amqp-url", "amqp://u:pw@h:99999/"], "does not parse"),
        (["run", "{csv}", "--db", "1", "--resume", "--restart"], "contradict"),
        (["run", "{csv}", "--db", "1", "--window", "0"], "--window"),
        (["run", "{csv}", "--db", "1", "--type", "CRM_ID"], "COLUMN:TYPE"),
        (["run", "{csv}", "--db", "1", "--type", "CRM_ID:money"], "unknown type"),
        (["run", "{csv}", "--db", "1", "--resume"], "nothing to resume"),
        (["sample", "10", "{dir}/x.json"], ".csv or .parquet"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str, csv_file: Path, tmp_path: Path) -> None:
    """Each mistake exits 2 with its reason on one line and no traceback."""
    argv = [a.format(csv=csv_file, dir=tmp_path) for a in args]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_password_is_censored_in_url_errors(csv_file: Path) -> None:
    """A URL error never shows the password."""
    result = CliRunner().invoke(
        cli, ["run", str(csv_file), "--db", "1", "--amqp-url", "amqp://u:hunter2@h:x/"]
    )
    assert result.exit_code == 2
    assert "hunter2" not in result.output
    assert "******" in result.output


@pytest.mark.parametrize("command", ["run", "emulate", "sample"])
def test_every_command_has_help(command: str) -> None:
    """Each command documents itself; run and the group list the exit codes."""
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert len(result.output) > 200
    if command == "run":
        assert "Exit codes" in result.output
        assert "70" in result.output


def test_library_does_not_import_click() -> None:
    """The library is importable without the CLI layer."""
    code = "import sys, bulk_import; assert 'click' not in sys.modules, 'click imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_all_is_sorted_and_complete() -> None:
    """The public names are listed once, in isort order (constants, classes, functions), and exist."""
    names = bulk_import.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    for name in names:
        assert hasattr(bulk_import, name)


def test_every_option_has_help_and_is_in_the_readme() -> None:
    """Each command's options explain themselves in --help and are named in README.md."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = []
    for name, command in cli.commands.items():
        if command.hidden:
            continue
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            longest = max(param.opts, key=len)
            if not param.help:
                missing.append(f"{name} {longest}: no help")
            if longest not in readme:
                missing.append(f"{name} {longest}: not in README.md")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["{dir}/missing.csv"], 2, "no such file"),
        (["{csv}", "--amqp-url", "amqp://guest:guest@127.0.0.1:1/"], 3, "cannot connect to the broker"),
    ],
)
def test_the_summary_is_written_on_every_exit(
    tmp_path: Path, csv_file: Path, args: list[str], code: int, error: str
) -> None:
    """Monitoring never reads an earlier night's summary: an error writes one too, saying why."""
    summary = tmp_path / "s.json"
    summary.write_text('{"exit_code": 0}')  # yesterday's
    argv = [
        "run",
        *(a.format(dir=tmp_path, csv=csv_file) for a in args),
        "--db",
        "23",
        "--summary",
        str(summary),
    ]
    got = CliRunner().invoke(cli, argv)
    assert got.exit_code == code, got.output
    doc = orjson.loads(summary.read_bytes())
    assert doc["exit_code"] == code and error in doc["error"]
    assert doc["db_id"] == 23 and doc["version"] == importlib.metadata.version("bulk-import")
    assert doc["started_at"] <= doc["ended_at"]
    assert "guest:guest" not in summary.read_text()
