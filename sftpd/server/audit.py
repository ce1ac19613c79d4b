"""The server's audit trail: JSON lines on stdout and the Prometheus metrics beside them."""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from prometheus_client import Counter, Gauge

SESSIONS = Gauge("sftpd_open_sessions", "SSH connections currently open")
WAITING = Gauge("sftpd_unauthenticated_connections",
                "SSH connections that have not logged in yet")
SESSIONS_TOTAL = Counter("sftpd_sessions_total", "SSH connections accepted")
LOGINS = Counter("sftpd_logins_total", "Successful logins")
AUTH_FAILURES = Counter("sftpd_auth_failures_total", "Failed authentication attempts", ["reason"])
REJECTED = Counter("sftpd_connections_rejected_total", "Connections refused before auth",
                   ["reason"])
BYTES_IN = Counter("sftpd_bytes_received_total", "File bytes written by clients")
BYTES_OUT = Counter("sftpd_bytes_sent_total", "File bytes read by clients")
OPERATIONS = Counter("sftpd_operations_total", "SFTP operations", ["op"])
ERRORS = Counter("sftpd_errors_total", "SFTP operations refused or failed", ["op", "reason"])


# Characters json.dumps(ensure_ascii=False) writes raw that a log reader may take as a line break
# (U+0085, U+2028, U+2029, other C1 controls, DEL) or that reorder what a terminal shows (bidi
# controls, "Trojan Source"), and lone surrogates, which are not UTF-8 at all: written as \uXXXX
# escapes, which keep the value (a JSON reader decodes them) and keep one event on one line.
_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff"
                     "\ud800-\udfff]")
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def readable(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields with every undecodable name made lossless: a name that was not UTF-8 (decoded with
    surrogateescape) is written with U+FFFD in place of each bad byte, and its exact bytes go
    beside it in hex as `<field>_hex`, so two different names never log as the same text."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, str) and _ESCAPED_BYTE.search(value):
            raw = value.encode("utf-8", "surrogateescape")
            out[key] = raw.decode("utf-8", "replace")
            out[f"{key}_hex"] = raw.hex()
        else:
            out[key] = value
    return out


class AuditLog:
    """Writes one JSON object per line: {"ts": ..., "event": ..., fields...}."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    def event(self, event: str, **fields: Any) -> None:
        record: dict[str, Any] = {
            "ts": datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds"),
            "event": event,
        }
        record.update(readable(fields))
        line = _UNSAFE.sub(_escape, json.dumps(record, default=str, ensure_ascii=False))
        self._stream.write(line + "\n")
        self._stream.flush()
