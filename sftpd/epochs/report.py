"""What an epoch's processing says: processing.json for programs, processing.log for people."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sftpd.epochs.fsops import write_atomically
from sftpd.epochs.names import PROCESSING_JSON, PROCESSING_LOG, shown
from sftpd.formats import FileCount, Problem

# Problems listed in the log (all are counted); the rest of a broken million-row file would
# only bury the first ones, which are what a person fixes first.
MAX_LISTED = 2000


def printable(value: Any) -> Any:
    """value with every string made storable as UTF-8 text (undecodable bytes of file names
    written as \\xNN), for JSON, the log and the ledger's jsonb alike."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(v) for v in value]
    return value


def build(*, epoch: str, digest: str, outcome: str, format_name: str | None,
          description: str, processed_at: datetime, files: list[FileCount],
          errors: list[Problem], error_count: int, warnings: list[Problem],
          note: str = "") -> dict[str, Any]:
    report: dict[str, Any] = printable({
        "epoch": epoch,
        "digest": digest,
        "outcome": outcome,
        "format": format_name,
        "description": description,
        "processedAt": processed_at.isoformat().replace("+00:00", "Z"),
        "rows": sum(f.rows for f in files),
        "errors": max(error_count, len(errors)),
        "files": [vars(f) for f in files],
        "problems": [p.as_json() for p in errors[:MAX_LISTED]],
        "warnings": [p.as_json() for p in warnings[:MAX_LISTED]],
        "note": note,
    })
    return report


def render_log(report: dict[str, Any]) -> str:
    lines = [
        f"Epoch:        {report['epoch']}",
        f"Outcome:      {report['outcome']}",
        f"Format:       {report['description'] or report['format'] or 'none'}",
        f"Processed at: {report['processedAt']}",
        f"Content:      {report['digest']}",
    ]
    if report.get("note"):
        lines.append(f"Note:         {report['note']}")
    if report.get("published"):
        lines.append(f"Published:    {report['published']['file']} "
                     f"(sha256 {report['published']['sha256']})")
    repeat = bool(report.get("repeat"))
    if repeat:
        # A re-drop of content the ledger already has: the figures below are the first run's.
        lines.append(f"Nothing was imported again: this same content was already processed at "
                     f"{report['processedAt']} ({report['outcome']}), and this upload did not "
                     "touch the database. The files and figures below are from that run.")
    elif report["outcome"] == "Succeeded":
        lines.append("The data was imported into the district's database."
                     if report["files"] else "Nothing was imported.")
    else:
        lines.append("Nothing was imported: the database is unchanged. Fix the errors below "
                     "and upload the corrected files as a new epoch.")
    if report["files"]:
        lines += ["", "Files:"]
        for f in report["files"]:
            if report["outcome"] != "Succeeded":
                detail = "checked, not imported"
            elif f["mode"] == "bulk":
                detail = f"loaded {f['added']}, replacing {f['deleted']}"
            else:
                detail = f"added {f['added']}, changed {f['changed']}, deleted {f['deleted']}"
            lines.append(f"  {f['file']:<22} {f['mode']:<6} {f['rows']:>9} rows  ({detail})")
    shown = report["problems"]
    if report["errors"]:
        lines += ["", f"Errors ({report['errors']}):"]
        lines += ["  " + _describe(p) for p in shown]
        if report["errors"] > len(shown):
            lines.append(f"  ... and {report['errors'] - len(shown)} more of the same kinds")
    if report["warnings"]:
        lines += ["", f"Warnings ({len(report['warnings'])}):"]
        lines += ["  " + _describe(p) for p in report["warnings"]]
    return "\n".join(lines) + "\n"


def _describe(problem: dict[str, Any]) -> str:
    return Problem(problem["message"], problem.get("file"), problem.get("line")).describe()


def write_into(epoch_dir: Path, report: dict[str, Any]) -> None:
    write_atomically(epoch_dir / PROCESSING_LOG, render_log(report))
    write_atomically(epoch_dir / PROCESSING_JSON, json.dumps(report, indent=2) + "\n")
