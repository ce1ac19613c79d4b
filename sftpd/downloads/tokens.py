"""Docviewer URL tokens: AES-256-GCM tokens naming one document and when it stops being accepted.

A token is `base64url(version || nonce || AES-256-GCM(key, nonce, plaintext, aad=version))`,
60 characters, no padding: version is the byte 0x01, nonce 12 random bytes, the plaintext 16
bytes (the document id, signed big-endian, then the expiry in Unix seconds, unsigned
big-endian), followed by GCM's 16-byte tag. GCM encrypts and authenticates in one call of the
`cryptography` library (OpenSSL underneath), which is what makes a token per row cheap: Fernet
costs about ten times as much per token in Python (docs/downloads.md, Benchmark). Any
AES-GCM implementation (Go's crypto/cipher, Java's JCE, Node's crypto, Web Crypto) decodes a
token from this layout, so the viewer need not run Python.

Nonces are random (the OS's CSPRNG), so a key must make fewer than 2**32 tokens (NIST SP
800-38D): 200,000 a night is some 58 years. The key file holds one key per line, 32 bytes in
url-safe base64 (`sftpd docviewer-token generate-key` makes one; a Fernet key has the same
form): the first line encrypts, every line decrypts, so a key is rotated by putting the new
one first and dropping the old one after the longest token lifetime has passed.
"""

from __future__ import annotations

import base64
import os
import re
import struct
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import repeat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"\x01"
NONCE_BYTES = 12
ID_BYTES = 8  # a bigint document id, big-endian, two's complement
PLAINTEXT_BYTES = ID_BYTES + 8  # then the expiry, Unix seconds, unsigned
TAG_BYTES = 16
TOKEN_BYTES = len(VERSION) + NONCE_BYTES + PLAINTEXT_BYTES + TAG_BYTES
# 45 bytes, a multiple of 3: a run of tokens base64-encodes in one call and splits into
# tokens at every TOKEN_CHARS characters, with no padding in any of them.
TOKEN_CHARS = TOKEN_BYTES // 3 * 4
TOKEN = re.compile(rb"[A-Za-z0-9_-]{%d}" % TOKEN_CHARS)  # fullmatch: nothing around it
KEY_BYTES = 32
KEY_LINE = re.compile(rb"[A-Za-z0-9_-]{43}=")  # fullmatch: 32 bytes in url-safe base64
MAX_KEY_FILE_BYTES = 64 * 1024
# datetime cannot hold a later expiry; only a key holder could make one.
MAX_EXPIRY = int(datetime(9999, 12, 31, tzinfo=UTC).timestamp())
DURATION = re.compile(r"^(?P<n>[0-9]{1,6})(?P<unit>[smhd])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

TokenKeys = list[AESGCM]


class TokenKeyError(ValueError):
    """The key file is missing, unreadable or holds no valid key."""


class TokenRefused(ValueError):
    """A token that must not open a document; `reason` is `invalid` or `expired`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class DocumentToken:
    """What a valid token says: the document it opens and until when."""

    document_id: int
    expires_at: datetime


def parse_duration(text: str) -> timedelta:
    """`<n>s|m|h|d` (e.g. `7d`, `36h`) as a positive timedelta; ValueError otherwise."""
    match = DURATION.match(text.strip())
    if match is None or int(match.group("n")) == 0:
        raise ValueError(f"{text!r} is not a duration such as 7d, 36h, 90m or 3600s (above 0)")
    return timedelta(seconds=int(match.group("n")) * UNIT_SECONDS[match.group("unit")])


def aware_time(text: str) -> datetime:
    """An ISO 8601 time with its zone (`2026-09-15T12:00:00Z`); ValueError otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} needs a time zone (e.g. a trailing Z)")
    return moment


def generate_key() -> str:
    """A new random key: one line of a key file."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def read_keys(path: Path) -> TokenKeys:
    """The keys of a key file, first line first; TokenKeyError names what is wrong."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise TokenKeyError(f"cannot read the token key file {path}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise TokenKeyError(f"the token key file {path} is larger than {MAX_KEY_FILE_BYTES} "
                            "bytes: not a key file")
    keys: TokenKeys = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        if KEY_LINE.fullmatch(line.strip()) is None:
            # Never echo the line: it may be a real key with a typo.
            raise TokenKeyError(f"line {number} of the token key file {path} is not a key "
                                "(32 bytes in url-safe base64, 44 characters)")
        keys.append(AESGCM(base64.urlsafe_b64decode(line.strip())))
    if not keys:
        raise TokenKeyError(f"the token key file {path} holds no key")
    return keys


@lru_cache(maxsize=16)
def _pieces(width: int, count: int) -> struct.Struct:
    return struct.Struct(f"{width}s" * count)


def pieces(data: bytes, width: int, count: int) -> tuple[bytes, ...]:
    """data (exactly width * count bytes) cut into count pieces of width bytes, in one C call
    (a struct of count fixed-width strings, kept for the sizes used again: full batches)."""
    return _pieces(width, count).unpack(data)


class _Slots:
    """Reusable buffers for `count` tokens, and a view of each token's parts in them: the
    plaintexts (id, then the expiry, set once) and the raw tokens (version set once, nonce,
    then ciphertext and tag, which AES-GCM writes in place)."""

    def __init__(self, count: int, expiry: bytes) -> None:
        self.plaintext = bytearray(PLAINTEXT_BYTES * count)
        self.raw = bytearray(TOKEN_BYTES * count)
        for k in range(len(expiry)):  # byte k of every plaintext's expiry, one slice each
            self.plaintext[ID_BYTES + k::PLAINTEXT_BYTES] = expiry[k:k + 1] * count
        self.raw[0::TOKEN_BYTES] = VERSION * count
        plain, raw = memoryview(self.plaintext), memoryview(self.raw)
        starts = range(0, TOKEN_BYTES * count, TOKEN_BYTES)
        self.plaintexts = [plain[i:i + PLAINTEXT_BYTES]
                           for i in range(0, PLAINTEXT_BYTES * count, PLAINTEXT_BYTES)]
        self.nonces = [raw[i + 1:i + 1 + NONCE_BYTES] for i in starts]
        self.sealed = [raw[i + 1 + NONCE_BYTES:i + TOKEN_BYTES] for i in starts]


class TokenIssuer:
    """Makes the tokens of one export: one key, one expiry for every document. Its buffers are
    reused from call to call, so a lock makes each call whole: two threads sharing an issuer
    never mix their ids or nonces (the job's one thread takes it once a batch, uncontended)."""

    def __init__(self, keys: TokenKeys, expires_at: datetime) -> None:
        self._encrypt_into = keys[0].encrypt_into  # the first key encrypts (module's note)
        self._expiry = int(expires_at.timestamp()).to_bytes(8, "big")
        self._slots: dict[int, _Slots] = {}
        self._lock = threading.Lock()
        self.expires_at = expires_at

    def tokens(self, document_ids: bytes) -> bytes:
        """The tokens of these documents (document_ids: each id ID_BYTES big-endian, one
        after the other), one after the other in one url-safe base64 (ASCII) string: token
        i is [i * TOKEN_CHARS:(i + 1) * TOKEN_CHARS].

        One os.urandom call and one base64 call for all; per document only the AES-GCM call,
        which writes straight into the batch's buffer, and no Python bytecode: the ids and
        nonces go into place with one slice assignment per byte position, and map() drives
        the calls over views made once per batch size.
        """
        count, rest = divmod(len(document_ids), ID_BYTES)
        if rest:
            raise ValueError(f"document ids are {ID_BYTES} bytes each")
        with self._lock:
            return self._sealed(document_ids, count)

    def _sealed(self, document_ids: bytes, count: int) -> bytes:
        slots = self._slots.get(count)
        if slots is None:
            if len(self._slots) > 4:  # a full batch and a few last ones of an export
                self._slots.clear()
            slots = self._slots[count] = _Slots(count, self._expiry)
        for k in range(ID_BYTES):
            slots.plaintext[k::PLAINTEXT_BYTES] = document_ids[k::ID_BYTES]
        nonces = os.urandom(NONCE_BYTES * count)
        for k in range(NONCE_BYTES):
            slots.raw[1 + k::TOKEN_BYTES] = nonces[k::NONCE_BYTES]
        deque(map(self._encrypt_into, slots.nonces, slots.plaintexts, repeat(VERSION, count),
                  slots.sealed), maxlen=0)
        return base64.urlsafe_b64encode(slots.raw)

    def token(self, document_id: int) -> bytes:
        """The token for one document, url-safe base64 (ASCII) bytes."""
        return self.tokens(document_id.to_bytes(ID_BYTES, "big", signed=True))


def decode_token(keys: TokenKeys, token: str | bytes, now: datetime) -> DocumentToken:
    """Check a URL's token and say which document it opens; TokenRefused when it must not.

    Refused as `invalid`: not made with one of these keys, altered in any way, or not ours.
    Refused as `expired`: valid, but `now` is at or past its expiry.
    """
    # The length first: a viewer may hand over anything a URL held, of any size.
    raw = b"" if len(token) != TOKEN_CHARS else (
        token.encode("ascii", "replace") if isinstance(token, str) else token)
    if TOKEN.fullmatch(raw) is None:
        raise TokenRefused("invalid", f"not a docviewer token ({TOKEN_CHARS} url-safe base64 "
                                      "characters)")
    data = base64.urlsafe_b64decode(raw)
    version, nonce = data[:1], data[1:1 + NONCE_BYTES]
    plaintext = None
    # An altered version byte is refused like any other alteration.
    for key in keys if version == VERSION else ():
        try:
            plaintext = key.decrypt(nonce, data[1 + NONCE_BYTES:], version)
            break
        except InvalidTag:
            continue
    if plaintext is None:
        raise TokenRefused("invalid", "the token was not made with this key or was altered")
    expiry = int.from_bytes(plaintext[ID_BYTES:], "big")
    if len(plaintext) != PLAINTEXT_BYTES or expiry > MAX_EXPIRY:
        raise TokenRefused("invalid", "the token is authentic but not a docviewer token")
    expires_at = datetime.fromtimestamp(expiry, UTC)
    if now >= expires_at:
        raise TokenRefused("expired", f"the token expired at {expires_at.isoformat()}")
    return DocumentToken(document_id=int.from_bytes(plaintext[:ID_BYTES], "big", signed=True),
                         expires_at=expires_at)

