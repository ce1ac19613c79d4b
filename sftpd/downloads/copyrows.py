"""The rows of a `COPY ... TO STDOUT` read straight from libpq's buffer, a batch at a time."""

from __future__ import annotations

import selectors
from collections.abc import Iterator

import psycopg
from psycopg import errors, pq


def copy_batches(conn: psycopg.Connection[tuple[object, ...]],
                 size: int) -> Iterator[list[memoryview]]:
    """The rows (one COPY message each) of the COPY TO just started on conn (inside its
    `cursor.copy()` block), in lists of `size`, the last one shorter.

    psycopg's own iteration resumes two generators and a wait loop for every row, two thirds
    of what reading a row costs the client (bench/docviewer_vs_copy.py); here a row is one
    call of libpq's PQgetCopyData, and the socket is waited on only when libpq's buffer holds
    no whole row: with a selector, so a signal handler (SIGTERM) still runs while waiting.
    The COPY's final result is read here and an error in it raised as psycopg raises it;
    `cursor.copy()`'s block then ends without reading anything more (it reads only to cancel
    a COPY left by an exception, and libpq still has that COPY in progress then).
    """
    pgconn = conn.pgconn
    read_row = pgconn.get_copy_data
    batch: list[memoryview] = []
    with selectors.DefaultSelector() as selector:
        selector.register(pgconn.socket, selectors.EVENT_READ)
        while True:
            nbytes, row = read_row(1)  # 1: never block inside libpq
            if nbytes > 0:
                batch.append(row)
                if len(batch) == size:
                    yield batch
                    batch = []
            elif nbytes == 0:  # no whole row buffered: wait for the server
                selector.select()
                pgconn.consume_input()
            else:  # -1: the COPY is over (or failed); its result follows
                break
    _final_result(conn)
    if batch:
        yield batch


def _final_result(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Read the results that end a COPY; raise the first error among them."""
    failure: psycopg.Error | None = None
    while (result := conn.pgconn.get_result()) is not None:
        if result.status == pq.ExecStatus.FATAL_ERROR and failure is None:
            failure = errors.error_from_result(result, encoding=conn.info.encoding)
    if failure is not None:
        raise failure
