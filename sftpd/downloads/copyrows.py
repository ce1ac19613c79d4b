"""The messages of a `COPY ... TO STDOUT` read straight from libpq's buffer, a batch at a time."""

from __future__ import annotations

import selectors
import struct
from collections.abc import Iterator
from itertools import repeat
from operator import itemgetter

import psycopg
from psycopg import errors, pq
from psycopg.abc import Buffer


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


BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
BINARY_HEADER = BINARY_SIGNATURE + bytes(8)  # then flags 0 and no header extension
BINARY_TRAILER = b"\xff\xff"  # a field count of -1: no more tuples
ONE_FIELD = b"\x00\x01"
FIELD_COUNT = itemgetter(slice(0, 2))  # of a tuple message
FIELD_LENGTH = itemgetter(slice(2, 6))
FIELD_VALUE = itemgetter(slice(6, None))


def binary_values(conn: psycopg.Connection[tuple[object, ...]],
                  size: int) -> Iterator[list[Buffer]]:
    """The values of the one-column `COPY ... TO STDOUT (FORMAT binary)` just started on conn,
    in lists of up to `size` (one tuple a message, as for copy_batches); a NULL as b"".

    The file header arrives in front of the first tuple and the trailer as a message of its
    own (PostgreSQL's copyto.c); both are checked. Every tuple's field count and length are
    checked a batch at a time with no Python code run per tuple, so a framing that is not
    the one expected fails loudly (psycopg.DataError) instead of shifting values.
    """
    first, ended = True, False
    for messages in copy_batches(conn, size):
        batch: list[Buffer] = list(messages)
        if first:
            first = False
            head = bytes(batch[0])
            if not head.startswith(BINARY_HEADER):
                raise psycopg.DataError("not a binary COPY without header extension: "
                                        f"{head[:len(BINARY_HEADER)]!r}")
            batch[0] = head[len(BINARY_HEADER):]
            if not batch[0]:  # a header sent as a message of its own
                del batch[0]
        if ended:
            raise psycopg.DataError("a binary COPY message after its trailer")
        if batch and batch[-1] == BINARY_TRAILER:
            del batch[-1]
            ended = True
        if not batch:
            continue
        count = len(batch)
        try:
            lengths = struct.unpack(f">{count}i", b"".join(map(FIELD_LENGTH, batch)))
        except struct.error:  # a message too short to hold a field's length
            lengths = ()
        values = list(map(FIELD_VALUE, batch))
        if (b"".join(map(FIELD_COUNT, batch)) != ONE_FIELD * count
                or list(map(max, lengths, repeat(0, count))) != list(map(len, values))):
            raise psycopg.DataError("a binary COPY message is not one tuple of one field")
        yield values
    if not first and not ended:
        raise psycopg.DataError("a binary COPY without its trailer")
