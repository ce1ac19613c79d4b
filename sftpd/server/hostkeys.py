"""The server's host keys: current ones sign the key exchange, next ones are only announced."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import asyncssh

from sftpd.server.audit import AuditLog
from sftpd.server.fileidentity import FileIdentity, identity_of

# ssh-rsa (SHA-1 signatures) is dropped from what an RSA host key may sign with.
HOST_KEY_ALGS: frozenset[bytes] = frozenset({b"ssh-ed25519", b"rsa-sha2-512", b"rsa-sha2-256"})
# A host key file is a few kilobytes; anything far larger is not one (and is not read whole).
MAX_HOST_KEY_BYTES = 64 << 10




def fingerprint(pair: asyncssh.SSHKeyPair) -> str:
    """The key's SHA-256 fingerprint as `ssh-keygen -l` prints it."""
    digest = base64.b64encode(hashlib.sha256(pair.public_data).digest()).decode()
    return "SHA256:" + digest.rstrip("=")


def _load(path: Path) -> list[asyncssh.SSHKeyPair]:
    """The usable key pairs of one OpenSSH private key file; ValueError saying why not."""
    try:
        if path.stat().st_size > MAX_HOST_KEY_BYTES:
            raise ValueError(f"host key {path} is larger than {MAX_HOST_KEY_BYTES} bytes")
        loaded = asyncssh.load_keypairs([str(path)])
    except (OSError, asyncssh.KeyImportError) as exc:
        raise ValueError(f"cannot read host key {path}: {exc}") from exc
    pairs = []
    for pair in loaded:
        pair.host_key_algorithms = [a for a in pair.host_key_algorithms if a in HOST_KEY_ALGS]
        if pair.host_key_algorithms:
            if b"rsa-sha2-512" in pair.host_key_algorithms:
                # A key pair signs with SHA-1 `ssh-rsa` until a key exchange picks an
                # algorithm, and asyncssh's hostkeys-prove-00 answer uses that default:
                # OpenSSH clients disregard such a proof and do not learn the RSA key.
                pair.set_sig_algorithm(b"rsa-sha2-512")
            pairs.append(pair)
    return pairs


class HostKeys:
    """The host key files, loaded in order (current first, then next) and re-read on change.

    asyncssh signs the key exchange with the first key of each algorithm and announces every
    key after login (hostkeys-00@openssh.com), so a next key listed after the current one of
    its type is a reserved key: clients with UpdateHostKeys learn it before it is used. A next
    file that is absent is no error (no rotation in flight); a current one is.
    """

    def __init__(self, current: list[Path], upcoming: list[Path], audit: AuditLog) -> None:
        if not current:
            raise ValueError("at least one --host-key is needed")
        self._current = current
        self._next = upcoming
        self._audit = audit
        self._identities = self._look()
        self.pairs = self._read()

    def _look(self) -> tuple[FileIdentity | None, ...]:
        return tuple(identity_of(p) for p in self._current + self._next)

    def _read(self) -> list[asyncssh.SSHKeyPair]:
        pairs: list[asyncssh.SSHKeyPair] = []
        for path in self._current:
            pairs += _load(path)
        if not pairs:
            raise ValueError("no usable host key (ed25519 or RSA expected)")
        for path in self._next:
            if path.exists():
                pairs += _load(path)
        return pairs

    def fingerprints(self) -> dict[str, list[str]]:
        """What the audit log says of the keys: signing (first of each type) and announced."""
        signing: list[str] = []
        announced: list[str] = []
        seen: set[bytes] = set()
        for pair in self.pairs:
            kind = pair.key_algorithm
            (announced if kind in seen else signing).append(fingerprint(pair))
            seen.add(kind)
        return {"signing": signing, "announced": announced}

    def refresh(self) -> bool:
        """Re-read the files if any changed; True when the keys changed. A set that cannot be
        loaded (a half-written file, a current key gone) keeps the keys in use, and says so."""
        identities = self._look()
        if identities == self._identities:
            return False
        try:
            pairs = self._read()
        except ValueError as exc:
            self._audit.event("host_keys.unreadable", error=str(exc))
            self._identities = identities  # said once per change, not on every check
            return False
        self._identities = identities
        # In order: which key of a type comes first decides which one signs.
        old = [p.public_data for p in self.pairs]
        self.pairs = pairs
        if [p.public_data for p in pairs] == old:
            return False
        self._audit.event("host_keys.loaded", **self.fingerprints())
        return True
