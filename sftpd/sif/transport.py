"""The SIF HTTPS transport: POST a message to the zone URL, read a bounded reply.

TLS always (an http:// zone URL is refused as bad usage), the zone's certificate checked
against --ca-file (or the system's CAs) and its host name, HTTP basic authentication or a
client certificate from the mounted Secret, a timeout on every exchange, and a reply refused
past the agent's max buffer size (plus room for the acknowledgement around the delivered
message). Every failure becomes a PullError with a typed reason.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from sftpd.sif.errors import PullError, PullReason

CONTENT_TYPE: Final = "application/xml;charset=utf-8"
# Around the delivered message, the SIF_Ack that carries it: header, status, wrappers.
ENVELOPE_BYTES: Final = 64 * 1024
# Credentials and certificates are small files; anything larger is not one.
MAX_SECRET_FILE: Final = 64 * 1024
USERNAME: Final = "username"
PASSWORD: Final = "password"  # noqa: S105 (a Secret key's name)
TLS_CRT: Final = "tls.crt"
TLS_KEY: Final = "tls.key"


class ZoneURLError(ValueError):
    """A zone URL the agent will not use."""


def check_zone_url(url: str) -> str:
    """The URL if it is https:// with a host and no credentials in it; else ZoneURLError."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ZoneURLError("must be an https:// URL (SIF over plain HTTP is not supported)")
    if not parts.hostname:
        raise ZoneURLError("has no host")
    if parts.username or parts.password:
        raise ZoneURLError("must not carry credentials (use --auth-dir)")
    if parts.fragment:
        raise ZoneURLError("must not have a #fragment")
    return url


def _secret_file(path: Path) -> bytes:
    with path.open("rb") as f:
        data = f.read(MAX_SECRET_FILE + 1)
    if len(data) > MAX_SECRET_FILE:
        raise ValueError(f"{path}: larger than {MAX_SECRET_FILE} bytes")
    return data


@dataclass(frozen=True)
class Credentials:
    """How the agent proves itself: HTTP basic, a client certificate, or nothing."""

    basic: str | None = None  # the Authorization header's value
    cert_file: Path | None = None
    key_file: Path | None = None


def read_credentials(directory: Path | None) -> Credentials:
    """The mounted Secret: username+password (basic) or tls.crt+tls.key (client certificate).

    ValueError (bad usage) for a directory that has neither pair, or half of one.
    """
    if directory is None:
        return Credentials()
    if not directory.is_dir():
        raise ValueError(f"{directory}: not a directory")
    has = {name: (directory / name).is_file() for name in (USERNAME, PASSWORD, TLS_CRT,
                                                           TLS_KEY)}
    if has[USERNAME] != has[PASSWORD] or has[TLS_CRT] != has[TLS_KEY]:
        raise ValueError(f"{directory}: needs both {USERNAME} and {PASSWORD}, or both "
                         f"{TLS_CRT} and {TLS_KEY}")
    if not (has[USERNAME] or has[TLS_CRT]):
        raise ValueError(f"{directory}: holds neither {USERNAME}+{PASSWORD} nor "
                         f"{TLS_CRT}+{TLS_KEY}")
    basic = None
    if has[USERNAME]:
        # A Secret made from files often ends its values with a line break; it is not theirs.
        user = _secret_file(directory / USERNAME).rstrip(b"\r\n")
        password = _secret_file(directory / PASSWORD).rstrip(b"\r\n")
        if b":" in user:
            raise ValueError(f"{directory / USERNAME}: a user name for HTTP basic "
                             "authentication cannot hold ':'")
        basic = "Basic " + base64.b64encode(user + b":" + password).decode("ascii")
    if has[TLS_CRT]:
        for name in (TLS_CRT, TLS_KEY):
            _secret_file(directory / name)  # bounded before ssl reads it whole
        return Credentials(basic, directory / TLS_CRT, directory / TLS_KEY)
    return Credentials(basic)


def tls_context(ca_file: Path | None, credentials: Credentials) -> ssl.SSLContext:
    """Verify the zone (its CA, its host name), TLS 1.2 at least, our certificate if any."""
    context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if credentials.cert_file is not None and credentials.key_file is not None:
        context.load_cert_chain(str(credentials.cert_file), str(credentials.key_file))
    return context


class Transport:
    """One HTTPS connection to the zone, reused for every message of the pull."""

    def __init__(self, url: str, context: ssl.SSLContext, credentials: Credentials,
                 timeout: float, max_reply_bytes: int) -> None:
        parts = urlsplit(check_zone_url(url))
        self.url = url
        self.host = parts.hostname or ""
        self.port = parts.port or 443
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.context = context
        self.credentials = credentials
        self.timeout = timeout
        self.max_reply_bytes = max_reply_bytes
        self._conn: http.client.HTTPSConnection | None = None
        self._fresh = False  # this exchange opened the connection
        self._reading_body = False  # the status line and headers have arrived

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def exchange(self, body: bytes, what: str) -> bytes:
        """POST one message, return the reply's bytes; PullError on any failure."""
        try:
            return self._exchange(body, what)
        except PullError:
            self.close()
            raise
        except ssl.SSLCertVerificationError as exc:
            self.close()
            raise PullError(PullReason.UNTRUSTED_CERTIFICATE,
                            f"{self.url}: the zone's certificate is not trusted: "
                            f"{exc.verify_message or exc}") from None
        except TimeoutError:
            self.close()
            raise PullError(PullReason.TIMEOUT, f"{self.url}: no reply to {what} within "
                                                f"{self.timeout:g} s") from None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, http.client.IncompleteRead,
                http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                ConnectionAbortedError) as exc:
            self.close()
            raise self._cut(what, exc) from None
        except ssl.SSLError as exc:
            self.close()
            hint = (" (the zone requires a client certificate, or refused the one sent)"
                    if "CERTIFICATE" in str(exc.reason or "") or "UNKNOWN_CA" in
                    str(exc.reason or "") else "")
            raise PullError(PullReason.TLS_FAILED,
                            f"{self.url}: TLS failed during {what}{hint}: {exc}") from None
        except (ConnectionRefusedError, socket.gaierror, OSError) as exc:
            self.close()
            raise PullError(PullReason.ZONE_UNREACHABLE,
                            f"{self.url}: cannot reach the zone: {exc}") from None
        except http.client.HTTPException as exc:
            self.close()
            raise PullError(PullReason.PROTOCOL_ERROR,
                            f"{self.url}: not an HTTP reply to {what}: {exc}") from None

    def _cut(self, what: str, exc: BaseException) -> PullError:
        """A closed connection: on one just opened, before any reply, it is the TLS handshake's
        verdict (as a zone refuses a missing or unknown client certificate); else a cut."""
        if self._fresh and not self._reading_body:
            return PullError(PullReason.TLS_FAILED,
                             f"{self.url}: the zone closed the new TLS connection before "
                             f"answering {what} (zones do so when they require a client "
                             f"certificate, or refuse the one sent): {type(exc).__name__}: "
                             f"{exc}")
        return PullError(PullReason.CONNECTION_LOST,
                         f"{self.url}: the connection was cut during {what}: "
                         f"{type(exc).__name__}: {exc}")

    def _connection(self) -> http.client.HTTPSConnection:
        self._fresh = self._conn is None
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(self.host, self.port,
                                                     context=self.context,
                                                     timeout=self.timeout)
        return self._conn

    def _exchange(self, body: bytes, what: str) -> bytes:
        conn = self._connection()
        self._reading_body = False
        headers = {"Content-Type": CONTENT_TYPE, "Accept": "application/xml",
                   "Content-Length": str(len(body))}
        if self.credentials.basic is not None:
            headers["Authorization"] = self.credentials.basic
        conn.request("POST", self.target, body=body, headers=headers)
        response = conn.getresponse()
        self._reading_body = True
        if response.status in (401, 403):
            response.read(ENVELOPE_BYTES)
            raise PullError(PullReason.AUTHENTICATION_FAILED,
                            f"{self.url}: the zone refused the agent's credentials "
                            f"(HTTP {response.status} {response.reason})")
        if response.status != 200:
            raise PullError(PullReason.HTTP_ERROR,
                            f"{self.url}: HTTP {response.status} {response.reason} to {what}")
        length = response.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.max_reply_bytes:
            raise PullError(PullReason.REPLY_TOO_LARGE,
                            f"{self.url}: the reply to {what} announces {length} bytes, more "
                            f"than the {self.max_reply_bytes} allowed")
        data = response.read(self.max_reply_bytes + 1)
        if len(data) > self.max_reply_bytes:
            raise PullError(PullReason.REPLY_TOO_LARGE,
                            f"{self.url}: the reply to {what} is larger than the "
                            f"{self.max_reply_bytes} bytes allowed")
        if length is not None and length.isdigit() and len(data) < int(length):
            raise http.client.IncompleteRead(data, int(length) - len(data))
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        return data
