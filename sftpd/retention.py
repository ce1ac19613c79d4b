"""`sftpd retention`: delete processed epochs past their days and backups past the kept number.

An epoch's age counts from when it was processed: `processedAt` in its processing.json, or the
directory's mtime only when processing.json is missing. A processing.json that cannot be read
is reported and its epoch kept: retention never guesses which data may go. Only
`upload-processed/` and `downloads/backups/` are ever touched; `upload/` is not even read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sftpd import tree
from sftpd.backup.events import log_event, utc_iso
from sftpd.backup.rotation import fsync_directory, locked, plan_prune, prune
from sftpd.epochs.names import PROCESSING_JSON
from sftpd.results import write_result

# An epoch is renamed to this hidden name before its files go, so a district never sees half
# an epoch, and a sweep killed midway is finished by the next one.
DELETING_PREFIX = ".retention-deleting-"


def _env(option: str) -> str | None:
    return os.environ.get("SFTPD_" + option.upper().replace("-", "_"))


def _at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def aware_time(text: str) -> datetime:
    """An ISO-8601 time with its zone (`2026-11-28T02:00:00Z`); a time without one is refused."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; add Z for UTC")
    return moment.astimezone(UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    root, days = _env("root"), _env("processed_days")
    parser.add_argument("--root", type=Path, default=root, required=root is None,
                        help="the district's volume (env SFTPD_ROOT)")
    parser.add_argument("--processed-days", type=_at_least(1), default=days,
                        required=days is None,
                        help="delete processed epochs older than this many days "
                             "(env SFTPD_PROCESSED_DAYS)")
    parser.add_argument("--keep-backups", type=_at_least(1), default=_env("keep_backups"),
                        help="also prune good backups beyond the newest N; the newest is never "
                             "deleted (env SFTPD_KEEP_BACKUPS; default: leave backups alone)")
    parser.add_argument("--now", type=aware_time, default=_env("now"),
                        help="the time to measure ages from, ISO-8601 with zone (env SFTPD_NOW; "
                             "default: the clock)")
    parser.add_argument("--dry-run", action="store_true",
                        default=(_env("dry_run") or "").lower() in ("1", "true", "yes"),
                        help="list what would be deleted, delete nothing (env SFTPD_DRY_RUN)")
    result_file = _env("result_file")
    parser.add_argument("--result-file", type=Path,
                        default=None if result_file is None else Path(result_file),
                        help="write the one-line JSON result here (env SFTPD_RESULT_FILE)")


class MalformedReportError(Exception):
    """processing.json exists but does not say when the epoch was processed."""


def processing_time(epoch_dir: Path) -> tuple[datetime, str]:
    """When the epoch was processed, and where that came from (processing.json or mtime)."""
    try:
        raw = (epoch_dir / PROCESSING_JSON).read_bytes()
    except FileNotFoundError:
        return datetime.fromtimestamp(epoch_dir.lstat().st_mtime, UTC), "mtime"
    except OSError as exc:
        raise MalformedReportError(f"cannot be read: {exc.strerror}") from None
    try:
        report = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedReportError(f"is not valid JSON ({exc})") from None
    if not isinstance(report, dict):
        raise MalformedReportError("is not a JSON object")
    stamp = report.get("processedAt")
    if not isinstance(stamp, str):
        raise MalformedReportError("has no processedAt string")
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        raise MalformedReportError(f"processedAt {stamp!r} is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise MalformedReportError(f"processedAt {stamp!r} has no time zone")
    return moment.astimezone(UTC), "processing.json"


@dataclass
class Sweep:
    """What one retention run did (or, in a dry run, would do)."""

    deleted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    kept_epochs: int = 0


def _delete_epoch(processed: Path, name: str) -> None:
    hidden = processed / (DELETING_PREFIX + name)
    (processed / name).rename(hidden)
    fsync_directory(processed)
    shutil.rmtree(hidden)


def sweep_epochs(root: Path, days: int, now: datetime, dry_run: bool, sweep: Sweep) -> None:
    processed = root / tree.UPLOAD_PROCESSED
    if not processed.is_dir():
        return
    cutoff = now - timedelta(days=days)
    with os.scandir(processed) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    for entry in entries:
        relative = f"{tree.UPLOAD_PROCESSED}/{entry.name}"
        if entry.name.startswith(DELETING_PREFIX) and entry.is_dir(follow_symlinks=False):
            if not dry_run:
                shutil.rmtree(entry.path)
                log_event("retention-finished-interrupted-delete", directory=relative)
            continue
        # Hidden entries are other jobs' work in progress; files and symlinks are not epochs.
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            processed_at, source = processing_time(Path(entry.path))
        except MalformedReportError as exc:
            sweep.errors.append(f"{relative}/{PROCESSING_JSON} {exc}; epoch kept")
            log_event("retention-epoch-kept-malformed-report", epoch=entry.name, error=str(exc))
            sweep.kept_epochs += 1
            continue
        if processed_at >= cutoff:
            sweep.kept_epochs += 1
            continue
        age_days = round((now - processed_at).total_seconds() / 86400, 2)
        fields = {"epoch": entry.name, "processedAt": utc_iso(processed_at), "source": source,
                  "ageDays": age_days}
        if dry_run:
            sweep.deleted.append(relative)
            log_event("retention-epoch-would-delete", **fields)
            continue
        try:
            _delete_epoch(processed, entry.name)
        except OSError as exc:
            sweep.errors.append(f"{relative}: cannot delete: {exc}")
            log_event("retention-epoch-delete-failed", epoch=entry.name, error=str(exc))
            continue
        sweep.deleted.append(relative)
        log_event("retention-epoch-deleted", **fields)


def sweep_backups(root: Path, keep: int, dry_run: bool, sweep: Sweep) -> None:
    directory = root / tree.BACKUPS
    if not directory.is_dir():
        return
    # The lock keeps this from pruning while a backup job is publishing a new one. A running
    # backup may take an hour and rotates the directory itself when done: skip, don't wait.
    try:
        with locked(directory, wait=False):
            if dry_run:
                names = [backup.name for backup in plan_prune(directory, keep)]
            else:
                names = prune(directory, keep)
    except BlockingIOError:
        log_event("retention-backups-skipped", reason="a backup is running and rotates them")
        return
    for name in names:
        sweep.deleted.append(f"{tree.BACKUPS}/{name}")
        log_event("retention-backup-would-delete" if dry_run else "retention-backup-deleted",
                  file=name)


def run(args: argparse.Namespace) -> int:
    now: datetime = args.now or datetime.now(UTC)
    sweep = Sweep()
    root: Path = args.root
    if not root.is_dir():
        sweep.errors.append(f"--root {root} is not a directory")
    else:
        try:
            sweep_epochs(root, args.processed_days, now, args.dry_run, sweep)
            if args.keep_backups is not None:
                sweep_backups(root, args.keep_backups, args.dry_run, sweep)
        except OSError as exc:
            sweep.errors.append(f"retention stopped: {exc}")
    verb = "would delete" if args.dry_run else "deleted"
    message = (f"{verb} {len(sweep.deleted)} (epochs processed before "
               f"{utc_iso(now - timedelta(days=args.processed_days))}); "
               f"{sweep.kept_epochs} epochs kept")
    if sweep.errors:
        message += f"; {len(sweep.errors)} problems: " + "; ".join(sweep.errors[:3])
    result = {"kind": "retention", "outcome": "Failed" if sweep.errors else "Succeeded",
              "deleted": sweep.deleted, "dryRun": bool(args.dry_run), "errors": sweep.errors,
              "message": message, "now": utc_iso(now), "processedDays": args.processed_days}
    log_event("retention-finished", outcome=result["outcome"], deleted=len(sweep.deleted),
              errors=len(sweep.errors), dryRun=bool(args.dry_run))
    write_result(args.result_file, result)
    return 0 if not sweep.errors else 1
