"""The ledger: one row per processed epoch (name + content digest), written in the same
transaction as the import, so a rerun knows exactly what was already done."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

SCHEMA = "sftpd"
# Session lock that keeps two processors (the CronJob and a staff run) from interleaving.
LOCK_KEY = 0x5F7D_E90C

_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.epochs (
  name text NOT NULL,
  digest text NOT NULL,
  format text,
  outcome text NOT NULL CHECK (outcome IN ('Succeeded', 'Failed')),
  rows bigint NOT NULL DEFAULT 0,
  errors bigint NOT NULL DEFAULT 0,
  processed_at timestamptz NOT NULL,
  report jsonb NOT NULL,
  moved_to text,
  moved_at timestamptz,
  PRIMARY KEY (name, digest)
);
"""


@dataclass(frozen=True)
class Entry:
    """One recorded epoch; `report` is what processing.json holds."""

    name: str
    digest: str
    outcome: str
    report: dict[str, Any]


def ensure(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(_DDL)


def try_lock(conn: psycopg.Connection[Any], wait_seconds: int = 15) -> bool:
    """Take the processors' session lock, waiting a little: a run killed a moment ago holds
    it until its server backend notices the closed connection."""
    conn.execute(f"SET lock_timeout = '{int(wait_seconds)}s'")
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    except psycopg.errors.LockNotAvailable:
        return False
    finally:
        conn.execute("RESET lock_timeout")
    return True


def lookup(conn: psycopg.Connection[Any], name: str, digest: str) -> Entry | None:
    row = conn.execute(f"SELECT outcome, report FROM {SCHEMA}.epochs "  # noqa: S608
                       "WHERE name = %s AND digest = %s", (name, digest)).fetchone()
    return None if row is None else Entry(name, digest, row[0], row[1])


def unmoved(conn: psycopg.Connection[Any]) -> list[Entry]:
    """Epochs recorded whose move was not confirmed (a crash between commit and move)."""
    rows = conn.execute(f"SELECT name, digest, outcome, report FROM {SCHEMA}.epochs "  # noqa: S608
                        "WHERE moved_at IS NULL ORDER BY name").fetchall()
    return [Entry(*r) for r in rows]


def record(conn: psycopg.Connection[Any], name: str, digest: str, report: dict[str, Any],
           processed_at: datetime) -> None:
    """Insert the epoch's row; call inside the import's transaction."""
    conn.execute(
        f"INSERT INTO {SCHEMA}.epochs (name, digest, format, outcome, rows, errors, "  # noqa: S608
        "processed_at, report) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (name, digest, report["format"], report["outcome"], report["rows"], report["errors"],
         processed_at, Jsonb(report)))


def mark_moved(conn: psycopg.Connection[Any], name: str, digest: str, moved_to: str | None,
               moved_at: datetime) -> None:
    conn.execute(f"UPDATE {SCHEMA}.epochs SET moved_to = %s, moved_at = %s "  # noqa: S608
                 "WHERE name = %s AND digest = %s AND moved_at IS NULL",
                 (moved_to, moved_at, name, digest))
