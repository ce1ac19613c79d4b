"""Progress events of the jobs: one JSON object per line on stdout, for the pod's log."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any


def utc_iso(moment: datetime) -> str:
    """An aware time as ISO-8601 UTC with a `Z`, the form every result and log line uses."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def log_event(event: str, **fields: Any) -> None:
    """Print one event line and flush it, so a killed job still leaves what it did in the log."""
    record: dict[str, Any] = {"ts": utc_iso(datetime.now(UTC)), "event": event, **fields}
    sys.stdout.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()
