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

from district_contract import commands, results
from district_contract.results import Outcome, RetentionResult

from sftpd import options, tree
from sftpd.backup.rotation import fsync_directory, locked, plan_prune, prune
from sftpd.epochs.names import PROCESSING_JSON
from sftpd.events import emit, utc_iso
from sftpd.options import UsageError

# An epoch is renamed to this hidden name before its files go, so a district never sees half
# an epoch, and a sweep killed midway is finished by the next one.
DELETING_PREFIX = ".retention-deleting-"


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
    opt = options.prepare(parser)
    opt.path(commands.ROOT, "the district's volume", required=True)
    opt.number(commands.PROCESSED_DAYS, "delete processed epochs older than this many days",
               minimum=1, required=True)
    opt.number(commands.KEEP_BACKUPS, "also prune good backups beyond the newest N; the newest "
               "is never deleted (default: leave backups alone)", minimum=1)
    opt.custom("now", "the time to measure ages from, ISO-8601 with zone (default: the clock)",
               aware_time, metavar="TIME")
    opt.switch("dry-run", "list what would be deleted, delete nothing")
    opt.path(commands.RESULT_FILE, "write the one-line JSON result here")


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
                emit("retention.interrupted_delete_finished", directory=relative)
            continue
        # Hidden entries are other jobs' work in progress; files and symlinks are not epochs.
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            processed_at, source = processing_time(Path(entry.path))
        except MalformedReportError as exc:
            sweep.errors.append(f"{relative}/{PROCESSING_JSON} {exc}; epoch kept")
            emit("retention.epoch_kept", epoch=entry.name, error=str(exc))
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
            emit("retention.epoch_would_delete", **fields)
            continue
        try:
            _delete_epoch(processed, entry.name)
        except OSError as exc:
            sweep.errors.append(f"{relative}: cannot delete: {exc}")
            emit("retention.epoch_delete_failed", epoch=entry.name, error=str(exc))
            continue
        sweep.deleted.append(relative)
        emit("retention.epoch_deleted", **fields)


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
        emit("retention.backups_skipped", reason="a backup is running and rotates them")
        return
    for name in names:
        sweep.deleted.append(f"{tree.BACKUPS}/{name}")
        emit("retention.backup_would_delete" if dry_run else "retention.backup_deleted",
             file=name)


def run(args: argparse.Namespace) -> int:
    now: datetime = args.now or datetime.now(UTC)
    root: Path = args.root
    if not root.is_dir():
        raise UsageError(f"--root {root} is not a directory")
    sweep = Sweep()
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
    result = RetentionResult(outcome=Outcome.FAILED if sweep.errors else Outcome.SUCCEEDED,
                             message=message, deleted=tuple(sweep.deleted),
                             errors=tuple(sweep.errors), dry_run=bool(args.dry_run),
                             now=utc_iso(now), processed_days=args.processed_days)
    emit("retention.finished", outcome=result.outcome, deleted=len(sweep.deleted),
         errors=len(sweep.errors), dryRun=result.dry_run)
    results.write(args.result_file, result)
    return commands.EXIT_FAILED if result.failed else commands.EXIT_OK
