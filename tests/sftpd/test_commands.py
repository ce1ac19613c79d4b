"""Every `sftpd` subcommand reads its options one way and exits by one rule (0 ok, 1 failed,
2 bad usage), and a job refused for bad usage still leaves a result saying so."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from district_contract import commands
from district_contract.results import INVALID_ARGUMENTS

from sftpd import cli
from sftpd.options import UsageError


def sftpd(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real `sftpd` command, with only the SFTPD_* variables given here."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("SFTPD_") and k != "DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "sftpd", *argv], env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=120, check=False)


def parse(command: str, *argv: str) -> argparse.Namespace:
    return cli.build_parser(command).parse_args([command, *argv])


def options_of(command: str) -> list[argparse.Action]:
    parser = cli.build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices[command]._actions
            if a.option_strings and a.help != argparse.SUPPRESS and a.dest != "help"]


@pytest.mark.parametrize("command", list(cli.SUBCOMMANDS))
def test_help_names_every_variable_and_the_exit_codes(command: str) -> None:
    done = sftpd(command, "--help")
    assert done.returncode == 0, done.stderr
    assert commands.EXIT_CODES_HELP in " ".join(done.stdout.split())
    for action in options_of(command):
        option = action.option_strings[0].removeprefix("--")
        expected = "DATABASE_URL" if option == "database-url" else commands.env_var(option)
        assert f"(env {expected}" in str(action.help), (command, option, action.help)


@pytest.mark.parametrize(("value", "expected"), [
    ("1", True), ("true", True), ("YES", True), ("On", True),
    ("0", False), ("false", False), ("no", False), ("OFF", False)])
def test_booleans_read_one_way(monkeypatch: pytest.MonkeyPatch, value: str,
                               expected: bool) -> None:
    monkeypatch.setenv("SFTPD_DRY_RUN", value)
    monkeypatch.setenv("SFTPD_COMPAT_MACS", value)
    assert parse("retention", "--root", "/r", "--processed-days", "3").dry_run is expected
    assert parse("serve", "--login", "l").compat_macs is expected
    # The flag and its --no- form override the variable.
    assert parse("serve", "--login", "l", "--no-compat-macs").compat_macs is False
    assert parse("serve", "--login", "l", "--compat-macs").compat_macs is True


def test_a_boolean_that_is_neither_is_bad_usage_with_a_result(tmp_path: Path) -> None:
    result_file = tmp_path / "result.json"
    (tmp_path / "volume").mkdir()
    done = sftpd("retention", "--root", str(tmp_path / "volume"), "--processed-days", "30",
                 env={"SFTPD_DRY_RUN": "maybe", "SFTPD_RESULT_FILE": str(result_file)})
    assert done.returncode == commands.EXIT_USAGE
    assert "SFTPD_DRY_RUN='maybe'" in done.stderr and "1/true/yes/on" in done.stderr
    result = json.loads(result_file.read_text())
    assert (result["kind"], result["outcome"], result["reason"]) == (
        "retention", "Failed", INVALID_ARGUMENTS)
    assert "SFTPD_DRY_RUN='maybe'" in result["message"]


def test_lists_from_the_variable_or_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    # The default is every registered format, in the order they are asked.
    assert parse("process-epochs", "--root", "/r").formats == ["oneroster", "generic-csv",
                                                               "prior-system-pdfs"]
    # `processing.formats: []`: set but empty is the empty list, not the default.
    monkeypatch.setenv("SFTPD_FORMATS", "")
    assert parse("process-epochs", "--root", "/r").formats == []
    monkeypatch.setenv("SFTPD_HOST_KEY", "/k/a, /k/b")
    assert parse("serve", "--login", "l").host_key == ["/k/a", "/k/b"]
    # The first flag replaces the variable's list; more flags add to it.
    assert parse("serve", "--login", "l", "--host-key", "/c,/d", "--host-key", "/e").host_key \
        == ["/c", "/d", "/e"]


def test_the_processor_limits_from_the_variable_or_the_flags(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    args = parse("process-epochs", "--root", "/r")
    assert (args.max_tree_depth, args.max_tree_entries) == (32, 100_000)
    monkeypatch.setenv("SFTPD_MAX_TREE_DEPTH", "5")
    args = parse("process-epochs", "--root", "/r", "--max-tree-entries", "7")
    assert (args.max_tree_depth, args.max_tree_entries) == (5, 7)
    monkeypatch.setenv("SFTPD_MAX_TREE_ENTRIES", "0")
    with pytest.raises(UsageError, match="SFTPD_MAX_TREE_ENTRIES='0': must be at least 1"):
        parse("process-epochs", "--root", "/r")


@pytest.mark.parametrize(("argv", "env", "complaint"), [
    (["serve", "--login", "l"], {"SFTPD_PORT": "22x"}, "SFTPD_PORT='22x': not a whole number"),
    (["serve", "--login", "l", "--allowed-source", "10.0.0.0/99"], {}, "10.0.0.0/99"),
    (["serve"], {}, "required: --login"),
    (["bogus"], {}, "invalid choice"),
    ([], {}, "required: COMMAND"),
])
def test_the_server_and_the_entry_point_exit_2_on_bad_usage(
        argv: list[str], env: dict[str, str], complaint: str) -> None:
    done = sftpd(*argv, env=env)
    assert done.returncode == commands.EXIT_USAGE, done.stderr
    assert complaint in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(("argv", "env", "complaint"), [
    (["process-epochs", "--database-url", "postgresql://x/y"],
     {"SFTPD_SETTLE_SECONDS": "soon"}, "SFTPD_SETTLE_SECONDS='soon': not a number"),
    (["process-epochs", "--database-url", "postgresql://x/y", "--formats", "oneroster,csv2"],
     {}, "unknown format(s) in --formats: csv2"),
    (["process-epochs", "--database-url", "postgresql://x/y", "--now", "2026-12-01T02:00"],
     {}, "needs a time zone"),
    (["process-epochs"], {}, "required: --database-url"),
    (["retention", "--processed-days", "0"], {}, "must be at least 1, not 0"),
    (["backup", "--database-url", "postgresql://x/y", "--keep-backups", "0"], {},
     "must be at least 1, not 0"),
    (["backup", "--database-url", "postgresql://x/y", "--keep", "0"], {},
     "must be at least 1, not 0"),
    (["backup", "--database-url", "postgresql://x/y", "--district", "../etc"], {},
     "must be letters, digits"),
    (["backup", "--database-url", "postgresql://x/y", "--verify", "some"], {},
     "choose one of list, full"),
    (["backup"], {"SFTPD_KEEP_BACKUPS": "-1", "DATABASE_URL": "postgresql://x/y"},
     "SFTPD_KEEP_BACKUPS='-1'"),
])
def test_a_job_used_wrongly_exits_2_and_its_result_says_why(
        tmp_path: Path, argv: list[str], env: dict[str, str], complaint: str) -> None:
    root = tmp_path / "volume"
    root.mkdir()
    result_file = tmp_path / "result.json"
    done = sftpd(*argv, "--root", str(root), "--result-file", str(result_file), env=env)
    assert done.returncode == commands.EXIT_USAGE, (done.stdout, done.stderr)
    assert complaint in done.stderr and "Traceback" not in done.stderr
    result: dict[str, Any] = json.loads(result_file.read_text())
    assert result["kind"] == cli.RESULT_KINDS[argv[0]]
    assert result["outcome"] == "Failed" and result["reason"] == INVALID_ARGUMENTS
    assert complaint in result["message"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json", "volume"]
    assert list(root.iterdir()) == []  # nothing was attempted


@pytest.mark.parametrize("command", ["retention", "backup"])
def test_a_root_that_is_no_directory_is_bad_usage(tmp_path: Path, command: str) -> None:
    result_file = tmp_path / "result.json"
    done = sftpd(command, "--root", str(tmp_path / "nowhere"), "--processed-days", "1",
                 "--result-file", str(result_file), env={"DATABASE_URL": "postgresql://x/y"})
    if command == "backup":  # backup has no --processed-days: still bad usage, still a result
        assert "unrecognized arguments: --processed-days" in done.stderr
        done = sftpd(command, "--root", str(tmp_path / "nowhere"), "--result-file",
                     str(result_file), env={"DATABASE_URL": "postgresql://x/y"})
    assert done.returncode == commands.EXIT_USAGE, done.stderr
    assert "is not a directory" in done.stderr
    assert json.loads(result_file.read_text())["reason"] == INVALID_ARGUMENTS


def test_backups_to_keep_has_one_name_and_the_old_one_still_works(
        monkeypatch: pytest.MonkeyPatch) -> None:
    base = ("--root", "/r", "--database-url", "postgresql://x/y")
    assert parse("backup", *base).keep_backups == 14
    assert parse("retention", "--root", "/r", "--processed-days", "1").keep_backups is None
    assert parse("backup", *base, "--keep-backups", "3").keep_backups == 3
    assert parse("backup", *base, "--keep", "4").keep_backups == 4
    monkeypatch.setenv("SFTPD_KEEP", "5")
    assert parse("backup", *base).keep_backups == 5
    monkeypatch.setenv("SFTPD_KEEP_BACKUPS", "6")
    assert parse("backup", *base).keep_backups == 6
    names = {a.option_strings[0] for a in options_of("backup")}
    assert "--keep-backups" in names and "--keep" not in names  # the old name is not advertised


def test_every_variable_the_operator_sets_is_read_by_its_command() -> None:
    from district_operator import builders, names

    from tests.district_operator.builders.test_builders import INPUTS, district

    d = district(allowedSourceRanges=["203.0.113.0/24"],
                 processing={"databaseSecretRef": {"name": "db"}},
                 backups={"databaseSecretRef": {"name": "db"}},
                 integration={"mode": "pull", "sif": {
                     "zoneURL": "https://zis.example/zone", "sourceId": "agent",
                     "authSecretRef": {"name": "zone"},
                     "caSecretRef": {"name": "zone-ca", "key": "ca.crt"}}})
    built = {commands.SERVE: list(builders.server.server_env(d))}
    for job, cronjob in builders.cronjobs(d, INPUTS).items():
        container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        built[names.JOB_COMMANDS[job]] = [e["name"] for e in container["env"]]
    # docviewer and pdfs are not scheduled by the operator yet (docs/downloads.md),
    # docviewer-token is the viewer side's tool, and the chart's gateway Deployment is not
    # built yet (docs/gateway.md): nothing sets variables for them.
    unscheduled = {commands.DOCVIEWER, commands.PDFS, commands.DOCVIEWER_TOKEN,
                   commands.GATEWAY}
    assert set(built) == set(cli.SUBCOMMANDS) - unscheduled
    for command, variables in built.items():
        read = {"DATABASE_URL" if a.dest == "database_url"
                else commands.env_var(a.option_strings[0].removeprefix("--"))
                for a in options_of(command)}
        assert set(variables) <= read, (command, set(variables) - read)
