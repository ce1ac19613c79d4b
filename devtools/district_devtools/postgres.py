"""A throwaway PostgreSQL server: initdb into a directory, listen on a free loopback port."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from district_devtools.ports import free_port


class PsqlError(subprocess.CalledProcessError):
    """A failed psql run whose message includes what the server said."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server programs are not installed on this machine."""


def server_bin_dir() -> Path:
    """The newest installed PostgreSQL server's bin directory (Debian layout, then PATH)."""
    override = os.environ.get("PG_BIN_DIR")
    if override:
        return Path(override)
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted((p for p in debian.iterdir() if (p / "bin" / "initdb").exists()),
                          key=lambda p: int(p.name) if p.name.isdigit() else 0)
        if versions:
            return versions[-1] / "bin"
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise PostgresUnavailable("PostgreSQL server programs (initdb, pg_ctl) are not installed")


@dataclass
class PostgresServer:
    """One running server; `url` connects as the superuser to the `postgres` database."""

    data_dir: Path
    port: int
    bin_dir: Path
    user: str = "postgres"
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, database: str, user: str | None = None,
                     password: str | None = None) -> str:
        auth = user or self.user
        if password is not None:
            auth = f"{auth}:{password}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-d", self.database_url(database), "-c", sql],
            check=False, capture_output=True, text=True)
        if out.returncode != 0:
            raise PsqlError(out.returncode, out.args, out.stdout, out.stderr)
        return out.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def stop(self) -> None:
        _run_as_owner([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate",
                       "-w", "stop"], self.data_dir, check=False)

    def start(self) -> None:
        _run_as_owner([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60",
                       "-l", str(self.data_dir / "server.log"), "start"], self.data_dir)


def _owner_prefix(path: Path) -> list[str]:
    # initdb and postgres refuse to run as root; run them as the owner of the data directory.
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


def _run_as_owner(cmd: list[str], data_dir: Path, check: bool = True) -> None:
    subprocess.run(_owner_prefix(data_dir) + cmd, check=check, capture_output=True, text=True)


def start_postgres(base_dir: Path, port: int | None = None) -> PostgresServer:
    """initdb a fresh cluster under base_dir and start it; trust auth on loopback only."""
    bin_dir = server_bin_dir()
    base_dir.mkdir(parents=True, exist_ok=True)
    data_dir = base_dir / "data"
    socket_dir = base_dir / "socket"
    socket_dir.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(base_dir, "postgres", "postgres")
        shutil.chown(socket_dir, "postgres", "postgres")
    port = port or free_port()
    _run_as_owner([str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres",
                   "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                   "--locale=C.UTF-8"], data_dir)
    # Superuser over loopback without a password; other roles must use their password,
    # so tests can provoke a real authentication failure.
    hba = data_dir / "pg_hba.conf"
    hba.write_text(
        "local all all trust\n"
        "host all postgres 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n")
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\n"
                   f"unix_socket_directories = '{socket_dir}'\nfsync = off\n"
                   "synchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n")
    server = PostgresServer(data_dir=data_dir, port=port, bin_dir=bin_dir)
    server.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            server.psql("SELECT 1")
            return server
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
