"""The district's authorized keys: judged (options, strength) and re-read when the file changes."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from district_contract.keyoptions import KeyOptions, judge_options, split_options

from sftpd.events import EventLog
from sftpd.server.audit import AuditLog
from sftpd.server.fileidentity import FileIdentity, identity_of

log = logging.getLogger(__name__)

# As the operator's check (district_operator/keys.py): below this an RSA key is forgeable in
# practice. DSA is refused outright (1024-bit, SHA-1 only; removed from OpenSSH).
MIN_RSA_BITS = 2048


def weakness(key: asyncssh.SSHKey) -> str | None:
    """Why a client key is too weak to log in, or None when it is strong enough."""
    if key.algorithm == b"ssh-dss":
        return "DSA keys are too weak (1024 bits, SHA-1 signatures): use ssh-ed25519"
    if key.algorithm == b"ssh-rsa":
        public = serialization.load_ssh_public_key(key.export_public_key("openssh"))
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
            return (f"RSA key of {public.key_size} bits is too weak: at least {MIN_RSA_BITS} "
                    "bits, or better ssh-ed25519")
    return None


@dataclass(frozen=True)
class _Entry:
    """One usable line: asyncssh's parse of it (for from= matching) and what its options ask."""

    line: int
    parsed: asyncssh.SSHAuthorizedKeys
    options: KeyOptions
    key: asyncssh.SSHKey


@dataclass(frozen=True)
class Verdict:
    """Whether a key may log in, with its options when it may, and why not when it may not."""

    options: KeyOptions | None
    reason: str = "unknown_key"


class KeyRules:
    """Judged authorized_keys lines (options, strength) and the verdict on a client key.

    `where` names the lines' origin in the log events (a file's path, a routing entry)."""

    def __init__(self, audit: EventLog, where: str) -> None:
        self._audit = audit
        self._where = where
        self._entries: tuple[_Entry, ...] = ()
        self.count = 0

    def load(self, lines: Iterable[str]) -> None:
        entries: list[_Entry] = []
        for number, line in enumerate(lines, start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            entry = self._judge(number, stripped)
            if entry is not None:
                entries.append(entry)
        self._entries = tuple(entries)
        self.count = len(entries)

    def _judge(self, number: int, line: str) -> _Entry | None:
        """The line as an entry, or None after logging why it is skipped.

        One bad line must not lock the district out: it is skipped and named, the others work.
        """
        where = {"path": self._where, "line": number}
        try:
            options_text, key_text = split_options(line)
            key = asyncssh.import_public_key(key_text)
            parsed = asyncssh.import_authorized_keys(line)
        except (ValueError, asyncssh.KeyImportError) as exc:
            self._audit.event("authorized_keys.line_skipped", **where, error=str(exc))
            return None
        fingerprint = key.get_fingerprint()
        try:
            options = judge_options(options_text)
        except ValueError as exc:
            self._audit.event("authorized_keys.refused_option", **where,
                              fingerprint=fingerprint, error=str(exc))
            return None
        weak = weakness(key)
        if weak is not None:
            self._audit.event("authorized_keys.weak_key", **where, fingerprint=fingerprint,
                              error=weak)
            return None
        return _Entry(number, parsed, options, key)

    def verdict(self, key: asyncssh.SSHKey, client_addr: str,
                now: datetime | None = None) -> Verdict:
        """The first line listing the key whose from= accepts the client and that has not
        expired (OpenSSH goes on to later lines the same way)."""
        moment = now or datetime.now(UTC)
        reason = "unknown_key"
        for entry in self._entries:
            if entry.parsed.validate(key, client_addr, client_addr) is None:
                continue
            if entry.options.expired(moment):
                reason = "key_expired"
                continue
            return Verdict(entry.options)
        return Verdict(None, reason)

    def verdict_for(self, fingerprint: str, client_addr: str,
                    now: datetime | None = None) -> Verdict:
        """As verdict(), for the key with this SHA256 fingerprint: the client key a trusted
        gateway names (the gateway checked the signature; this file stays the authority)."""
        for entry in self._entries:
            if entry.key.get_fingerprint() == fingerprint:
                return self.verdict(entry.key, client_addr, now)
        return Verdict(None, "unknown_key")


class AuthorizedKeys(KeyRules):
    """Holds the parsed keys of one authorized_keys file and reloads it when it changes.

    The check is a realpath + stat on each authentication attempt: cheap, and exact for the
    atomic `..data` symlink swap a Secret volume does, where the file the name resolves to
    changes while the name itself stays put.
    """

    def __init__(self, path: Path, audit: AuditLog) -> None:
        super().__init__(audit, str(path))
        self._path = path
        self._identity: FileIdentity | None = None
        self.refresh()

    def refresh(self) -> None:
        """Reload the file if it changed since the last load; keep the old keys if unreadable."""
        identity = identity_of(self._path)
        if identity is not None and identity == self._identity:
            return
        if identity is None:
            if self._identity is not None or not self._entries:
                self._audit.event("authorized_keys.missing", path=str(self._path))
            self._identity, self._entries, self.count = None, (), 0
            return
        try:
            text = Path(identity.real_path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            self._audit.event("authorized_keys.unreadable", path=str(self._path), error=str(exc))
            return
        self.load(text.splitlines())
        self._identity = identity
        self._audit.event("authorized_keys.loaded", path=str(self._path), keys=self.count)


class GatewayKey:
    """The gateway's public key (`--gateway-key`), re-read when the file changes as the
    authorized keys are: in a Kubernetes pod it sits in the authorized-keys Secret volume, so a
    new gateway key arrives as a volume update and needs no restart.

    At start a file that is there but not a public key is an error (the server does not
    start); a file that is absent means no gateway logins until it appears; a later change
    that cannot be read is logged and the last good key kept."""

    def __init__(self, path: Path, audit: AuditLog) -> None:
        self._path = path
        self._audit = audit
        self._identity: FileIdentity | None = None
        self.key: asyncssh.SSHKey | None = None
        identity = identity_of(path)
        if identity is None:
            audit.event("gateway_key.missing", path=str(path))
            return
        try:
            self.key = asyncssh.read_public_key(identity.real_path)
        except (OSError, asyncssh.KeyImportError) as exc:
            raise ValueError(f"cannot read the gateway key {path}: {exc}") from exc
        self._identity = identity

    def refresh(self) -> None:
        """Reload the key if its file changed (a realpath and a stat when it did not)."""
        identity = identity_of(self._path)
        if identity == self._identity:
            return
        if identity is None:
            # Gone: the District left shared mode or the gateway was removed; nothing the
            # gateway sends is trusted any more.
            self._audit.event("gateway_key.missing", path=str(self._path))
            self._identity, self.key = None, None
            return
        try:
            key = asyncssh.read_public_key(identity.real_path)
        except (OSError, asyncssh.KeyImportError) as exc:
            self._audit.event("gateway_key.unreadable", path=str(self._path), error=str(exc))
            self._identity = identity  # not retried until the file changes again
            return
        self._identity, self.key = identity, key
        self._audit.event("gateway_key.loaded", path=str(self._path),
                          fingerprint=key.get_fingerprint())

    def matches(self, key: asyncssh.SSHKey) -> bool:
        return self.key is not None and key.public_data == self.key.public_data
