"""The SSH side of the server: listening, algorithms, authentication, limits and shutdown."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from sftpd import tree
from sftpd.server import batching, internals, limits, quickack, signatures
from sftpd.server.access import BanList, IPNetwork, canonical_address, is_allowed, shown_user
from sftpd.server.audit import (
    AUTH_FAILURES,
    LOGINS,
    REJECTED,
    SESSIONS,
    SESSIONS_TOTAL,
    WAITING,
    AuditLog,
)
from sftpd.server.batching import batch_writes, cut_channel_writes, drop_ignore_packets
from sftpd.server.filesystem import DistrictSFTPServer, SessionLimits
from sftpd.server.hostkeys import HostKeys
from sftpd.server.keys import AuthorizedKeys, GatewayKey, Verdict
from sftpd.server.limits import TOO_MANY_SESSIONS, ConnectionLimits, RefusalThrottle, cap_channels
from sftpd.server.proxygate import PROXIED, ProxyListener
from sftpd.server.proxyheader import ProxiedClient
from sftpd.server.quickack import ack_promptly
from sftpd.server.shutdown import stop_listener
from sftpd.server.signatures import USER_AUTH_SIG_ALGS, refuse_weak_signatures

# Post-quantum hybrids first; the classical curve25519 exchanges stay for clients that have no
# hybrid yet (paramiko, libssh2/curl, OpenSSH before 9.0; see docs/sftpd.md).
# sntrup761x25519 is added when asyncssh finds liboqs on the machine.
KEX_ALGS: tuple[str, ...] = (
    "mlkem768x25519-sha256",
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
)
ENCRYPTION_ALGS: tuple[str, ...] = (
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
MAC_ALGS: tuple[str, ...] = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")
# Encrypt-and-MAC fallbacks, off unless --compat-macs: libssh2 before 1.11 (curl on Debian 12)
# knows neither an -etm MAC nor AES-GCM, so it cannot connect without one of these.
COMPAT_MAC_ALGS: tuple[str, ...] = ("hmac-sha2-256", "hmac-sha2-512")
# How often the host key files are checked for a change (a stat per file): the kubelet takes
# about a minute to update a Secret volume, so a few seconds more change nothing.
HOST_KEY_CHECK_SECONDS = 2.0
SERVER_VERSION = "sftpd"


def supported(algs: tuple[str, ...], available: list[bytes]) -> list[str]:
    names = {a.decode() for a in available}
    return [a for a in algs if a in names]


@dataclass
class ServerSettings:
    """Everything `sftpd serve` is told on its command line."""

    root: Path
    login: str
    host_keys: list[Path]
    authorized_keys: Path
    next_host_keys: list[Path] = field(default_factory=list)
    port: int = 2222
    bind: list[str] = field(default_factory=lambda: [""])
    allowed_sources: tuple[IPNetwork, ...] = ()
    login_grace_seconds: float = 30.0
    max_auth_tries: int = 6
    idle_timeout_seconds: float = 900.0
    max_sessions: int = 100
    max_unauthenticated_per_source: int = 10
    max_unauthenticated: int = 50
    max_channels: int = 10
    ban_after_failures: int = 10
    ban_window_seconds: float = 600.0
    ban_seconds: float = 900.0
    compat_macs: bool = False
    max_open_handles: int = 64
    max_file_size: int = 64 << 30
    download_directories: tuple[str, ...] = ()
    # The shared gateway (sftpd.gateway, docs/gateway.md): the addresses it connects from,
    # which must start each connection with a PROXY v2 header, and the key it logs in with.
    proxy_sources: tuple[IPNetwork, ...] = ()
    gateway_key: Path | None = None
    proxy_header_seconds: float = 5.0


class SFTPDistrictServer:
    """One listening SFTP server for one district's tree."""

    def __init__(self, settings: ServerSettings, audit: AuditLog | None = None) -> None:
        self.settings = settings
        self.audit = audit or AuditLog()
        tree.ensure_tree(settings.root)
        tree.ensure_download_directories(settings.root, settings.download_directories)
        self.root = os.fsencode(os.path.realpath(settings.root))
        # Every session resolves its paths beneath this descriptor (sftpd.server.beneath).
        self.root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.session_limits = SessionLimits(max_open_handles=settings.max_open_handles,
                                            max_file_size=settings.max_file_size)
        self.authorized = AuthorizedKeys(settings.authorized_keys, self.audit)
        self.bans = BanList(settings.ban_after_failures, settings.ban_window_seconds,
                            settings.ban_seconds)
        self.limits = ConnectionLimits(settings.max_unauthenticated_per_source,
                                       settings.max_unauthenticated, settings.max_sessions)
        self.refusals = RefusalThrottle()
        self.connections: set[_Connection] = set()
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._host_key_watch: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self.host_keys = HostKeys(settings.host_keys, settings.next_host_keys, self.audit)
        self.gateway_key = (None if settings.gateway_key is None
                            else GatewayKey(settings.gateway_key, self.audit))

    def is_gateway_key(self, key: asyncssh.SSHKey) -> bool:
        return self.gateway_key is not None and self.gateway_key.matches(key)

    @property
    def port(self) -> int:
        assert self._acceptor is not None
        sockets = self._acceptor.sockets
        return int(sockets[0].getsockname()[1])

    async def start(self) -> None:
        from asyncssh.encryption import get_encryption_algs
        from asyncssh.kex import get_kex_algs
        from asyncssh.mac import get_mac_algs
        from asyncssh.public_key import get_public_key_algs

        # Refuse an asyncssh whose internals the per-connection patches would miss.
        internals.require(batching.PATCHED + quickack.PATCHED + signatures.PATCHED
                          + limits.PATCHED)
        s = self.settings
        hosts: list[str] | str = [h for h in s.bind if h] or ""
        # With --proxy-from, a listener of ours reads the gateway's PROXY header first.
        tunnel: ProxyListener | tuple[()] = ()
        if s.proxy_sources:
            tunnel = ProxyListener(s.proxy_sources, s.proxy_header_seconds, self._proxy_refused)
        self._acceptor = await asyncssh.listen(
            host=hosts, port=s.port, reuse_address=True, tunnel=tunnel,
            server_factory=lambda: _Connection(self),
            server_host_keys=self.host_keys.pairs,
            # After login, announce every host key (OpenSSH's hostkeys-00@openssh.com, as sshd
            # does): clients with UpdateHostKeys learn the keys they have not seen yet, and a
            # second key of a type is served as a reserved key, which is how a host key is
            # rotated without a "REMOTE HOST IDENTIFICATION HAS CHANGED" for every district.
            send_server_host_keys=True,
            server_version=SERVER_VERSION,
            kex_algs=supported(KEX_ALGS, get_kex_algs()),
            encryption_algs=supported(ENCRYPTION_ALGS, get_encryption_algs()),
            mac_algs=supported(MAC_ALGS + (COMPAT_MAC_ALGS if s.compat_macs else ()),
                               get_mac_algs()),
            compression_algs=["none"],
            # server-sig-algs: what clients are told they may sign user auth with (no SHA-1).
            signature_algs=supported(tuple(a.decode() for a in USER_AUTH_SIG_ALGS),
                                     get_public_key_algs()),
            public_key_auth=True, password_auth=False, kbdint_auth=False,
            host_based_auth=False, gss_auth=False, gss_kex=False,
            allow_pty=False, x11_forwarding=False, agent_forwarding=False,
            # No shell, so no line editing: SFTP data then skips the editor's write wrapper.
            line_editor=False,
            sftp_factory=self._sftp_factory, allow_scp=True,
            login_timeout=s.login_grace_seconds,
            keepalive_interval=60, keepalive_count_max=3,
            config=[],
        )
        self._reaper = asyncio.create_task(self._reap_idle())
        self._host_key_watch = asyncio.create_task(self._watch_host_keys())
        self.audit.event("server.listening", port=self.port, bind=s.bind, root=str(s.root),
                         login=s.login, keys=self.authorized.count,
                         download_directories=list(s.download_directories),
                         host_keys=self.host_keys.fingerprints())

    async def _watch_host_keys(self) -> None:
        """Serve changed host key files without a restart (a rotation's steps arrive as Secret
        volume updates): connections accepted afterwards use the new set, open ones keep
        theirs."""
        while True:
            await asyncio.sleep(HOST_KEY_CHECK_SECONDS)
            if self.host_keys.refresh() and self._acceptor is not None:
                self._acceptor.update(server_host_keys=self.host_keys.pairs)

    def _sftp_factory(self, chan: asyncssh.SSHServerChannel[bytes]) -> DistrictSFTPServer:
        owner = chan.get_connection().get_owner()
        assert isinstance(owner, _Connection)
        owner.touch()
        cut_channel_writes(chan)
        return DistrictSFTPServer(chan, self.root, self.root_fd, self.audit, owner.fields,
                                  owner.touch, self.session_limits, read_only=owner.read_only)

    def refused(self, reason: str, address: str, **fields: Any) -> None:
        """Count a refusal and log it, at most once per reason and address per few seconds."""
        REJECTED.labels(reason).inc()
        extra = self.refusals.check(reason, address)
        if extra is not None:
            self.audit.event("connection.refused", reason=reason, **fields, **extra)

    def _proxy_refused(self, reason: str, address: str, detail: str) -> None:
        self.refused(reason, address, source=address, error=detail)

    async def _reap_idle(self) -> None:
        """Close sessions idle longer than the idle timeout; forget stale ban data."""
        interval = max(0.2, min(30.0, self.settings.idle_timeout_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.conn is not None and \
                        now - conn.last_activity > self.settings.idle_timeout_seconds:
                    self.audit.event("connection.timed_out", **conn.fields)
                    conn.conn.disconnect(asyncssh.DISC_BY_APPLICATION, "Idle timeout")
            self.bans.prune()
            for reason, source, repeated in self.refusals.prune():
                self.audit.event("connection.refused", reason=reason, source=source,
                                 repeated=repeated)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting, tell clients goodbye, and wait (bounded) for sessions to finish."""
        await stop_listener(self._acceptor, (self._reaper, self._host_key_watch),
                            self.connections, self._drained, grace_seconds,
                            "Server shutting down")
        self.audit.event("server.stopped", open_sessions=len(self.connections))


class _Connection(asyncssh.SSHServer):
    """Per-connection policy: source checks, limits, the one login, key auth, failure counting."""

    def __init__(self, server: SFTPDistrictServer) -> None:
        self.server = server
        self.conn: asyncssh.SSHServerConnection | None = None
        self.address = "?"
        self.source = "?"
        self.fields: dict[str, Any] = {}
        self.failures = 0
        self.accepted_key: str | None = None
        self.read_only = False
        self.last_activity = time.monotonic()
        self.admitted = False
        self.authenticated = False
        self.channels_refused = 0
        self.proxied: ProxiedClient | None = None
        self.stop_quick_acks: Callable[[], None] = lambda: None

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.address = str(peer[0])
        self.fields = {"source": self.address, "port": peer[1]}
        self.proxied = conn.get_extra_info(PROXIED)
        if self.proxied is not None:
            # A trusted gateway's header: every check below and the log see the real client.
            self.address = self.proxied.address
            self.fields = {"source": self.address, "port": self.proxied.port,
                           "via": self.proxied.via}
        self.source = canonical_address(self.address)
        srv = self.server
        SESSIONS_TOTAL.inc()
        # Refuse before anything else is set up for the connection: a refusal must stay cheap.
        reason = None
        if not is_allowed(self.address, srv.settings.allowed_sources):
            reason = "source_not_allowed"
        elif srv.bans.is_banned(self.address):
            reason = "banned"
        else:
            reason = srv.limits.admit(self.source)
            WAITING.set(srv.limits.waiting)
        if reason is not None:
            srv.refused(reason, self.source, **self.fields)
            conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE
                            if reason in ("source_not_allowed", "banned")
                            else asyncssh.DISC_TOO_MANY_CONNECTIONS, "Not allowed")
            return
        self.admitted = True
        batch_writes(conn)
        drop_ignore_packets(conn)
        self.stop_quick_acks = ack_promptly(conn)
        refuse_weak_signatures(conn, self._weak_signature)
        cap_channels(conn, srv.settings.max_channels, self._channel_refused)
        srv.connections.add(self)
        srv._drained.clear()
        SESSIONS.inc()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        self.server.limits.release(self.source, logged_in=self.authenticated)
        WAITING.set(self.server.limits.waiting)
        self.server.connections.discard(self)
        SESSIONS.dec()
        if not self.server.connections:
            self.server._drained.set()
        if self.authenticated:
            extra = {"channels_refused": self.channels_refused} if self.channels_refused else {}
            self.server.audit.event("session.ended", **self.fields, **extra)

    def _channel_refused(self, open_now: int) -> None:
        self.channels_refused += 1
        REJECTED.labels("too_many_channels").inc()
        if self.channels_refused == 1:  # the rest are counted in the logout line
            self.server.audit.event("channel.refused", reason="too_many_channels",
                                    open_channels=open_now, **self.fields)

    def begin_auth(self, username: str) -> bool:
        self.server.authorized.refresh()
        if self.server.gateway_key is not None:
            self.server.gateway_key.refresh()
        self.fields["user"] = shown_user(username)
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self.touch()
        fingerprint = key.get_fingerprint()
        srv = self.server
        if username != srv.settings.login:
            self._failed("unknown_user", fingerprint)
            return False
        if self.proxied is not None or srv.is_gateway_key(key):
            verdict = self._gateway_verdict(key)
            if self.proxied is not None and self.proxied.fingerprint is not None:
                fingerprint = self.proxied.fingerprint
        else:
            verdict = srv.authorized.verdict(key, self.address)
        if verdict.options is None:
            self._failed(verdict.reason, fingerprint)
            return False
        if srv.limits.logged_in >= srv.limits.sessions:
            # Said before the login succeeds, so that the client hears why; the slot itself
            # is taken in auth_completed, once the signature has been checked.
            self._refuse_session(fingerprint)
            return False
        self.accepted_key = fingerprint
        self.read_only = verdict.options.read_only
        return True

    def _gateway_verdict(self, key: asyncssh.SSHKey) -> Verdict:
        """On a gateway's connection only the gateway key logs in, standing for the client key
        the header names, which must be one of the district's own (options, from=, expiry);
        elsewhere the gateway key is refused like any unknown key."""
        if self.proxied is None:
            return Verdict(None, "unknown_key")
        if not self.server.is_gateway_key(key):
            return Verdict(None, "not_gateway_key")
        if self.proxied.fingerprint is None:
            return Verdict(None, "no_client_key")
        return self.server.authorized.verdict_for(self.proxied.fingerprint, self.address)

    def _refuse_session(self, fingerprint: str | None) -> None:
        self.server.refused(TOO_MANY_SESSIONS, self.source, fingerprint=fingerprint,
                            **self.fields)
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, "Too many sessions")

    def _weak_signature(self, algorithm: bytes, fingerprint: str) -> None:
        self._failed("weak_signature", fingerprint,
                     algorithm=algorithm.decode("ascii", "backslashreplace"))

    def _failed(self, reason: str, fingerprint: str | None, **extra: Any) -> None:
        srv = self.server
        self.failures += 1
        AUTH_FAILURES.labels(reason).inc()
        srv.audit.event("login.failed", reason=reason, fingerprint=fingerprint,
                        attempt=self.failures, **extra, **self.fields)
        if srv.bans.record_failure(self.address):
            srv.audit.event("address.banned", seconds=srv.settings.ban_seconds, **self.fields)
            if self.conn is not None:
                self.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                                     "Too many failed logins")
                return
        if self.failures >= srv.settings.max_auth_tries and self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                                 "Too many authentication failures")

    def auth_completed(self) -> None:
        srv = self.server
        srv.bans.record_success(self.address)
        refused = srv.limits.log_in(self.source)
        WAITING.set(srv.limits.waiting)
        if refused is not None:
            # Another session took the last slot between the key check and now.
            self._refuse_session(self.accepted_key)
            return
        self.authenticated = True
        self.stop_quick_acks()
        self.touch()
        LOGINS.inc()
        extra = {"read_only": True} if self.read_only else {}
        srv.audit.event("login.succeeded", fingerprint=self.accepted_key, **extra, **self.fields)
