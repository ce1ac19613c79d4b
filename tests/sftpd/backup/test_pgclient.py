"""Choosing the pg_dump for a server: at least the server's major version, the oldest such."""

from __future__ import annotations

from pathlib import Path

import pytest
from district_devtools.postgres import PostgresServer

from sftpd.backup.errors import BackupError
from sftpd.backup.pgclient import (
    ClientTools,
    Connection,
    candidate_bin_dirs,
    choose_client,
    installed_clients,
    probe_server_major,
)


def client(major: int) -> ClientTools:
    bin_dir = Path(f"/usr/lib/postgresql/{major}/bin")
    return ClientTools(major=major, pg_dump=bin_dir / "pg_dump", pg_restore=bin_dir / "pg_restore")


@pytest.mark.parametrize(("server", "installed", "chosen"), [
    (15, [15, 16, 17], 15),   # same major: archives any 15+ pg_restore reads
    (16, [15, 17, 16], 16),   # newer server: skip the older client
    (14, [17, 16], 16),       # older server: the oldest client able to dump it
    (17, [15, 16, 17, 18], 17),
])
def test_oldest_client_at_least_as_new_as_the_server(server: int, installed: list[int],
                                                      chosen: int) -> None:
    assert choose_client(server, [client(m) for m in installed]).major == chosen


def test_no_client_new_enough_is_a_clear_error() -> None:
    with pytest.raises(BackupError) as raised:
        choose_client(18, [client(15), client(17)])
    assert raised.value.reason == "NoSuitablePgDump"
    assert "PostgreSQL 18 server" in raised.value.message
    assert "postgresql-client-18" in raised.value.message
    assert "15 (/usr/lib/postgresql/15/bin/pg_dump)" in raised.value.message


def test_real_discovery_matches_the_running_server(postgres: PostgresServer) -> None:
    connection = Connection.from_url(postgres.url)
    server_major = probe_server_major(connection)
    clients = installed_clients(candidate_bin_dirs(None))
    # The test server comes from the newest installed server package, whose client is there.
    assert server_major in {c.major for c in clients}
    chosen = choose_client(server_major, clients)
    assert chosen.major == server_major and chosen.pg_dump.is_file()


def test_explicit_bin_dir_without_pg_dump_finds_nothing(tmp_path: Path) -> None:
    assert installed_clients(candidate_bin_dirs(tmp_path)) == []


def test_password_is_kept_out_of_the_connection_string() -> None:
    connection = Connection.from_url("postgresql://lincoln:s3cr%40t@db.example:5433/lincoln")
    assert connection.password == "s3cr@t"
    assert "s3cr" not in connection.conninfo and "s3cr" not in connection.redacted
    assert connection.database == "lincoln"
    assert connection.environment({})["PGPASSWORD"] == "s3cr@t"
