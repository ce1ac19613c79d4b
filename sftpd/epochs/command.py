"""`sftpd process-epochs`: the epochs CronJob's command, and the staff tools beside it."""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from sftpd.epochs import checkpoints
from sftpd.epochs.processor import Processor, Summary, emit
from sftpd.epochs.walk import DEFAULT_MAX_DEPTH, DEFAULT_MAX_ENTRIES, Limits
from sftpd.formats import registered_formats
from sftpd.results import write_result


def _env(option: str, default: str | None = None) -> str | None:
    return os.environ.get("SFTPD_" + option.upper().replace("-", "_"), default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    known = ",".join(registered_formats())
    parser.add_argument("--root", type=Path, default=_env("root"),
                        help="the district's tree (env SFTPD_ROOT)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="libpq URL of the district's database (env DATABASE_URL)")
    parser.add_argument("--settle-seconds", type=float,
                        default=float(_env("settle-seconds", "300") or 300),
                        help="quiet time after which an epoch is complete (default 300)")
    parser.add_argument("--now", default=_env("now"),
                        help="ISO 8601 time to use as the current time (for tests)")
    parser.add_argument("--result-file", type=Path, default=_env("result-file"),
                        help="where to write the one-line JSON result")
    parser.add_argument("--formats", default=_env("formats", known),
                        help=f"formats processed automatically (default {known})")
    parser.add_argument("--lock-wait-seconds", type=int,
                        default=int(_env("lock-wait-seconds", "15") or 15),
                        help="how long to wait for another run to finish (default 15)")
    parser.add_argument("--max-tree-depth", type=int,
                        default=int(_env("max-tree-depth", str(DEFAULT_MAX_DEPTH)) or 0),
                        help="folders an epoch may nest; a deeper one is left for staff "
                             f"(default {DEFAULT_MAX_DEPTH})")
    parser.add_argument("--max-tree-entries", type=int,
                        default=int(_env("max-tree-entries", str(DEFAULT_MAX_ENTRIES)) or 0),
                        help="files and folders an epoch may hold; a larger one is left for "
                             f"staff (default {DEFAULT_MAX_ENTRIES})")
    parser.add_argument("--epoch", default=_env("epoch"),
                        help="staff: process only this epoch now, without waiting to settle")
    parser.add_argument("--format", dest="format_name", default=_env("format"),
                        help="staff, with --epoch: process it as this format")
    parser.add_argument("--mark-processed", metavar="EPOCH", default=_env("mark-processed"),
                        help="staff: move this epoch to upload-processed without importing")


def _parse_now(text: str | None) -> float | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"--now {text!r} needs a time zone (e.g. a trailing Z)")
    return moment.timestamp()


def _outcome(summary: Summary) -> str:
    if summary.problems or any(p["outcome"] == "Failed" for p in summary.processed):
        return "Failed"
    if summary.unrecognized or summary.refused:
        return "NeedsAttention"
    if not summary.processed:
        return "NothingToDo"
    return "Succeeded"


def _message(summary: Summary, outcome: str) -> str:
    parts = [f"{len(summary.processed)} processed"]
    failed = [p["name"] for p in summary.processed if p["outcome"] == "Failed"]
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


def _usage_problem(args: argparse.Namespace, formats: list[str]) -> str | None:
    if args.root is None:
        return "--root (or SFTPD_ROOT) is required"
    if not args.database_url:
        return "--database-url (or DATABASE_URL) is required"
    if args.format_name and not args.epoch:
        return "--format needs --epoch"
    if args.format_name and args.format_name not in formats:
        return f"unknown format {args.format_name!r}; known: {', '.join(formats)}"
    unknown = [f for f in args.formats.split(",") if f and f not in formats]
    if unknown:
        return f"unknown format(s) in --formats: {', '.join(unknown)}"
    if args.epoch and args.mark_processed:
        return "--epoch and --mark-processed exclude each other"
    if args.max_tree_depth < 1 or args.max_tree_entries < 1:
        return "--max-tree-depth and --max-tree-entries must be at least 1"
    return None


def run(args: argparse.Namespace) -> int:
    formats = registered_formats()
    summary = Summary()
    problem = _usage_problem(args, list(formats))
    try:
        now = _parse_now(args.now)
    except ValueError as exc:
        problem, now = str(exc), None
    if problem is not None:
        summary.problems.append(problem)
    else:
        summary = _process(args, formats, now)
    outcome = _outcome(summary)
    result: dict[str, Any] = {
        "kind": "epochs", "outcome": outcome,
        "processed": [{k: v for k, v in p.items() if k != "movedTo"}
                      for p in summary.processed],
        # Refused entries wait for staff like unrecognized ones (the message says why).
        "unrecognized": summary.unrecognized + list(summary.refused),
        "pending": summary.pending,
        "message": _message(summary, outcome)}
    line = write_result(args.result_file, result)
    emit("epochs.result", result=line, checkpoints=checkpoints.passed())
    return 1 if outcome == "Failed" else 0


def _process(args: argparse.Namespace, formats: dict[str, Any], now: float | None) -> Summary:
    enabled = [f for f in args.formats.split(",") if f]
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
                return processor.run_one(args.epoch, args.format_name)
            return processor.run_all()
    except (psycopg.Error, OSError) as exc:
        emit("epochs.error", error=str(exc))
        return Summary(problems=[f"the run stopped: {exc}"])
