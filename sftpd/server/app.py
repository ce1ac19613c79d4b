"""The SSH side of the server: listening, algorithms, authentication, limits and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from sftpd import tree
from sftpd.server import batching, internals, quickack
from sftpd.server.access import BanList, IPNetwork, is_allowed
from sftpd.server.audit import (
    AUTH_FAILURES,
    LOGINS,
    REJECTED,
    SESSIONS,
    SESSIONS_TOTAL,
    AuditLog,
)
from sftpd.server.batching import batch_writes, cut_channel_writes, drop_ignore_packets
from sftpd.server.filesystem import DistrictSFTPServer
from sftpd.server.keys import AuthorizedKeys
from sftpd.server.quickack import ack_promptly

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
# ssh-rsa (SHA-1 signatures) is dropped from what an RSA host key may sign with.
HOST_KEY_ALGS: frozenset[bytes] = frozenset({b"ssh-ed25519", b"rsa-sha2-512", b"rsa-sha2-256"})
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
    port: int = 2222
    bind: list[str] = field(default_factory=lambda: [""])
    allowed_sources: tuple[IPNetwork, ...] = ()
    login_grace_seconds: float = 30.0
    max_auth_tries: int = 6
    idle_timeout_seconds: float = 900.0
    max_sessions: int = 100
    ban_after_failures: int = 10
    ban_window_seconds: float = 600.0
    ban_seconds: float = 900.0
    compat_macs: bool = False


class SFTPDistrictServer:
    """One listening SFTP server for one district's tree."""

    def __init__(self, settings: ServerSettings, audit: AuditLog | None = None) -> None:
        self.settings = settings
        self.audit = audit or AuditLog()
        tree.ensure_tree(settings.root)
        self.root = os.fsencode(os.path.realpath(settings.root))
        self.authorized = AuthorizedKeys(settings.authorized_keys, self.audit)
        self.bans = BanList(settings.ban_after_failures, settings.ban_window_seconds,
                            settings.ban_seconds)
        self.connections: set[_Connection] = set()
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self.host_keys = self._load_host_keys(settings.host_keys)

    @staticmethod
    def _load_host_keys(paths: list[Path]) -> list[asyncssh.SSHKeyPair]:
        if not paths:
            raise ValueError("at least one --host-key is needed")
        pairs: list[asyncssh.SSHKeyPair] = []
        for path in paths:
            try:
                loaded = asyncssh.load_keypairs([str(path)])
            except (OSError, asyncssh.KeyImportError) as exc:
                raise ValueError(f"cannot read host key {path}: {exc}") from exc
            for pair in loaded:
                pair.host_key_algorithms = [a for a in pair.host_key_algorithms
                                            if a in HOST_KEY_ALGS]
                if pair.host_key_algorithms:
                    if b"rsa-sha2-512" in pair.host_key_algorithms:
                        # A key pair signs with SHA-1 `ssh-rsa` until a key exchange picks an
                        # algorithm, and asyncssh's hostkeys-prove-00 answer uses that default:
                        # OpenSSH clients disregard such a proof and do not learn the RSA key.
                        pair.set_sig_algorithm(b"rsa-sha2-512")
                    pairs.append(pair)
        if not pairs:
            raise ValueError("no usable host key (ed25519 or RSA expected)")
        return pairs

    @property
    def port(self) -> int:
        assert self._acceptor is not None
        sockets = self._acceptor.sockets
        return int(sockets[0].getsockname()[1])

    async def start(self) -> None:
        from asyncssh.encryption import get_encryption_algs
        from asyncssh.kex import get_kex_algs
        from asyncssh.mac import get_mac_algs

        # Refuse an asyncssh whose internals the per-connection patches would miss.
        internals.require(batching.PATCHED + quickack.PATCHED)
        s = self.settings
        hosts: list[str] | str = [h for h in s.bind if h] or ""
        self._acceptor = await asyncssh.listen(
            host=hosts, port=s.port, reuse_address=True,
            server_factory=lambda: _Connection(self),
            server_host_keys=self.host_keys,
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
        self.audit.event("server.listening", port=self.port, bind=s.bind, root=str(s.root),
                         login=s.login, keys=self.authorized.count)

    def _sftp_factory(self, chan: asyncssh.SSHServerChannel[bytes]) -> DistrictSFTPServer:
        owner = chan.get_connection().get_owner()
        assert isinstance(owner, _Connection)
        owner.touch()
        cut_channel_writes(chan)
        return DistrictSFTPServer(chan, self.root, self.audit, owner.fields, owner.touch)

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

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting, tell clients goodbye, and wait (bounded) for sessions to finish."""
        if self._acceptor is not None:
            self._acceptor.close()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for conn in list(self.connections):
            if conn.conn is not None:
                conn.conn.disconnect(asyncssh.DISC_BY_APPLICATION, "Server shutting down")
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace_seconds)
        if self._acceptor is not None:
            await self._acceptor.wait_closed()
        self.audit.event("server.stopped", open_sessions=len(self.connections))


class _Connection(asyncssh.SSHServer):
    """Per-connection policy: source checks, the one login, key auth, failure counting."""

    def __init__(self, server: SFTPDistrictServer) -> None:
        self.server = server
        self.conn: asyncssh.SSHServerConnection | None = None
        self.address = "?"
        self.fields: dict[str, Any] = {}
        self.failures = 0
        self.accepted_key: str | None = None
        self.last_activity = time.monotonic()
        self.authenticated = False
        self.stop_quick_acks: Callable[[], None] = lambda: None

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        batch_writes(conn)
        drop_ignore_packets(conn)
        self.stop_quick_acks = ack_promptly(conn)
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.address = str(peer[0])
        self.fields = {"source": self.address, "port": peer[1]}
        srv = self.server
        SESSIONS_TOTAL.inc()
        reason = None
        if not is_allowed(self.address, srv.settings.allowed_sources):
            reason = "source_not_allowed"
        elif srv.bans.is_banned(self.address):
            reason = "banned"
        elif len(srv.connections) >= srv.settings.max_sessions:
            reason = "too_many_sessions"
        if reason is not None:
            REJECTED.labels(reason).inc()
            srv.audit.event("connection.refused", reason=reason, **self.fields)
            conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE
                            if reason != "too_many_sessions"
                            else asyncssh.DISC_TOO_MANY_CONNECTIONS, "Not allowed")
            return
        srv.connections.add(self)
        srv._drained.clear()
        SESSIONS.inc()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.server.connections:
            self.server.connections.discard(self)
            SESSIONS.dec()
            if not self.server.connections:
                self.server._drained.set()
            if self.authenticated:
                self.server.audit.event("session.ended", **self.fields)

    def begin_auth(self, username: str) -> bool:
        self.server.authorized.refresh()
        self.fields["user"] = username
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self.touch()
        fingerprint = key.get_fingerprint()
        if username == self.server.settings.login and \
                self.server.authorized.allows(key, self.address, self.address):
            self.accepted_key = fingerprint
            return True
        self._failed("unknown_key" if username == self.server.settings.login
                     else "unknown_user", fingerprint)
        return False

    def _failed(self, reason: str, fingerprint: str | None) -> None:
        srv = self.server
        self.failures += 1
        AUTH_FAILURES.labels(reason).inc()
        srv.audit.event("login.failed", reason=reason, fingerprint=fingerprint,
                        attempt=self.failures, **self.fields)
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
        self.authenticated = True
        self.stop_quick_acks()
        self.touch()
        LOGINS.inc()
        self.server.bans.record_success(self.address)
        self.server.audit.event("login.succeeded", fingerprint=self.accepted_key, **self.fields)
