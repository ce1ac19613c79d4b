"""The server's audit trail: JSON lines on stdout and the Prometheus metrics beside them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from sftpd.events import EventLog

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


class AuditLog(EventLog):
    """The server's audit trail: events in sftpd's one style (sftpd.events) on its stream."""
