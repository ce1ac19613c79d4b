"""The server's audit trail: JSON lines on stdout and the Prometheus metrics beside them."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from sftpd.server.metrics import REGISTRY

SESSIONS = REGISTRY.gauge("sftpd_open_sessions", "SSH connections currently open")
SESSIONS_TOTAL = REGISTRY.counter("sftpd_sessions_total", "SSH connections accepted")
LOGINS = REGISTRY.counter("sftpd_logins_total", "Successful logins")
AUTH_FAILURES = REGISTRY.counter("sftpd_auth_failures_total", "Failed authentication attempts",
                                 ("reason",))
REJECTED = REGISTRY.counter("sftpd_connections_rejected_total",
                            "Connections refused before auth", ("reason",))
BYTES_IN = REGISTRY.counter("sftpd_bytes_received_total", "File bytes written by clients")
BYTES_OUT = REGISTRY.counter("sftpd_bytes_sent_total", "File bytes read by clients")
OPERATIONS = REGISTRY.counter("sftpd_operations_total", "SFTP operations", ("op",))
ERRORS = REGISTRY.counter("sftpd_errors_total", "SFTP operations refused or failed",
                          ("op", "reason"))


class AuditLog:
    """Writes one JSON object per line: {"ts": ..., "event": ..., fields...}."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    def event(self, event: str, **fields: Any) -> None:
        record: dict[str, Any] = {
            "ts": datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds"),
            "event": event,
        }
        record.update(fields)
        self._stream.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
        self._stream.flush()
