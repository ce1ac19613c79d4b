"""The `sftpd backup` command line: options, one backup run, its JSON result and exit code."""

from __future__ import annotations

import argparse
import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from sftpd import tree
from sftpd.backup.archive import NO_SPACE_ERRNOS, VERIFY_MODES, disk_full, final_name, make_backup
from sftpd.backup.errors import BackupError
from sftpd.backup.events import log_event, utc_iso
from sftpd.backup.pgclient import (
    Connection,
    candidate_bin_dirs,
    choose_client,
    installed_clients,
    probe_server_major,
)
from sftpd.backup.rotation import good_backups, locked, prune, stale_temporaries
from sftpd.results import write_result

DEFAULT_KEEP = 14
DISTRICT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _env(option: str) -> str | None:
    return os.environ.get("SFTPD_" + option.upper().replace("-", "_"))


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be at least 1 (the newest good backup is always kept), not {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    root = _env("root")
    parser.add_argument("--root", type=Path, default=root, required=root is None,
                        help="the district's volume (env SFTPD_ROOT)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="libpq URL of the district's database (env DATABASE_URL)")
    parser.add_argument("--keep", type=positive_int, default=_env("keep") or DEFAULT_KEEP,
                        help=f"good backups to keep, at least 1 (env SFTPD_KEEP; {DEFAULT_KEEP})")
    parser.add_argument("--district", default=_env("district"),
                        help="file name prefix (env SFTPD_DISTRICT; default: the database name)")
    pg_bin_dir = _env("pg_bin_dir")
    parser.add_argument("--pg-bin-dir", type=Path, default=pg_bin_dir,
                        help="use pg_dump/pg_restore from this directory only (env "
                             "SFTPD_PG_BIN_DIR; default: the oldest installed client at least "
                             "as new as the server)")
    parser.add_argument("--verify", choices=VERIFY_MODES, default=_env("verify") or "list",
                        help="list: pg_restore reads the table of contents; full: it also reads "
                             "every data block (env SFTPD_VERIFY; default list)")
    result_file = _env("result_file")
    parser.add_argument("--result-file", type=Path,
                        default=None if result_file is None else Path(result_file),
                        help="write the one-line JSON result here (env SFTPD_RESULT_FILE)")


def district_prefix(explicit: str | None, connection: Connection) -> str:
    """The file name prefix: --district as given, else the database name made file-safe."""
    if explicit:
        if not DISTRICT_NAME.match(explicit):
            raise BackupError("InvalidArguments",
                              f"--district {explicit!r} must be letters, digits, '.', '_' or '-' "
                              "and start with a letter or digit")
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


def back_up(args: argparse.Namespace) -> dict[str, Any]:
    """One run: lock, clean up, dump, verify, publish, rotate; the result's success fields."""
    root: Path = args.root
    if not root.is_dir():
        raise BackupError("InvalidArguments", f"--root {root} is not a directory")
    if not args.database_url:
        raise BackupError("InvalidArguments", "no database: pass --database-url or set "
                                              "DATABASE_URL")
    connection = Connection.from_url(args.database_url)
    district = district_prefix(args.district, connection)
    tree.ensure_tree(root)
    directory = root / tree.BACKUPS
    with locked(directory):
        for name in stale_temporaries(directory):
            (directory / name).unlink(missing_ok=True)
            log_event("backup-stale-temporary-removed", file=name)
        server_major = probe_server_major(connection)
        tools = choose_client(server_major, installed_clients(candidate_bin_dirs(args.pg_bin_dir)))
        name = final_name(directory, district, datetime.now(UTC))
        log_event("backup-started", file=name, database=connection.redacted,
                  serverMajor=server_major, pgDump=str(tools.pg_dump))
        published = make_backup(directory, name, tools, connection, args.verify)
        log_event("backup-published", file=published.name, bytes=published.bytes,
                  sha256=published.sha256)
        pruned = prune(directory, args.keep)
        for pruned_name in pruned:
            log_event("backup-pruned", file=pruned_name)
        kept = len(good_backups(directory))
    return {"file": published.name, "bytes": published.bytes, "sha256": published.sha256,
            "completedAt": utc_iso(datetime.now(UTC)), "kept": kept, "pruned": pruned,
            "serverMajor": server_major, "pgDumpMajor": tools.major,
            "message": f"backup {published.name} ({published.bytes} bytes) verified; "
                       f"{kept} kept, {len(pruned)} pruned"}


def run(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {"kind": "backup", "outcome": "Failed", "file": "", "bytes": 0,
                              "sha256": "", "completedAt": "", "kept": 0, "pruned": []}
    try:
        with _sigterm_unwinds():
            result.update(back_up(args))
        result["outcome"] = "Succeeded"
    except BackupError as exc:
        result.update(reason=exc.reason, message=exc.message)
    except _Stopped:
        result.update(reason="Interrupted", message="the backup job was stopped (SIGTERM) "
                      "before it finished; the partial backup was removed")
    except OSError as exc:
        if exc.errno in NO_SPACE_ERRNOS:
            error = disk_full(Path(args.root) / tree.BACKUPS, str(exc))
            result.update(reason=error.reason, message=error.message)
        else:
            result.update(reason="FileSystemError", message=f"backup failed: {exc}")
    if result["outcome"] == "Failed":
        with suppress(OSError):
            result["kept"] = len(good_backups(Path(args.root) / tree.BACKUPS))
        log_event("backup-failed", reason=result["reason"], message=result["message"])
    write_result(args.result_file, result)
    return 0 if result["outcome"] == "Succeeded" else 1
