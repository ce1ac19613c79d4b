"""`sftpd process-epochs`: the epochs CronJob's command, and the staff tools beside it."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

import psycopg
from district_contract import commands, results
from district_contract.results import EpochsResult, Outcome, ProcessedEpoch

from sftpd import options
from sftpd.epochs import checkpoints
from sftpd.epochs.processor import Processor, Summary
from sftpd.epochs.walk import DEFAULT_MAX_DEPTH, DEFAULT_MAX_ENTRIES, Limits
from sftpd.events import emit
from sftpd.formats import registered_formats
from sftpd.options import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opt = options.prepare(parser)
    opt.path(commands.ROOT, "the district's tree", required=True)
    opt.database_url()
    opt.number(commands.SETTLE_SECONDS, "quiet time after which an epoch is complete", 300,
               kind=float, minimum=0)
    opt.text("now", "ISO 8601 time to use as the current time (for tests)", metavar="TIME")
    opt.path(commands.RESULT_FILE, "where to write the one-line JSON result")
    opt.items(commands.FORMATS, "formats processed automatically", tuple(registered_formats()),
              metavar="FORMAT")
    opt.number("lock-wait-seconds", "how long to wait for another run to finish", 15,
               minimum=0)
    opt.number("max-tree-depth", "folders an epoch may nest; a deeper one is left for staff",
               DEFAULT_MAX_DEPTH, minimum=1)
    opt.number("max-tree-entries", "files and folders an epoch (or upload/ as loose files) "
               "may hold; a larger one is left for staff", DEFAULT_MAX_ENTRIES, minimum=1)
    opt.custom(commands.DISTRICT_DOMAIN, "the district's domain (its login), which a "
               "prior-system archive's top directory must be", _domain, metavar="DOMAIN")
    opt.text("epoch", "staff: process only this epoch now, without waiting to settle",
             metavar="EPOCH")
    opt.text("format", "staff, with --epoch: process it as this format", metavar="FORMAT")
    opt.text("mark-processed", "staff: move this epoch to upload-processed without importing",
             metavar="EPOCH")


def _domain(text: str) -> str:
    domain = text.strip().lower()
    if not commands.valid_login(domain):
        raise ValueError(f"not a domain: {commands.LOGIN_RULE}")
    return domain


def _parse_now(text: str | None) -> float | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"--now {text!r} needs a time zone (e.g. a trailing Z)")
    return moment.timestamp()


def _processed(summary: Summary) -> tuple[ProcessedEpoch, ...]:
    return tuple(ProcessedEpoch(name=p["name"], outcome=p["outcome"], format=p["format"],
                                processed_at=p["processedAt"], rows=p["rows"],
                                errors=p["errors"])
                 for p in summary.processed)


def _outcome(summary: Summary) -> Outcome:
    if summary.problems or any(p["outcome"] == Outcome.FAILED for p in summary.processed):
        return Outcome.FAILED
    if summary.unrecognized or summary.refused:
        return Outcome.NEEDS_ATTENTION
    if not summary.processed:
        return Outcome.NOTHING_TO_DO
    return Outcome.SUCCEEDED


def _message(summary: Summary, outcome: Outcome) -> str:
    parts = [f"{len(summary.processed)} processed"]
    failed = [p["name"] for p in summary.processed if p["outcome"] == Outcome.FAILED]
    if failed:
        parts.append("failed: " + ", ".join(failed))
    if summary.unrecognized:
        parts.append("unrecognized, waiting for staff: " + ", ".join(summary.unrecognized))
    if summary.refused:
        parts.append("left alone, waiting for staff: " + "; ".join(
            f"{name} ({why})" for name, why in summary.refused.items()))
    if summary.pending:
        parts.append(f"{len(summary.pending)} not complete yet")
    parts += summary.problems
    return f"{outcome}: " + "; ".join(parts)


def _check_usage(args: argparse.Namespace, formats: list[str]) -> None:
    if args.format and not args.epoch:
        raise UsageError("--format needs --epoch")
    if args.format and args.format not in formats:
        raise UsageError(f"unknown format {args.format!r}; known: {', '.join(formats)}")
    unknown = [f for f in args.formats if f not in formats]
    if unknown:
        raise UsageError(f"unknown format(s) in --formats: {', '.join(unknown)}; "
                         f"known: {', '.join(formats)}")
    if args.epoch and args.mark_processed:
        raise UsageError("--epoch and --mark-processed exclude each other")


def run(args: argparse.Namespace) -> int:
    formats = registered_formats(args.district_domain or "")
    _check_usage(args, list(formats))
    try:
        now = _parse_now(args.now)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    summary = _process(args, formats, now)
    outcome = _outcome(summary)
    result = EpochsResult(outcome=outcome, message=_message(summary, outcome),
                          processed=_processed(summary),
                          # Refused entries wait for staff like unrecognized ones (the
                          # message says why).
                          unrecognized=(*summary.unrecognized, *summary.refused),
                          pending=tuple(summary.pending))
    line = results.write(args.result_file, result)
    emit("epochs.finished", result=line, checkpoints=checkpoints.passed())
    return commands.EXIT_FAILED if result.failed else commands.EXIT_OK


def _process(args: argparse.Namespace, formats: dict[str, Any], now: float | None) -> Summary:
    enabled: list[str] = args.formats
    try:
        with psycopg.connect(args.database_url, autocommit=True,
                             application_name="sftpd process-epochs") as conn:
            from sftpd.epochs import ledger

            if not ledger.try_lock(conn, args.lock_wait_seconds):
                emit("epochs.busy")
                return Summary(problems=["another process-epochs run holds the lock"])
            processor = Processor(args.root, conn, formats, enabled, args.settle_seconds, now,
                                  Limits(args.max_tree_depth, args.max_tree_entries))
            if args.mark_processed:
                return processor.mark_processed(args.mark_processed)
            if args.epoch:
                return processor.run_one(args.epoch, args.format)
            return processor.run_all()
    except (psycopg.Error, OSError) as exc:
        emit("epochs.failed", error=str(exc))
        return Summary(problems=[f"the run stopped: {exc}"])
