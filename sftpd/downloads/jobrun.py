"""How a downloads job ends: SIGTERM unwinds, each failure becomes a result reason, the result
is written and logged (the one ending `sftpd docviewer` and `sftpd pdfs` share)."""

from __future__ import annotations

import errno
import gc
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import psycopg
from district_contract import results
from district_contract.results import JobResult

from sftpd.downloads import publish
from sftpd.epochs import checkpoints
from sftpd.events import emit


class ExportError(Exception):
    """The run failed before publishing; reason is a short CamelCase word for the result."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Stopped(BaseException):
    """SIGTERM arrived: unwind through the cleanups, then report."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stopped


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises Stopped inside the block, so its cleanups run before the result."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def collector_paused() -> Iterator[None]:
    """A job's run without the cyclic garbage collector, which has nothing to do there.

    What is loaded by now (modules, classes: most of the process's objects) is frozen, so no
    collection walks it again, not even the one at interpreter exit, which took some 30 ms of
    a docviewer run (bench/docviewer_vs_copy.py); and collections are off until the run
    ends: neither job's rows (bytes in lists, tuples from a cursor) make reference cycles, so
    only a few objects that do (a kept exception) wait for the process's end, right after.
    The freeze is not undone.
    """
    gc.freeze()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# What a run may stop on; anything else is a bug and keeps its traceback.
FAILURES = (ExportError, publish.Busy, Stopped, psycopg.Error, OSError)


def failure(exc: BaseException, doing: str) -> tuple[str, str]:
    """The result's reason and message for a failure in FAILURES; `doing` names the query."""
    if isinstance(exc, ExportError):
        return exc.reason, exc.message
    if isinstance(exc, publish.Busy):
        return "Busy", str(exc)
    if isinstance(exc, Stopped):
        return "Interrupted", "stopped (SIGTERM) before publishing; nothing partial is visible"
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedColumn):
        return "ContractMismatch", f"the documents contract is not met: {exc}"
    if isinstance(exc, psycopg.Error):
        return "DatabaseError", f"{doing} failed: {exc}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "DiskFull", f"writing the epoch failed: {exc}"
    return "FileSystemError", f"writing the epoch failed: {exc}"


def finish(job: str, result_file: Path | None, result: JobResult, code: int) -> int:
    """Log a failure, write the result line and log it; the exit code, unchanged."""
    if result.failed:
        emit(f"{job}.failed", reason=result.reason, message=result.message)
    line = results.write(result_file, result)
    emit(f"{job}.finished", result=line, checkpoints=checkpoints.passed())
    return code
