"""The documents contract (documents.sql): applying it, and the names the jobs read."""

from __future__ import annotations

from importlib import resources

import psycopg

DOCUMENTS = "documents.documents"
STUDENTS = "documents.students"
# One advisory lock key for "creating the documents contract", so two jobs starting at once
# do not race in CREATE ... IF NOT EXISTS (which is not safe against a concurrent create).
CONTRACT_LOCK_KEY = 0x646F6373  # "docs"


def contract_sql() -> str:
    return resources.files("sftpd.downloads").joinpath("documents.sql").read_text()


def ensure_contract(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Create whatever part of the contract is missing; True if anything was created.

    Nothing is run when both relations exist, so a job whose role may only read them works.
    """
    present = conn.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
                           (DOCUMENTS, STUDENTS)).fetchone()
    conn.commit()
    if present is not None and present[0]:
        return False
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (CONTRACT_LOCK_KEY,))
        conn.execute(contract_sql().encode())
    return True
