"""Talking to the district's PostgreSQL: probe the server, and pick a pg_dump able to dump it."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sftpd.backup.errors import BackupError

# Debian (and the image) install each client major side by side under this directory.
DEBIAN_POSTGRESQL_LIB = Path("/usr/lib/postgresql")
CONNECT_TIMEOUT_SECONDS = 15

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")

# libpq's wording for each way a connection fails, mapped to the reason a result carries.
_CONNECT_FAILURES: tuple[tuple[str, str, str], ...] = (
    ("password authentication failed", "AuthenticationFailed",
     "the database refused the password"),
    ("no password supplied", "AuthenticationFailed",
     "the database asks for a password and the URL has none"),
    ("authentication failed", "AuthenticationFailed", "the database refused the credentials"),
    ("does not exist", "DatabaseMissing", "the database or role does not exist"),
    ("connection refused", "DatabaseUnreachable", "nothing is listening at the database address"),
    ("timeout expired", "DatabaseUnreachable", "the database did not answer in time"),
    ("could not translate host name", "DatabaseUnreachable",
     "the database host name does not resolve"),
    ("no route to host", "DatabaseUnreachable", "the database host cannot be reached"),
    ("could not connect", "DatabaseUnreachable", "the database cannot be reached"),
)


@dataclass(frozen=True)
class Connection:
    """A libpq connection string without its password, and the password kept apart.

    pg_dump gets the password through PGPASSWORD, never on its command line, where every
    process in the pod could read it from /proc.
    """

    conninfo: str
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> Connection:
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise BackupError("InvalidDatabaseURL",
                              f"the database URL cannot be parsed: {exc}") from None
        password = params.pop("password", None)
        return cls(conninfo=make_conninfo("", **params),
                   password=None if password is None else str(password))

    @property
    def database(self) -> str:
        return str(conninfo_to_dict(self.conninfo).get("dbname") or "")

    @property
    def redacted(self) -> str:
        """Where the backup comes from, for messages (host, port, database, user; no secret)."""
        params = conninfo_to_dict(self.conninfo)
        return " ".join(f"{key}={params[key]}" for key in ("host", "port", "dbname", "user")
                        if params.get(key))

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env


def classify_connect_error(error: str, where: str) -> BackupError:
    """Turn libpq's connection failure text into a reason and a sentence a person can act on."""
    lowered = error.lower()
    for needle, reason, meaning in _CONNECT_FAILURES:
        if needle in lowered:
            return BackupError(reason, f"{meaning} ({where}): {error.strip()}")
    return BackupError("DatabaseError", f"cannot connect to the database ({where}): "
                                        f"{error.strip()}")


def probe_server_major(connection: Connection) -> int:
    """The server's major version (15 for 15.4), asked over a real connection."""
    try:
        with psycopg.connect(connection.conninfo, password=connection.password,
                             connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn:
            version = conn.info.server_version
    except psycopg.OperationalError as exc:
        raise classify_connect_error(str(exc), connection.redacted) from None
    # server_version is 150004 for 15.4; before 10 it was 90624 for 9.6.24.
    return version // 10000 if version >= 100000 else version // 100


@dataclass(frozen=True)
class ClientTools:
    """One installed PostgreSQL client: its major version and its pg_dump and pg_restore."""

    major: int
    pg_dump: Path
    pg_restore: Path


def client_major(pg_dump: Path) -> int | None:
    """The major version a pg_dump reports, or None when it does not run."""
    try:
        out = subprocess.run([str(pg_dump), "--version"], capture_output=True, text=True,
                             timeout=30, check=False)
    except OSError:
        return None
    match = _VERSION_RE.search(out.stdout)
    if out.returncode != 0 or match is None:
        return None
    major = int(match.group(1))
    # 9.6 and older name a major with two numbers; anything that old cannot dump a server >= 10.
    return major * 100 + int(match.group(2) or 0) if major < 10 else major


def candidate_bin_dirs(explicit: Path | None) -> list[Path]:
    """Where to look for pg_dump: the given directory only, else Debian's layout and PATH."""
    if explicit is not None:
        return [explicit]
    dirs: list[Path] = []
    if DEBIAN_POSTGRESQL_LIB.is_dir():
        dirs.extend(sorted(p / "bin" for p in DEBIAN_POSTGRESQL_LIB.iterdir()))
    on_path = shutil.which("pg_dump")
    if on_path is not None:
        dirs.append(Path(on_path).parent)
    return dirs


def installed_clients(bin_dirs: Iterable[Path]) -> list[ClientTools]:
    clients: list[ClientTools] = []
    for bin_dir in bin_dirs:
        pg_dump, pg_restore = bin_dir / "pg_dump", bin_dir / "pg_restore"
        if not (pg_dump.is_file() and pg_restore.is_file()):
            continue
        major = client_major(pg_dump)
        if major is not None:
            clients.append(ClientTools(major=major, pg_dump=pg_dump, pg_restore=pg_restore))
    return clients


def choose_client(server_major: int, clients: list[ClientTools]) -> ClientTools:
    """The oldest client at least as new as the server.

    pg_dump refuses a server newer than itself, so the client must be >= the server. Among
    those, the oldest wins: a newer pg_dump may write an archive format that the district's
    own (server-matched) pg_restore cannot read.
    """
    able = [c for c in clients if c.major >= server_major]
    if able:
        return min(able, key=lambda c: c.major)
    found = ", ".join(f"{c.major} ({c.pg_dump})" for c in clients) or "none"
    raise BackupError(
        "NoSuitablePgDump",
        f"no pg_dump is new enough for the PostgreSQL {server_major} server (installed: "
        f"{found}); pg_dump must be of the server's major version or newer: install "
        f"postgresql-client-{server_major} in the image or point --pg-bin-dir at one")
