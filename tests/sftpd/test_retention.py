"""`sftpd retention` on a real tree: exactly the epochs processed more than N days ago go."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

NOW = datetime(2026, 11, 28, 3, 17, tzinfo=UTC)
NOW_TEXT = "2026-11-28T03:17:00Z"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def make_epoch(parent: Path, name: str, report: Any = None, mtime: datetime | None = None) -> Path:
    """An epoch directory with a few files (one nested); report is written as processing.json
    (a str is written as is, to make it malformed)."""
    epoch = parent / name
    (epoch / "nested").mkdir(parents=True)
    (epoch / "users.csv").write_text("sourcedId,givenName\n1,Ada\n")
    (epoch / "nested" / "orgs.csv").write_text("sourcedId,name\n1,Lincoln\n")
    (epoch / "processing.log").write_text("Outcome: Succeeded\n")
    if report is not None:
        text = report if isinstance(report, str) else json.dumps(report)
        (epoch / "processing.json").write_text(text)
    if mtime is not None:
        stamp = mtime.timestamp()
        os.utime(epoch, (stamp, stamp))
    return epoch


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root with its content hash (directories and symlinks marked)."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def retention(root: Path, tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any],
                                                                   list[dict[str, Any]]]:
    result_file = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "sftpd", "retention", "--root", str(root),
                           "--result-file", str(result_file), *extra],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.stderr == "", proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    return proc.returncode, json.loads(result_file.read_text()), events


@pytest.fixture
def district(tmp_path: Path) -> Path:
    """A tree with epochs processed 0..60 days ago, plus everything retention must not touch."""
    root = tmp_path / "volume"
    processed = root / "upload-processed"
    processed.mkdir(parents=True)
    for days in range(61):
        make_epoch(processed, f"day-{days:02d}",
                   {"epoch": f"day-{days:02d}", "outcome": "Succeeded",
                    "processedAt": iso(NOW - timedelta(days=days, hours=-1))})
    # Right at the boundary: exactly 30 days is not older than 30 days; a second more is.
    make_epoch(processed, "exactly-30d", {"processedAt": iso(NOW - timedelta(days=30))})
    make_epoch(processed, "30d-and-1s", {"processedAt": iso(NOW - timedelta(days=30, seconds=1))})
    # processing.json wins over an old mtime; the mtime counts only without processing.json.
    make_epoch(processed, "recent-report-old-mtime",
               {"processedAt": iso(NOW - timedelta(days=2))}, mtime=NOW - timedelta(days=50))
    make_epoch(processed, "no-report-45d", mtime=NOW - timedelta(days=45))
    make_epoch(processed, "no-report-10d", mtime=NOW - timedelta(days=10))
    # Another zone is fine: 2026-10-01T09:00+09:00 is 58 days before NOW.
    make_epoch(processed, "offset-zone", {"processedAt": "2026-10-01T09:00:00+09:00"})
    # Malformed reports: kept (even with an ancient mtime) and reported, never guessed.
    ancient = NOW - timedelta(days=400)
    make_epoch(processed, "bad-json", "{not json", mtime=ancient)
    make_epoch(processed, "no-processed-at", {"outcome": "Succeeded"}, mtime=ancient)
    make_epoch(processed, "naive-time", {"processedAt": "2026-01-01T00:00:00"}, mtime=ancient)
    make_epoch(processed, "number-time", {"processedAt": 1700000000}, mtime=ancient)
    make_epoch(processed, "list-report", "[1, 2]", mtime=ancient)
    # Not epochs: a stray file, a symlink to an old directory elsewhere, another job's hidden dir.
    (processed / "stray.txt").write_text("staff note\n")
    outside = make_epoch(tmp_path, "outside", {"processedAt": iso(ancient)}, mtime=ancient)
    (processed / "linked").symlink_to(outside)
    make_epoch(processed, ".in-progress", {"processedAt": iso(ancient)}, mtime=ancient)
    # Unprocessed uploads, however old and whatever they hold, are never touched.
    upload = root / "upload"
    upload.mkdir()
    make_epoch(upload, "old-unrecognized", mtime=ancient)
    make_epoch(upload, "old-with-report", {"processedAt": iso(ancient)}, mtime=ancient)
    (upload / "loose.csv").write_text("x\n")
    docviewer = root / "downloads" / "docviewer"
    make_epoch(docviewer, "2026-01-01", {"processedAt": iso(ancient)}, mtime=ancient)
    return root


EXPECTED_30 = sorted([f"upload-processed/day-{d:02d}" for d in range(31, 61)]
                     + ["upload-processed/30d-and-1s", "upload-processed/no-report-45d",
                        "upload-processed/offset-zone"])
MALFORMED = ["bad-json", "list-report", "naive-time", "no-processed-at", "number-time"]


def test_exactly_the_epochs_older_than_n_days_go(district: Path, tmp_path: Path) -> None:
    before = snapshot(district)
    code, result, events = retention(district, tmp_path, "--processed-days", "30",
                                     "--now", NOW_TEXT)

    assert sorted(result["deleted"]) == EXPECTED_30
    after = snapshot(district)
    gone = {p for p in before if p not in after}
    assert {p.split("/")[1] for p in gone} == {d.split("/")[1] for d in EXPECTED_30}
    # Everything else is byte for byte as it was (upload/, downloads/, kept epochs, non-epochs).
    assert {p: h for p, h in before.items() if p not in gone} == after
    assert (tmp_path / "outside" / "users.csv").exists()
    assert not any(p.startswith("upload-processed/.retention") for p in after)

    deleted_events = sorted(e["epoch"] for e in events if e["event"] == "retention.epoch_deleted")
    assert deleted_events == [d.split("/")[1] for d in EXPECTED_30]
    by_epoch = {e["epoch"]: e for e in events if e["event"] == "retention.epoch_deleted"}
    assert by_epoch["no-report-45d"]["source"] == "mtime"
    assert by_epoch["day-31"]["source"] == "processing.json"

    # The malformed reports are reported, with the file named, and make the run Failed.
    assert code == 1 and result["outcome"] == "Failed" and result["dryRun"] is False
    assert len(result["errors"]) == len(MALFORMED)
    for name in MALFORMED:
        assert any(f"upload-processed/{name}/processing.json" in e for e in result["errors"])
        assert f"upload-processed/{name}" in after
    assert "5 problems" in result["message"]


def test_dry_run_lists_and_deletes_nothing(district: Path, tmp_path: Path) -> None:
    before = snapshot(district)
    code, result, events = retention(district, tmp_path, "--processed-days", "30",
                                     "--now", NOW_TEXT, "--dry-run")
    assert snapshot(district) == before
    assert result["dryRun"] is True and sorted(result["deleted"]) == EXPECTED_30
    assert code == 1  # the malformed reports are still problems worth a look
    assert not any(e["event"] == "retention.epoch_deleted" for e in events)
    assert len([e for e in events if e["event"] == "retention.epoch_would_delete"]) == 33


def test_now_moves_the_clock(district: Path, tmp_path: Path) -> None:
    later = iso(NOW + timedelta(days=20))
    _, result, _ = retention(district, tmp_path, "--processed-days", "30", "--now", later)
    # 20 days later, everything processed more than 10 days before NOW has aged out.
    assert "upload-processed/day-11" in result["deleted"]
    assert "upload-processed/day-10" not in result["deleted"]
    assert "upload-processed/no-report-10d" not in result["deleted"]
    assert "upload-processed/recent-report-old-mtime" not in result["deleted"]
    earlier = iso(NOW - timedelta(days=365))
    _, result, _ = retention(district, tmp_path, "--processed-days", "1", "--now", earlier)
    assert result["deleted"] == []


def test_clean_tree_succeeds_and_interrupted_delete_is_finished(tmp_path: Path) -> None:
    root = tmp_path / "volume"
    processed = root / "upload-processed"
    processed.mkdir(parents=True)
    make_epoch(processed, "old", {"processedAt": iso(NOW - timedelta(days=90))})
    make_epoch(processed, "new", {"processedAt": iso(NOW - timedelta(days=1))})
    # What a sweep killed halfway through a delete leaves behind.
    make_epoch(processed, ".retention-deleting-older", {"processedAt": "garbage"})
    code, result, _ = retention(root, tmp_path, "--processed-days", "30", "--now", NOW_TEXT)
    assert code == 0 and result["outcome"] == "Succeeded" and result["errors"] == []
    assert result["deleted"] == ["upload-processed/old"]
    assert sorted(p.name for p in processed.iterdir()) == ["new"]


def good_backup(directory: Path, name: str) -> None:
    data = name.encode() * 100
    (directory / name).write_bytes(data)
    (directory / (name + ".sha256")).write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")


def test_backups_beyond_keep_are_pruned_never_the_newest(tmp_path: Path) -> None:
    root = tmp_path / "volume"
    backups = root / "downloads" / "backups"
    backups.mkdir(parents=True)
    names = [f"lincoln-2026112{d}T020000Z.dump" for d in range(1, 6)]
    for name in names:
        good_backup(backups, name)
    (backups / "lincoln-20261129T020000Z.dump").write_bytes(b"newer but never verified")
    (backups / "lincoln-20261120T020000Z.dump.sha256").write_text("0" * 64 + "  lost.dump\n")

    code, result, _ = retention(root, tmp_path, "--processed-days", "30", "--now", NOW_TEXT,
                                "--keep-backups", "2", "--dry-run")
    assert code == 0 and sorted(result["deleted"]) == [f"downloads/backups/{n}" for n in names[:3]]
    assert len(list(backups.iterdir())) == 12

    code, result, _ = retention(root, tmp_path, "--processed-days", "30", "--now", NOW_TEXT,
                                "--keep-backups", "2")
    assert code == 0
    remaining = sorted(p.name for p in backups.iterdir())
    assert remaining == sorted([names[3], names[3] + ".sha256", names[4], names[4] + ".sha256",
                                "lincoln-20261129T020000Z.dump"])
    check = subprocess.run(["sha256sum", "-c", names[4] + ".sha256"], cwd=backups,
                           capture_output=True, check=False)
    assert check.returncode == 0


def test_backups_are_left_to_a_running_backup_job(tmp_path: Path) -> None:
    root = tmp_path / "volume"
    backups = root / "downloads" / "backups"
    backups.mkdir(parents=True)
    for day in range(1, 4):
        good_backup(backups, f"lincoln-2026112{day}T020000Z.dump")
    # A backup job in another process holds the directory's lock while it dumps.
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from sftpd.backup.rotation import locked\n"
         f"with locked(Path({str(backups)!r})):\n"
         "    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code, result, events = retention(root, tmp_path, "--processed-days", "30",
                                         "--keep-backups", "1")
    finally:
        holder.kill()
        holder.wait()
    assert code == 0 and result["deleted"] == []
    assert len(list(backups.iterdir())) == 6
    assert any(e["event"] == "retention.backups_skipped" for e in events)


@pytest.mark.parametrize(("args", "complaint"), [
    (["--processed-days", "0"], "at least 1"),
    (["--processed-days", "30", "--keep-backups", "0"], "at least 1"),
    (["--processed-days", "30", "--now", "2026-11-28T03:17:00"], "no time zone"),
    (["--processed-days", "30", "--now", "yesterday"], "not an ISO-8601 time"),
])
def test_bad_options_are_refused_before_anything_is_touched(
        district: Path, tmp_path: Path, args: list[str], complaint: str) -> None:
    before = snapshot(district)
    proc = subprocess.run([sys.executable, "-m", "sftpd", "retention", "--root", str(district),
                           *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and complaint in proc.stderr
    assert snapshot(district) == before


def test_missing_root_is_bad_usage_with_a_failed_result(tmp_path: Path) -> None:
    result_file = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "sftpd", "retention", "--root",
                           str(tmp_path / "nowhere"), "--processed-days", "30",
                           "--result-file", str(result_file)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "not a directory" in proc.stderr
    result = json.loads(result_file.read_text())
    assert result["outcome"] == "Failed" and result["reason"] == "InvalidArguments"
    assert "not a directory" in result["message"]


def test_options_from_the_environment(district: Path, tmp_path: Path) -> None:
    env = dict(os.environ, SFTPD_ROOT=str(district), SFTPD_PROCESSED_DAYS="30",
               SFTPD_NOW=NOW_TEXT, SFTPD_DRY_RUN="true",
               SFTPD_RESULT_FILE=str(tmp_path / "env-result.json"))
    proc = subprocess.run([sys.executable, "-m", "sftpd", "retention"], env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1, proc.stderr
    result = json.loads((tmp_path / "env-result.json").read_text())
    assert result["dryRun"] is True and sorted(result["deleted"]) == EXPECTED_30
