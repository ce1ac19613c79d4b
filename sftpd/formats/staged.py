"""Rows of a staging table that break a format's checks, found cheaply and worded for those rows
only: the one search both importers run before their merges."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

# One check: (a condition true for a bad row, the message expression for such a row).
Check = tuple[sql.Composable, sql.Composable]


def offending_rows(conn: psycopg.Connection[Any], stage: sql.Composable,
                   checks: Sequence[Check], limit: int
                   ) -> tuple[list[str], list[tuple[str, str]], int]:
    """The first `limit` offending rows' ctids, each message for those rows (ctid, message) in
    file order, and how many messages there are in all (counted only when the limit is hit).

    First a plain filter finds the bad rows (cheap: most files have none); only those rows
    then get their messages built.
    """
    condition = sql.SQL(" OR ").join(sql.SQL("({})").format(bad) for bad, _ in checks)
    bad_rows = [str(r[0]) for r in conn.execute(sql.SQL(
        # (named `at`: a column named ctid would make ORDER BY sort the text, not the tid)
        "SELECT ctid::text AS at FROM {} WHERE {} ORDER BY ctid LIMIT {}").format(
            stage, condition, sql.Literal(limit))).fetchall()]
    if not bad_rows:
        return [], [], 0
    messages = sql.SQL(", ").join(sql.SQL("CASE WHEN {} THEN {} END").format(bad, message)
                                  for bad, message in checks)
    body = sql.SQL("FROM {} AS s CROSS JOIN LATERAL unnest(ARRAY[{}]) AS m(msg) "
                   "WHERE msg IS NOT NULL").format(stage, messages)
    # The ctids go in as a literal: the checks hold LIKE patterns whose % is not a parameter.
    found = [(str(ctid), str(msg)) for ctid, msg in conn.execute(sql.SQL(
        "SELECT s.ctid::text, msg {} AND s.ctid = ANY({}::tid[]) ORDER BY s.ctid").format(
            body, sql.Literal(bad_rows))).fetchall()]
    total = len(found)
    if len(bad_rows) == limit:
        row = conn.execute(sql.SQL("SELECT count(*) {}").format(body)).fetchone()
        total = int(row[0]) if row else total
    return bad_rows, found, total
