"""Docviewer URL tokens: a Fernet token naming one document and when it stops being accepted.

Fernet (the `cryptography` library's) encrypts and authenticates: AES-128-CBC and an
HMAC-SHA256 over the whole token. Any Fernet implementation (Go, Java, Ruby, ...) can decode a
token given the key, so the viewer need not run Python. The plaintext is ours, ASCII
`v1.<document id>.<expiry, Unix seconds>`; the expiry is explicit rather than Fernet's `ttl`
so the issuer, not each viewer, decides how long a URL works.

The key file holds one Fernet key per line (`sftpd docviewer-token generate-key` makes one):
the first line encrypts, every line decrypts, so a key is rotated by putting the new one
first and dropping the old one after the longest token lifetime has passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PLAINTEXT = re.compile(rb"^v1\.(?P<id>[0-9]{1,19})\.(?P<exp>[0-9]{1,12})$")
# A token is about 120 characters; anything much longer is not one of ours.
MAX_TOKEN_CHARS = 512
MAX_KEY_FILE_BYTES = 64 * 1024
DURATION = re.compile(r"^(?P<n>[0-9]{1,6})(?P<unit>[smhd])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenKeyError(ValueError):
    """The key file is missing, unreadable or holds no valid Fernet key."""


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


def read_keys(path: Path) -> list[Fernet]:
    """The keys of a key file, first line first; TokenKeyError names what is wrong."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise TokenKeyError(f"cannot read the token key file {path}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise TokenKeyError(f"the token key file {path} is larger than {MAX_KEY_FILE_BYTES} "
                            "bytes: not a key file")
    keys: list[Fernet] = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            keys.append(Fernet(line.strip()))
        except ValueError:
            # Never echo the line: it may be a real key with a typo.
            raise TokenKeyError(f"line {number} of the token key file {path} is not a Fernet "
                                "key (32 url-safe base64-encoded bytes)") from None
    if not keys:
        raise TokenKeyError(f"the token key file {path} holds no key")
    return keys


class TokenIssuer:
    """Makes the tokens of one export: one key, one expiry for every document."""

    def __init__(self, keys: list[Fernet], expires_at: datetime) -> None:
        self._fernet = keys[0]  # the first key encrypts (see the module's note on rotation)
        self._suffix = b".%d" % int(expires_at.timestamp())
        self.expires_at = expires_at

    def token(self, document_id: int) -> bytes:
        """The token for one document, url-safe base64 (ASCII) bytes."""
        return self._fernet.encrypt(b"v1.%d%s" % (document_id, self._suffix))


def decode_token(keys: list[Fernet], token: str | bytes, now: datetime) -> DocumentToken:
    """Check a URL's token and say which document it opens; TokenRefused when it must not.

    Refused as `invalid`: not made with one of these keys, altered in any way, or not ours.
    Refused as `expired`: valid, but `now` is at or past its expiry.
    """
    raw = token.encode("ascii", "replace") if isinstance(token, str) else token
    if not raw or len(raw) > MAX_TOKEN_CHARS:
        raise TokenRefused("invalid", "not a docviewer token (empty or too long)")
    try:
        plaintext = MultiFernet(keys).decrypt(raw)
    except InvalidToken:
        raise TokenRefused("invalid", "the token was not made with this key or was "
                                      "altered") from None
    match = PLAINTEXT.match(plaintext)
    if match is None:
        raise TokenRefused("invalid", "the token is authentic but not a docviewer token")
    expires_at = datetime.fromtimestamp(int(match.group("exp")), UTC)
    if now >= expires_at:
        raise TokenRefused("expired", f"the token expired at {expires_at.isoformat()}")
    return DocumentToken(document_id=int(match.group("id")), expires_at=expires_at)
