"""The `sftpd backup` command line: options, one backup run, its JSON result and exit code."""

from __future__ import annotations

import argparse
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from district_contract import commands, results
from district_contract.results import BackupResult, Outcome

from sftpd import options, tree
from sftpd.backup.archive import NO_SPACE_ERRNOS, VERIFY_MODES, disk_full, final_name, make_backup
from sftpd.backup.errors import BackupError
from sftpd.backup.pgclient import (
    Connection,
    candidate_bin_dirs,
    choose_client,
    installed_clients,
    probe_server_major,
)
from sftpd.backup.rotation import good_backups, locked, prune, stale_temporaries
from sftpd.events import emit, utc_iso
from sftpd.options import UsageError

DEFAULT_KEEP = 14
DISTRICT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def district_name(text: str) -> str:
    """A --district given: usable as a file name prefix as it is."""
    if not DISTRICT_NAME.match(text):
        raise ValueError("must be letters, digits, '.', '_' or '-' and start with a letter or "
                         "digit")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opt = options.prepare(parser)
    opt.path(commands.ROOT, "the district's volume", required=True)
    opt.database_url()
    # --keep / SFTPD_KEEP: this option's name before retention's --keep-backups became the one
    # name for it; still accepted.
    opt.number(commands.KEEP_BACKUPS, "good backups to keep, at least 1", DEFAULT_KEEP,
               minimum=1, deprecated=("keep",))
    opt.custom(commands.DISTRICT, "file name prefix (default: the database name)",
               district_name, metavar="NAME")
    opt.path("pg-bin-dir", "use pg_dump/pg_restore from this directory only (default: the "
             "oldest installed client at least as new as the server)")
    opt.text("verify", "list: pg_restore reads the table of contents; full: it also reads "
             "every data block", "list", choices=VERIFY_MODES)
    opt.path(commands.RESULT_FILE, "write the one-line JSON result here")


def district_prefix(explicit: str | None, connection: Connection) -> str:
    """The file name prefix: --district as given, else the database name made file-safe."""
    if explicit:
        return explicit
    derived = re.sub(r"[^A-Za-z0-9._-]+", "-", connection.database).strip("-._")
    return derived or "database"


class _Stopped(BaseException):
    """SIGTERM arrived: unwind through every cleanup, then report."""


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Stopped

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def back_up(args: argparse.Namespace) -> BackupResult:
    """One run: lock, clean up, dump, verify, publish, rotate; its successful result."""
    root: Path = args.root
    connection = Connection.from_url(args.database_url)
    district = district_prefix(args.district, connection)
    tree.ensure_tree(root)
    directory = root / tree.BACKUPS
    with locked(directory):
        for name in stale_temporaries(directory):
            (directory / name).unlink(missing_ok=True)
            emit("backup.temporary_removed", file=name)
        server_major = probe_server_major(connection)
        tools = choose_client(server_major, installed_clients(candidate_bin_dirs(args.pg_bin_dir)))
        name = final_name(directory, district, datetime.now(UTC))
        emit("backup.started", file=name, database=connection.redacted,
             serverMajor=server_major, pgDump=str(tools.pg_dump))
        published = make_backup(directory, name, tools, connection, args.verify)
        emit("backup.published", file=published.name, bytes=published.bytes,
             sha256=published.sha256)
        pruned = prune(directory, args.keep_backups)
        for pruned_name in pruned:
            emit("backup.pruned", file=pruned_name)
        kept = len(good_backups(directory))
    return BackupResult(
        outcome=Outcome.SUCCEEDED, file=published.name, bytes=published.bytes,
        sha256=published.sha256, completed_at=utc_iso(datetime.now(UTC)), kept=kept,
        pruned=tuple(pruned), server_major=server_major, pg_dump_major=tools.major,
        message=f"backup {published.name} ({published.bytes} bytes) verified; "
                f"{kept} kept, {len(pruned)} pruned")


def run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not root.is_dir():
        raise UsageError(f"--root {root} is not a directory")
    try:
        with _sigterm_unwinds():
            result = back_up(args)
    except BackupError as exc:
        result = _failed(root, exc.reason, exc.message)
    except _Stopped:
        result = _failed(root, "Interrupted", "the backup job was stopped (SIGTERM) before it "
                         "finished; the partial backup was removed")
    except OSError as exc:
        if exc.errno in NO_SPACE_ERRNOS:
            error = disk_full(root / tree.BACKUPS, str(exc))
            result = _failed(root, error.reason, error.message)
        else:
            result = _failed(root, "FileSystemError", f"backup failed: {exc}")
    results.write(args.result_file, result)
    return commands.EXIT_FAILED if result.failed else commands.EXIT_OK


def _failed(root: Path, reason: str, message: str) -> BackupResult:
    kept = 0
    with suppress(OSError):
        kept = len(good_backups(root / tree.BACKUPS))
    emit("backup.failed", reason=reason, message=message)
    return BackupResult(outcome=Outcome.FAILED, reason=reason, message=message, kept=kept)
