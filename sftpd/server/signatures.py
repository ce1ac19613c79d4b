"""Which signature algorithms a client may log in with: SHA-2 RSA and modern curves, never SHA-1."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable

import asyncssh

from sftpd.server.internals import Internal

# Advertised in server-sig-algs and the only ones a user-auth signature may use. SHA-1 `ssh-rsa`
# and `ssh-dss` are missing on purpose: OpenSSH refuses them by default since 8.8.
USER_AUTH_SIG_ALGS: tuple[bytes, ...] = (
    b"ssh-ed25519",
    b"sk-ssh-ed25519@openssh.com",
    b"ecdsa-sha2-nistp256",
    b"ecdsa-sha2-nistp384",
    b"ecdsa-sha2-nistp521",
    b"sk-ecdsa-sha2-nistp256@openssh.com",
    b"webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
    b"rsa-sha2-512",
    b"rsa-sha2-256",
)

# What refuse_weak_signatures wraps (sftpd.server.internals checks it before the server starts:
# without it SHA-1 signatures would quietly be accepted again).
PATCHED: tuple[Internal, ...] = (
    Internal(asyncssh.SSHServerConnection, "validate_public_key",
             ("self", "username", "key_data", "msg", "signature"), "refuse_weak_signatures"),
)


def signature_algorithm(signature: bytes) -> bytes:
    """The algorithm name an SSH signature blob starts with (an SSH string); b"" if malformed."""
    if len(signature) < 4:
        return b""
    length = int.from_bytes(signature[:4], "big")
    return signature[4:4 + length] if len(signature) >= 4 + length else b""


def fingerprint(key_data: bytes) -> str:
    """The SHA-256 fingerprint of a public key blob, as ssh-keygen -l prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_data).digest()).decode().rstrip("=")


def refuse_weak_signatures(conn: asyncssh.SSHServerConnection,
                           on_refused: Callable[[bytes, str], None]) -> bool:
    """Refuse user-auth signatures made with an algorithm outside USER_AUTH_SIG_ALGS.

    asyncssh verifies a signature with any algorithm the key type knows (SHA-1 `ssh-rsa`
    included) whatever server-sig-algs said, so a client that ignores the advertisement still
    logs in with SHA-1. This wraps the connection's key check, which receives the signature,
    and calls on_refused(algorithm, fingerprint) instead of checking the key. False (nothing
    changed) if this asyncssh has no such method.
    """
    original = getattr(conn, "validate_public_key", None)
    if not callable(original):
        return False
    check: Callable[[str, bytes, bytes, bytes], Awaitable[bool]] = original

    async def validate(username: str, key_data: bytes, msg: bytes, signature: bytes) -> bool:
        if msg:
            algorithm = signature_algorithm(signature)
            if algorithm not in USER_AUTH_SIG_ALGS:
                on_refused(algorithm, fingerprint(key_data))
                return False
        return await check(username, key_data, msg, signature)

    conn.validate_public_key = validate  # type: ignore[method-assign]
    return True
