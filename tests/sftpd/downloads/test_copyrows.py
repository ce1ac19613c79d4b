"""copy_batches and binary_values against a real PostgreSQL: rows, errors, signals, framing."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from types import FrameType

import psycopg
import pytest

from sftpd.downloads.copyrows import binary_values, copy_batches

pytestmark = pytest.mark.postgres

# Rows of many sizes, some with a quote and a line break inside a cell.
ROWS = ("COPY (SELECT g, repeat('x', g %% 300), 'a,\"b\"' || chr(10) || g"
        " FROM generate_series(1, %s) AS g) TO STDOUT (FORMAT csv)")


def test_the_rows_are_psycopgs_own_in_batches_and_the_session_goes_on(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        with conn.cursor() as cur, cur.copy(ROWS, (2503,)) as copy:
            expected = [bytes(row) for row in copy]
        with conn.cursor() as cur, cur.copy(ROWS, (2503,)):
            batches = [[bytes(row) for row in batch] for batch in copy_batches(conn, 1000)]
        assert [len(b) for b in batches] == [1000, 1000, 503]
        assert [row for batch in batches for row in batch] == expected
        # The COPY's end was read: the same session runs the next statement at once.
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)


def test_an_empty_copy_yields_nothing(database_url: str) -> None:
    with psycopg.connect(database_url) as conn, conn.cursor() as cur, cur.copy(ROWS, (0,)):
        assert list(copy_batches(conn, 1000)) == []


def test_an_error_after_rows_is_raised_as_psycopg_raises_it(database_url: str) -> None:
    """The server fails half way (rows already sent): the error comes out, typed."""
    failing = ("COPY (SELECT CASE WHEN g < 3000 THEN g ELSE 1 / (g - g) END"
               " FROM generate_series(1, 6000) AS g) TO STDOUT")
    with psycopg.connect(database_url) as conn:
        seen = 0
        with pytest.raises(psycopg.errors.DivisionByZero), conn.cursor() as cur, \
                cur.copy(failing):
            for batch in copy_batches(conn, 1000):
                seen += len(batch)
        assert seen <= 2999
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


class Alarm(Exception):
    pass


def _raise_alarm(signum: int, frame: FrameType | None) -> None:
    raise Alarm


@pytest.fixture
def alarm_handler() -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _raise_alarm)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_signal_interrupts_the_wait_for_a_slow_server(database_url: str,
                                                        alarm_handler: None) -> None:
    """Waiting for rows is a selector's wait, not a blocking libpq call: a signal handler
    (the job's SIGTERM) runs at once, and the COPY is cancelled, not waited out."""
    stalls = ("COPY (SELECT g, CASE WHEN g = 5000 THEN pg_sleep(120) END"
              " FROM generate_series(1, 5000) AS g) TO STDOUT")
    with psycopg.connect(database_url) as conn:
        started = time.monotonic()
        with pytest.raises(Alarm), conn.cursor() as cur, cur.copy(stalls):
            for _batch in copy_batches(conn, 1000):
                signal.alarm(1)  # rows arrived: the server is about to stall
        assert time.monotonic() - started < 60
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


# One bytea column of many sizes: empty, NULL every 7th, NULs and 0xff inside.
VALUES = ("COPY (SELECT CASE WHEN g %% 7 = 0 THEN NULL"
          " ELSE decode(repeat('00ff41', g %% 50), 'hex') END"
          " FROM generate_series(1, %s) AS g) TO STDOUT (FORMAT binary)")


def test_binary_values_are_the_columns_values_in_batches(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        expected = [b"" if value is None else value for (value,) in conn.execute(
            VALUES.removeprefix("COPY (").removesuffix(") TO STDOUT (FORMAT binary)"),
            (2503,))]
        with conn.cursor() as cur, cur.copy(VALUES, (2503,)):
            batches = [[bytes(v) for v in batch] for batch in binary_values(conn, 1000)]
        assert [len(b) for b in batches] == [1000, 1000, 503]
        assert [v for batch in batches for v in batch] == expected
        assert b"" in expected and any(b"\x00" in v for v in expected)
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)


def test_binary_values_of_no_rows_and_of_one(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        with conn.cursor() as cur, cur.copy(VALUES, (0,)):
            assert list(binary_values(conn, 1000)) == []
        with conn.cursor() as cur, cur.copy(VALUES, (1,)):
            assert [[bytes(v) for v in b] for b in binary_values(conn, 1000)] == [[b"\x00\xffA"]]


def test_binary_values_refuse_a_framing_not_theirs(database_url: str) -> None:
    """Two columns where one is expected: refused, never read as shifted values."""
    two = "COPY (SELECT g, g FROM generate_series(1, 10) AS g) TO STDOUT (FORMAT binary)"
    text = "COPY (SELECT g FROM generate_series(1, 10) AS g) TO STDOUT"
    with psycopg.connect(database_url) as conn:
        for query in (two, text):
            with pytest.raises(psycopg.DataError), conn.cursor() as cur, cur.copy(query):
                list(binary_values(conn, 1000))
            conn.rollback()
