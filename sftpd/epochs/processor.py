"""One processing run over the upload tree: gather, check completeness, recognize, import,
log and move each epoch, in name order, exactly once even across crashes.

Crash-safety argument (the checkpoints mark every gap between durable steps):
- the import and the epoch's ledger row (name + content digest) commit in one transaction,
  so either both exist or neither does;
- everything after the commit (processing.log/json, the move, recording the move) is
  idempotent and driven by the ledger: on rerun an epoch whose recorded row has no confirmed
  move, and whose content digest still matches, is finished from the recorded report without
  being imported again;
- the move is a single rename that never overwrites, so an epoch is either in upload/ or in
  upload-processed/, never half in both.
"""

from __future__ import annotations

import contextlib
import csv
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from sftpd import tree, uploads
from sftpd.epochs import completion, ledger, report, stagings
from sftpd.epochs.checkpoints import checkpoint
from sftpd.epochs.fsops import fsync_dir, rename_with_suffix
from sftpd.epochs.gather import Gathering, gather_loose_files, gathered_note
from sftpd.epochs.names import GATHER_PREFIX, PULL_PREFIX, is_utf8, shown
from sftpd.epochs.walk import DEFAULT_LIMITS, Limits, TreeTooLarge
from sftpd.events import emit
from sftpd.formats import FileCount, Format, Problem, Publishing

# Data problems that fail an epoch (it moves, logged). Anything else (the database going away,
# a bug) fails the job instead and leaves the epoch in upload/ for the next run.
_DATA_FAILURES = (psycopg.errors.DataError, psycopg.errors.IntegrityError,
                  zipfile.BadZipFile, UnicodeDecodeError, csv.Error)


_BEING_WRITTEN = "it is being written or changed over SFTP"


@dataclass
class Summary:
    """What one run did, in the terms of the operator's result schema."""

    processed: list[dict[str, Any]] = field(default_factory=list)
    unrecognized: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Entries of upload/ the processor will not touch, and why (waiting for staff, like the
    # unrecognized ones): names are shown with undecodable bytes escaped.
    refused: dict[str, str] = field(default_factory=dict)


class Processor:
    def __init__(self, root: Path, conn: psycopg.Connection[Any], formats: dict[str, Format],
                 enabled: list[str], settle_seconds: float, now: float | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.upload = root / tree.UPLOAD
        self.processed_dir = root / tree.UPLOAD_PROCESSED
        self.conn = conn
        self.formats = formats
        self.enabled = enabled
        self.settle_seconds = settle_seconds
        self.now = time.time() if now is None else now
        self.limits = limits
        self.summary = Summary()
        tree.ensure_tree(root)
        ledger.ensure(conn)
        self.stagings = stagings.Record(conn, self.when)
        self.unfinished = self._reconcile()

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    def _reconcile(self) -> dict[str, list[ledger.Entry]]:
        """Recorded epochs whose move is unconfirmed but still in upload/ (to finish); those
        already gone were moved by a run that died before recording it."""
        pending: dict[str, list[ledger.Entry]] = {}
        for entry in ledger.unmoved(self.conn):
            if (self.upload / entry.name).is_dir():
                pending.setdefault(entry.name, []).append(entry)
            else:
                ledger.mark_moved(self.conn, entry.name, entry.digest, None, self.when)
        return pending

    def _resume(self, epoch: Path) -> bool:
        """Finish an epoch a crashed run committed but did not move; True if it was one."""
        entries = self.unfinished.get(epoch.name)
        if not entries:
            return False
        digest = completion.content_digest(epoch, self.limits)
        match = next((e for e in entries if e.digest == digest), None)
        if match is None:
            return False
        emit("epoch.resumed", epoch=epoch.name, outcome=match.outcome)
        self._finish(epoch, digest, match.report)
        return True

    def run_all(self) -> Summary:
        # Each step holds its directory against changes over SFTP (uploads.claimed) from
        # before it looks until it is done, so nothing can be opened for writing in between.
        with uploads.claimed(self.upload) as ours:
            gathering = (gather_loose_files(self.upload, self.settle_seconds, self.now,
                                            self.stagings, self.limits.max_entries) if ours
                         else Gathering(waiting=_BEING_WRITTEN))
        if gathering.refused:
            self._refuse(f"{tree.UPLOAD}/ (loose files)", gathering.refused)
        if gathering.waiting:
            self.summary.pending.append(f"{tree.UPLOAD}/ (loose files)")
            emit("loose_files.waiting", reason=gathering.waiting)
        for name in gathering.epochs:
            emit("loose_files.gathered", epoch=name)
        for name in gathering.untrusted:
            self._refuse(name, "a reserved name (.sftpd-gather-*) not made by the processor")
        for epoch in sorted(self.upload.iterdir()):
            if (not epoch.is_dir() or epoch.is_symlink()
                    or epoch.name.startswith((GATHER_PREFIX, PULL_PREFIX))):
                continue
            with uploads.claimed(epoch) as ours:
                if not ours:
                    self.summary.pending.append(epoch.name)
                    emit("epoch.pending", epoch=epoch.name, reason=_BEING_WRITTEN)
                    continue
                try:
                    self._take(epoch, epoch.name in gathering.epochs)
                except TreeTooLarge as exc:
                    self._refuse(epoch.name, f"{exc}")
        return self.summary

    def _take(self, epoch: Path, gathered: bool) -> None:
        """Finish, process or leave one epoch (claimed by the caller)."""
        if not is_utf8(epoch.name):
            self._refuse(epoch.name, "its name is not valid UTF-8; rename it")
            return
        if self._resume(epoch):
            return
        state = completion.check(epoch, self.settle_seconds, self.now, skip_quiet=gathered,
                                 limits=self.limits)
        if not state.complete:
            self.summary.pending.append(epoch.name)
            emit("epoch.pending", epoch=epoch.name, reason=state.reason)
            return
        found = self._recognize(epoch, self.enabled)
        if found is None:
            self.summary.unrecognized.append(epoch.name)
            emit("epoch.unrecognized", epoch=epoch.name)
            return
        self._process(epoch, *found)

    def _refuse(self, name: str, why: str) -> None:
        """Leave an entry of upload/ alone for staff, saying why."""
        self.summary.refused[shown(name)] = why
        emit("epoch.refused", epoch=name, reason=why)

    def run_one(self, name: str, forced_format: str | None) -> Summary:
        """Staff: process one epoch now (no settle wait), optionally as a given format."""
        with self._staff_claim(name) as ours:
            if not ours:
                return self.summary
            try:
                return self._run_one(name, forced_format)
            except TreeTooLarge as exc:
                self._refuse(name, f"{exc}")
                return self.summary

    def mark_processed(self, name: str) -> Summary:
        """Staff: move an epoch to upload-processed/ without importing anything."""
        with self._staff_claim(name) as ours:
            if not ours:
                return self.summary
            try:
                return self._mark_processed(name)
            except TreeTooLarge as exc:
                self._refuse(name, f"{exc}")
                return self.summary

    @contextlib.contextmanager
    def _staff_claim(self, name: str) -> Iterator[bool]:
        """Hold a staff command's epoch as run_all holds each; a missing one is left to
        _staff_epoch to report."""
        epoch = self.upload / name
        if "/" in name or name.startswith(".") or not epoch.is_dir() or epoch.is_symlink():
            yield True
            return
        with uploads.claimed(epoch) as ours:
            if not ours:
                self.summary.pending.append(name)
                emit("epoch.pending", epoch=name, reason=_BEING_WRITTEN)
            yield ours

    def _run_one(self, name: str, forced_format: str | None) -> Summary:
        epoch = self._staff_epoch(name)
        if epoch is None or self._resume(epoch):
            return self.summary
        if forced_format is not None:
            fmt = self.formats[forced_format]
            found = fmt.recognize(epoch)
            description = found.description if found else f"{forced_format} (forced by staff)"
            self._process(epoch, fmt, description, note=f"format {forced_format} chosen by staff")
            return self.summary
        claimed = self._recognize(epoch, list(self.formats))
        if claimed is None:
            self.summary.unrecognized.append(name)
            emit("epoch.unrecognized", epoch=name)
        else:
            self._process(epoch, *claimed)
        return self.summary

    def _mark_processed(self, name: str) -> Summary:
        epoch = self._staff_epoch(name)
        if epoch is None or self._resume(epoch):
            return self.summary
        digest = completion.content_digest(epoch, self.limits)
        existing = ledger.lookup(self.conn, name, digest)
        if existing is not None:
            self._finish(epoch, digest, existing.report)
            return self.summary
        result = report.build(epoch=name, digest=digest, outcome="Succeeded", format_name=None,
                              description="not imported", processed_at=self.when, files=[],
                              errors=[], error_count=0, warnings=[],
                              note="marked processed by staff without import")
        with self.conn.transaction():
            ledger.record(self.conn, name, digest, result, self.when)
        checkpoint("marked processed, committed")
        self._finish(epoch, digest, result)
        return self.summary

    def _staff_epoch(self, name: str) -> Path | None:
        epoch = self.upload / name
        if ("/" in name or name.startswith(".") or not epoch.is_dir() or epoch.is_symlink()
                or not is_utf8(name)):
            self.summary.problems.append(f"no epoch named {shown(name)!r} in {tree.UPLOAD}/")
            return None
        state = completion.check(epoch, self.settle_seconds, self.now, skip_quiet=True,
                                 limits=self.limits)
        if not state.complete and not self.unfinished.get(name):
            self.summary.pending.append(name)
            emit("epoch.pending", epoch=name, reason=state.reason)
            return None
        return epoch

    def _recognize(self, epoch: Path, names: list[str]) -> tuple[Format, str] | None:
        for name in names:
            found = self.formats[name].recognize(epoch)
            if found is not None:
                return self.formats[name], found.description
        return None

    def _process(self, epoch: Path, fmt: Format, description: str, note: str = "") -> None:
        emit("epoch.started", epoch=epoch.name, format=fmt.name, description=description)
        digest = completion.content_digest(epoch, self.limits)
        checkpoint("digest computed")
        existing = ledger.lookup(self.conn, epoch.name, digest)
        if existing is not None:
            again = dict(existing.report)
            again["repeat"] = True
            again["note"] = (f"identical content was already processed at "
                             f"{again['processedAt']}; not imported again")
            self._finish(epoch, digest, again)
            return
        note = "; ".join(n for n in (note, gathered_note(epoch)) if n)
        result = self._import(epoch, digest, fmt, description, note)
        checkpoint("import committed")
        self._finish(epoch, digest, result)

    def _import(self, epoch: Path, digest: str, fmt: Format, description: str,
                note: str) -> dict[str, Any]:
        """Validate and import in one transaction with the ledger row; a failure is recorded
        in a transaction of its own that touches nothing else."""
        def build(outcome: str, files: list[FileCount], errors: list[Problem], count: int,
                  warnings: list[Problem]) -> dict[str, Any]:
            return report.build(epoch=epoch.name, digest=digest, outcome=outcome,
                                format_name=fmt.name, description=description,
                                processed_at=self.when, files=files, errors=errors,
                                error_count=count, warnings=warnings, note=note)

        result: dict[str, Any] | None = None
        try:
            validation = fmt.validate(epoch)
            checkpoint("validated")
            description = validation.description or description
            if validation.errors:
                result = build("Failed", [], validation.errors, len(validation.errors),
                               validation.warnings)
            else:
                with self.conn.transaction():
                    outcome = fmt.import_(self.conn, epoch, validation)
                    checkpoint("imported, not committed")
                    warnings = validation.warnings + outcome.warnings
                    if outcome.errors:
                        result = build("Failed", outcome.files, outcome.errors,
                                       outcome.error_count, warnings)
                        raise psycopg.Rollback()  # leaves the with block, rolled back
                    result = build("Succeeded", outcome.files, [], 0, warnings)
                    ledger.record(self.conn, epoch.name, digest, result, self.when)
                    checkpoint("ledger written, not committed")
        except _DATA_FAILURES as exc:
            result = build("Failed", [], [Problem(f"import failed: {exc}")], 1, [])
        assert result is not None
        if result["outcome"] == "Succeeded":
            emit("epoch.imported", epoch=epoch.name, rows=result["rows"])
            return result
        with self.conn.transaction():
            ledger.record(self.conn, epoch.name, digest, result, self.when)
        emit("epoch.failed", epoch=epoch.name, errors=result["errors"])
        return result

    def _publish(self, epoch: Path, result: dict[str, Any]) -> None:
        """A succeeded import's publication (a prior-system archive into downloads/), after
        its commit; a failure stops the run and leaves the epoch for the next one to finish."""
        fmt: object = self.formats.get(result.get("format") or "")
        if result["outcome"] != "Succeeded" or not isinstance(fmt, Publishing):
            return
        published = fmt.publish(epoch)
        checkpoint("published")
        result["published"] = {"file": published.file, "sha256": published.sha256}
        emit("epoch.published", epoch=epoch.name, file=published.file,
             sha256=published.sha256)

    def _finish(self, epoch: Path, digest: str, result: dict[str, Any]) -> None:
        """Publish what the format publishes, write the logs into the epoch, move it, record
        the move (all idempotent)."""
        self._publish(epoch, result)
        report.write_into(epoch, result)
        checkpoint("logs written")
        destination = rename_with_suffix(epoch, self.processed_dir, epoch.name)
        fsync_dir(self.processed_dir)
        fsync_dir(self.upload)
        checkpoint("moved")
        moved_to = str(destination.relative_to(self.processed_dir.parent))
        ledger.mark_moved(self.conn, epoch.name, digest, moved_to, self.when)
        checkpoint("move recorded")
        emit("epoch.moved", epoch=epoch.name, to=moved_to, outcome=result["outcome"])
        self.summary.processed.append({
            "name": epoch.name, "outcome": result["outcome"], "format": result["format"],
            "processedAt": result["processedAt"], "rows": result["rows"],
            "errors": result["errors"], "movedTo": moved_to})
