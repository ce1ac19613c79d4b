"""The processor's record of the gather staging directories it made, kept in the district's
database where no district can write: the only staging directories the processor acts on.

A staging directory lives in upload/, which the district writes; its name, its identity (device
and inode, taken right after the processor made it) and the names of the loose files to move into
it are recorded here before anything moves, so a planted or swapped directory, or a planted list
of names, is never trusted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from sftpd.epochs.ledger import SCHEMA

_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.gather_stagings (
  staging text PRIMARY KEY,
  epoch text NOT NULL,
  dev numeric NOT NULL,
  ino numeric NOT NULL,
  files bytea[] NOT NULL,
  made_at timestamptz NOT NULL
);
"""


@dataclass(frozen=True)
class Staging:
    """One staging directory the processor made: where, what it becomes, which files go in."""

    staging: str
    epoch: str
    dev: int
    ino: int
    files: list[str]

    def is_this(self, st: os.stat_result) -> bool:
        """Whether st is the very directory the processor made (not one put in its place)."""
        return (st.st_dev, st.st_ino) == (self.dev, self.ino)


class Record:
    """The staging rows of one district's database (autocommit: each call is durable)."""

    def __init__(self, conn: psycopg.Connection[Any], when: datetime) -> None:
        self.conn = conn
        self.when = when
        with conn.transaction():
            conn.execute(_DDL)

    def all(self) -> list[Staging]:
        rows = self.conn.execute(f"SELECT staging, epoch, dev, ino, files "  # noqa: S608
                                 f"FROM {SCHEMA}.gather_stagings ORDER BY staging").fetchall()
        return [Staging(r[0], r[1], int(r[2]), int(r[3]), [os.fsdecode(bytes(f)) for f in r[4]])
                for r in rows]

    def add(self, staging: Staging) -> None:
        self.conn.execute(
            f"INSERT INTO {SCHEMA}.gather_stagings "  # noqa: S608
            "(staging, epoch, dev, ino, files, made_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (staging.staging, staging.epoch, staging.dev, staging.ino,
             [os.fsencode(f) for f in staging.files], self.when))

    def drop(self, staging: Staging) -> None:
        self.conn.execute(f"DELETE FROM {SCHEMA}.gather_stagings "  # noqa: S608
                          "WHERE staging = %s", (staging.staging,))
