"""Why a SIF pull failed: the typed reasons of PullResult.reason, and the one exception."""

from __future__ import annotations

from enum import StrEnum


class PullReason(StrEnum):
    """PullResult.reason when a pull failed; nothing was published in every case."""

    ZONE_UNREACHABLE = "ZoneUnreachable"  # no connection: refused, no route, name unknown
    CONNECTION_LOST = "ConnectionLost"  # the zone closed the connection mid-reply
    TIMEOUT = "Timeout"  # one exchange took longer than --timeout-seconds
    UNTRUSTED_CERTIFICATE = "UntrustedCertificate"  # the zone's certificate fails --ca-file
    TLS_FAILED = "TlsFailed"  # any other TLS failure (protocol, a refused client certificate)
    AUTHENTICATION_FAILED = "AuthenticationFailed"  # HTTP 401/403: wrong credentials
    HTTP_ERROR = "HttpError"  # any other HTTP status than 200
    REPLY_TOO_LARGE = "ReplyTooLarge"  # a reply beyond the max buffer size
    MALFORMED_XML = "MalformedXml"  # not well-formed, too deep, or not UTF-8
    UNSAFE_XML = "UnsafeXml"  # a DTD, entity declaration or external reference (refused)
    PROTOCOL_ERROR = "ProtocolError"  # well-formed, but not the SIF message expected
    ACCESS_DENIED = "ZoneAccessDenied"  # SIF_Error category 3 or 4 (authentication, access)
    REGISTRATION_REFUSED = "RegistrationRefused"  # SIF_Error category 5
    REQUEST_REFUSED = "RequestRefused"  # SIF_Error category 8 (request and response)
    ZONE_ERROR = "ZoneError"  # a SIF_Error of any other category
    RECEIVER_SLEEPING = "ReceiverSleeping"  # SIF_Status 8
    RESPONSES_MISSING = "ResponsesMissing"  # the queue stayed empty past --wait-seconds
    BUSY = "Busy"  # another pull is running
    INTERRUPTED = "Interrupted"  # SIGTERM
    DISK_FULL = "DiskFull"
    FILE_SYSTEM_ERROR = "FileSystemError"


class PullError(Exception):
    """The pull stopped; reason says why in one word, message in a sentence."""

    def __init__(self, reason: PullReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
