"""The server's audit trail: JSON lines on stdout and the Prometheus metrics beside them."""

from __future__ import annotations

from sftpd.events import EventLog
from sftpd.server.metrics import REGISTRY

SESSIONS = REGISTRY.gauge("sftpd_open_sessions", "SSH connections currently open")
WAITING = REGISTRY.gauge("sftpd_unauthenticated_connections",
                         "SSH connections that have not logged in yet")
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


class AuditLog(EventLog):
    """The server's audit trail: events in sftpd's one style (sftpd.events) on its stream."""
