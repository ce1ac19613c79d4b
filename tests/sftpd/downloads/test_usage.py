"""docviewer and pdfs follow every sftpd command's usage rule: a bad option or variable, or a
--root that is no directory, exits 2 before anything is attempted and still leaves a Failed
result with reason InvalidArguments (no database needed: nothing gets that far)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from district_contract import commands
from district_contract.results import INVALID_ARGUMENTS


def sftpd(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("SFTPD_") and k != "DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "sftpd", *argv], env={**clean, **env},
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(("command", "env", "complaint"), [
    ("docviewer", {}, "is not a directory"),
    ("pdfs", {}, "is not a directory"),
    ("docviewer", {"SFTPD_TOKEN_TTL": "forever"}, "SFTPD_TOKEN_TTL='forever'"),
    ("docviewer", {"SFTPD_KEEP": "0"}, "SFTPD_KEEP='0': must be at least 1"),
    ("pdfs", {"SFTPD_KEEP_DAYS": "two"}, "SFTPD_KEEP_DAYS='two': not a whole number"),
    ("pdfs", {"SFTPD_TIMEZONE": "Mars/Olympus"}, "SFTPD_TIMEZONE='Mars/Olympus'"),
])
def test_bad_usage_exits_2_with_an_invalid_arguments_result(
        tmp_path: Path, command: str, env: dict[str, str], complaint: str) -> None:
    result_file = tmp_path / "result.json"
    key_file = tmp_path / "key"
    key_file.write_text("unused\n")
    root = tmp_path / ("nowhere" if "directory" in complaint else "volume")
    if root.name == "volume":
        root.mkdir()
    done = sftpd(command, env={
        "SFTPD_ROOT": str(root), "DATABASE_URL": "postgresql:///never-used",
        "SFTPD_FORMS": "IEP,504 Plan", "SFTPD_BASE_URL": "https://viewer.example.org/d",
        "SFTPD_TOKEN_KEY_FILE": str(key_file), "SFTPD_RESULT_FILE": str(result_file), **env})
    assert done.returncode == commands.EXIT_USAGE, (done.stdout, done.stderr)
    assert complaint in done.stderr and "Traceback" not in done.stderr
    result = json.loads(result_file.read_text())
    assert (result["kind"], result["outcome"], result["reason"]) == (
        command, "Failed", INVALID_ARGUMENTS)
    assert complaint in result["message"]
    assert not (tmp_path / "volume" / "downloads").exists()


def test_forms_split_at_commas_only_from_the_flag_or_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sftpd import cli

    monkeypatch.setenv("SFTPD_FORMS", "504 Plan, IEP,504 Plan")
    base = ("--root", "/r", "--database-url", "postgresql://x/y")
    parsed = cli.build_parser("pdfs").parse_args(["pdfs", *base])
    assert parsed.forms == ("504 Plan", "IEP")
    parsed = cli.build_parser("pdfs").parse_args(["pdfs", *base, "--forms", "ETR"])
    assert parsed.forms == ("ETR",)
    monkeypatch.setenv("SFTPD_STUDENTS", "S1, S2 S3")
    assert cli.build_parser("pdfs").parse_args(["pdfs", *base]).students == ["S1", "S2", "S3"]
