"""The gateway's SSH side: listening, the client's login judged against its District, and each
allowed channel handed to the District's own server."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from sftpd.gateway import metrics, packetpath, proxy
from sftpd.gateway.auth import GatewayRules
from sftpd.gateway.routes import Route, RouteTable
from sftpd.server import batching, internals, limits, signatures
from sftpd.server.access import BanList, canonical_address, shown_user
from sftpd.server.app import (
    ENCRYPTION_ALGS,
    HOST_KEY_CHECK_SECONDS,
    KEX_ALGS,
    MAC_ALGS,
    SERVER_VERSION,
    supported,
)
from sftpd.server.audit import AuditLog
from sftpd.server.hostkeys import HostKeys
from sftpd.server.limits import ConnectionLimits, RefusalThrottle, cap_channels
from sftpd.server.shutdown import stop_listener
from sftpd.server.signatures import USER_AUTH_SIG_ALGS, refuse_weak_signatures


@dataclass
class GatewaySettings:
    """Everything `sftpd gateway` is told on its command line."""

    routes: Path
    host_keys: list[Path]
    gateway_key: Path
    next_host_keys: list[Path] = field(default_factory=list)
    port: int = 2222
    bind: list[str] = field(default_factory=lambda: [""])
    login_grace_seconds: float = 30.0
    max_auth_tries: int = 6
    max_sessions: int = 5000
    max_unauthenticated_per_source: int = 10
    max_unauthenticated: int = 500
    max_channels: int = 10
    idle_timeout_seconds: float = 900.0
    ban_after_failures: int = 10
    ban_window_seconds: float = 600.0
    ban_seconds: float = 900.0
    backend_timeout_seconds: float = 15.0
    routes_poll_seconds: float = 1.0


class Gateway:
    """One listening gateway in front of many districts' servers."""

    def __init__(self, settings: GatewaySettings, log: AuditLog) -> None:
        self.settings = settings
        self.log = log
        self.host_keys = HostKeys(settings.host_keys, settings.next_host_keys, log)
        try:
            self.gateway_key = asyncssh.read_private_key(str(settings.gateway_key))
        except (OSError, asyncssh.KeyImportError) as exc:
            raise ValueError(f"cannot read the gateway key {settings.gateway_key}: {exc}") \
                from exc
        self.table = RouteTable(settings.routes, log)
        self.bans = BanList(settings.ban_after_failures, settings.ban_window_seconds,
                            settings.ban_seconds)
        self.rules = GatewayRules(self.table, self.bans, log)
        self.limits = ConnectionLimits(settings.max_unauthenticated_per_source,
                                       settings.max_unauthenticated, settings.max_sessions)
        self.refusals = RefusalThrottle()
        self.connections: set[GatewayConnection] = set()
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.drained = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._acceptor is not None
        return int(self._acceptor.sockets[0].getsockname()[1])

    async def start(self) -> None:
        from asyncssh.encryption import get_encryption_algs
        from asyncssh.kex import get_kex_algs
        from asyncssh.mac import get_mac_algs
        from asyncssh.public_key import get_public_key_algs

        internals.require(batching.PATCHED + signatures.PATCHED + limits.PATCHED
                          + proxy.PATCHED + packetpath.PATCHED)
        self.table.refresh()
        s = self.settings
        hosts: list[str] | str = [h for h in s.bind if h] or ""
        self._acceptor = await asyncssh.listen(
            host=hosts, port=s.port, reuse_address=True,
            server_factory=lambda: GatewayConnection(self),
            server_host_keys=self.host_keys.pairs,
            # As sftpd serve: every host key announced after login, for overlap rotation.
            send_server_host_keys=True,
            server_version=SERVER_VERSION,
            kex_algs=supported(KEX_ALGS, get_kex_algs()),
            encryption_algs=supported(ENCRYPTION_ALGS, get_encryption_algs()),
            mac_algs=supported(MAC_ALGS, get_mac_algs()),
            compression_algs=["none"],
            signature_algs=supported(tuple(a.decode() for a in USER_AUTH_SIG_ALGS),
                                     get_public_key_algs()),
            public_key_auth=True, password_auth=False, kbdint_auth=False,
            host_based_auth=False, gss_auth=False, gss_kex=False,
            allow_pty=False, x11_forwarding=False, agent_forwarding=False,
            line_editor=False, encoding=None, login_timeout=s.login_grace_seconds,
            keepalive_interval=60, keepalive_count_max=3, config=[],
        )
        self._tasks = [asyncio.create_task(self.table.watch(s.routes_poll_seconds)),
                       asyncio.create_task(self._prune()),
                       asyncio.create_task(self._watch_host_keys())]
        self.log.event("gateway.listening", port=self.port, bind=s.bind,
                       routes=str(s.routes), logins=self.table.size,
                       host_keys=self.host_keys.fingerprints())

    async def _watch_host_keys(self) -> None:
        """As sftpd serve: changed host key files are served without a restart (new
        connections get the new set)."""
        while True:
            await asyncio.sleep(HOST_KEY_CHECK_SECONDS)
            if self.host_keys.refresh() and self._acceptor is not None:
                self._acceptor.update(server_host_keys=self.host_keys.pairs)

    def refused(self, reason: str, address: str, **fields: Any) -> None:
        metrics.REJECTED.labels(reason).inc()
        extra = self.refusals.check(reason, address)
        if extra is not None:
            self.log.event("connection.refused", reason=reason, **fields, **extra)

    async def _prune(self) -> None:
        """Close logged-in clients with no channel open for the idle timeout (the district
        server times out idle SFTP sessions itself); forget stale ban data."""
        interval = max(0.2, min(30.0, self.settings.idle_timeout_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.conn is not None and conn.authenticated and not conn.channels and \
                        now - conn.last_activity > self.settings.idle_timeout_seconds:
                    self.log.event("connection.timed_out", **conn.fields)
                    conn.conn.disconnect(asyncssh.DISC_BY_APPLICATION, "Idle timeout")
            self.bans.prune()
            for reason, source, repeated in self.refusals.prune():
                self.log.event("connection.refused", reason=reason, source=source,
                               repeated=repeated)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        await stop_listener(self._acceptor, self._tasks, self.connections, self.drained,
                            grace_seconds, "Gateway shutting down")
        self.log.event("gateway.stopped", open_sessions=len(self.connections))


class GatewayConnection(asyncssh.SSHServer):
    """One client: its login judged against the District it names, then its channels forwarded
    over one backend connection."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.conn: asyncssh.SSHServerConnection | None = None
        self.address = "?"
        self.fields: dict[str, Any] = {}
        self.failures = 0
        self.admitted = False
        self.authenticated = False
        self.route: Route | None = None
        self.fingerprint = ""
        self.channels_refused = 0
        self.channels = 0  # forwarded channels open now
        self.last_activity = time.monotonic()
        self._backend: asyncio.Future[asyncssh.SSHClientConnection] | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.address = canonical_address(str(peer[0]))
        self.fields = {"source": self.address, "port": peer[1]}
        reason = self.gateway.limits.admit(self.address)
        if reason is not None:
            self.gateway.refused(reason, self.address, **self.fields)
            conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, "Not allowed")
            return
        self.admitted = True
        metrics.CONNECTIONS.inc()
        # As sftpd serve: one socket write per loop turn, no SSH_MSG_IGNORE padding packets.
        batching.batch_writes(conn)
        batching.drop_ignore_packets(conn)
        packetpath.receive_in_pieces(conn)
        packetpath.skip_packet_logging(conn)
        refuse_weak_signatures(conn, self._weak_signature)
        cap_channels(conn, self.gateway.settings.max_channels, self._channel_refused)
        self.gateway.connections.add(self)
        self.gateway.drained.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._backend is not None:
            if self._backend.done() and not self._backend.cancelled() and \
                    self._backend.exception() is None:
                self._backend.result().close()
            else:
                self._backend.cancel()
        if not self.admitted:
            return
        self.admitted = False
        metrics.CONNECTIONS.dec()
        self.gateway.limits.release(self.address, logged_in=self.authenticated)
        self.gateway.connections.discard(self)
        if not self.gateway.connections:
            self.gateway.drained.set()
        if self.authenticated:
            extra = {"channels_refused": self.channels_refused} if self.channels_refused else {}
            self.gateway.log.event("session.ended", **self.fields, **extra)

    def _channel_refused(self, open_now: int) -> None:
        self.channels_refused += 1
        if self.channels_refused == 1:  # the rest are counted in the logout line
            self.gateway.log.event("channel.refused", reason="too_many_channels",
                                   open_channels=open_now, **self.fields)

    def begin_auth(self, username: str) -> bool:
        self.fields["user"] = shown_user(username)
        if self.gateway.rules.is_banned(username, self.address):
            self.gateway.refused("banned", self.address, **self.fields)
            if self.conn is not None:
                self.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Not allowed")
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        fingerprint = key.get_fingerprint()
        decision = self.gateway.rules.decide(username, key, self.address)
        if decision.route is None:
            self._failed(username, decision.reason, fingerprint)
            return False
        self.route = decision.route
        self.fingerprint = fingerprint
        self.fields["district"] = decision.route.district
        return True

    def _weak_signature(self, algorithm: bytes, fingerprint: str) -> None:
        self._failed(self.fields.get("user", ""), "weak_signature", fingerprint,
                     algorithm=algorithm.decode("ascii", "backslashreplace"))

    def _failed(self, username: str, reason: str, fingerprint: str | None,
                **extra: Any) -> None:
        gw = self.gateway
        self.failures += 1
        metrics.AUTH_FAILURES.labels(reason).inc()
        gw.log.event("login.failed", reason=reason, fingerprint=fingerprint,
                     attempt=self.failures, **extra, **self.fields)
        if gw.bans.record_failure(gw.rules.ban_key(username, self.address)):
            gw.log.event("address.banned", seconds=gw.settings.ban_seconds, **self.fields)
            if self.conn is not None:
                self.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                                     "Too many failed logins")
                return
        if self.failures >= gw.settings.max_auth_tries and self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                                 "Too many authentication failures")

    def auth_completed(self) -> None:
        gw = self.gateway
        assert self.route is not None
        gw.bans.record_success(gw.rules.ban_key(self.route.login, self.address))
        if gw.limits.log_in(self.address) is not None:
            gw.refused("too_many_sessions", self.address, **self.fields)
            if self.conn is not None:
                self.conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, "Too many sessions")
            return
        self.authenticated = True
        self.last_activity = time.monotonic()
        metrics.LOGINS.inc()
        gw.log.event("login.succeeded", fingerprint=self.fingerprint, **self.fields)

    def session_requested(self) -> proxy.ForwardedSession:
        return proxy.ForwardedSession(self._forward, None, 3, False)

    async def backend(self) -> asyncssh.SSHClientConnection:
        """The backend connection, opened by the first channel and shared by the rest."""
        if self._backend is None:
            self._backend = asyncio.ensure_future(self._open_backend())
        return await asyncio.shield(self._backend)

    async def _open_backend(self) -> asyncssh.SSHClientConnection:
        assert self.route is not None and self.conn is not None
        local = self.conn.get_extra_info("sockname") or ("0.0.0.0", 0)  # noqa: S104
        peer = self.conn.get_extra_info("peername") or ("0.0.0.0", 0)  # noqa: S104
        client = proxy.Client(self.address, int(peer[1]), canonical_address(str(local[0])),
                              int(local[1]), self.fingerprint)
        return await proxy.open_backend(self.route, client, self.gateway.gateway_key,
                                        self.gateway.settings.backend_timeout_seconds)

    async def _forward(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        what = process.subsystem or "scp"
        self.channels += 1
        try:
            backend = await self.backend()
            status = await proxy.pump(process, backend)
        except (OSError, asyncssh.Error, TimeoutError, ValueError) as exc:
            metrics.BACKEND_FAILURES.inc()
            self.gateway.log.event("backend.failed", error=str(exc) or type(exc).__name__,
                                   channel=what, **self.fields)
            process.stderr.write(b"The district's server is not reachable now.\r\n")
            process.exit(1)
            return
        finally:
            self.channels -= 1
            self.last_activity = time.monotonic()
        process.exit(status)
