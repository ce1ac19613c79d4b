"""PROXY protocol v2 headers: the gateway's hand-over of a client's real address and key.

Only version 2 (binary) is spoken: a fixed 16-byte start (the 12-byte signature, version and
command, family, length), TCP over IPv4 or IPv6, and type-length-value extensions of which one
is read: the client key's SHA256 fingerprint (CLIENT_KEY_TLV, in the range the specification
leaves to applications). Everything is bounded: the whole header is at most MAX_HEADER bytes,
and a reader gives up after a timeout (see sftpd.server.proxygate).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
FIXED_LENGTH: Final = 16
MAX_HEADER: Final = 512  # addresses (36 bytes at most) and one fingerprint fit many times over
VERSION_PROXY: Final = 0x21  # version 2, command PROXY (LOCAL, 0x20, carries no client)
FAMILY_TCP4: Final = 0x11
FAMILY_TCP6: Final = 0x21
CLIENT_KEY_TLV: Final = 0xE0  # PP2_TYPE_MIN_CUSTOM: the client key's "SHA256:..." fingerprint
MAX_FINGERPRINT: Final = 128


class ProxyHeaderError(ValueError):
    """A header that is not a PROXY v2 header for a TCP client, or is malformed."""


@dataclass(frozen=True)
class ProxiedClient:
    """What a trusted gateway says about the client it forwards."""

    address: str
    port: int
    via: str  # the gateway's own address, as this server saw it
    fingerprint: str | None


def encode(client: tuple[str, int], server: tuple[str, int], fingerprint: str) -> bytes:
    """A PROXY v2 header for a TCP client at `client` that connected to `server`."""
    source = ipaddress.ip_address(client[0])
    target = ipaddress.ip_address(server[0])
    if source.version != target.version:
        # A dual-stack listener may see an IPv4 client on an IPv6 socket: say both as IPv6.
        source = source if source.version == 6 else ipaddress.IPv6Address(f"::ffff:{source}")
        target = target if target.version == 6 else ipaddress.IPv6Address(f"::ffff:{target}")
    family = FAMILY_TCP4 if source.version == 4 else FAMILY_TCP6
    addresses = source.packed + target.packed + struct.pack("!HH", client[1], server[1])
    value = fingerprint.encode("ascii")
    if len(value) > MAX_FINGERPRINT:
        raise ValueError("fingerprint too long for the PROXY header")
    tlv = struct.pack("!BH", CLIENT_KEY_TLV, len(value)) + value
    body = addresses + tlv
    return SIGNATURE + struct.pack("!BBH", VERSION_PROXY, family, len(body)) + body


def parse(data: bytes, via: str) -> tuple[ProxiedClient, int] | None:
    """The client a complete header at the start of `data` names, and the header's length;
    None while more bytes are needed; ProxyHeaderError for anything else."""
    prefix = data[:len(SIGNATURE)]
    if not SIGNATURE.startswith(prefix):
        raise ProxyHeaderError("no PROXY v2 signature")
    if len(data) < FIXED_LENGTH:
        return None
    version, family, length = struct.unpack_from("!BBH", data, len(SIGNATURE))
    if version != VERSION_PROXY:
        raise ProxyHeaderError(f"not a version 2 PROXY command (0x{version:02x})")
    if FIXED_LENGTH + length > MAX_HEADER:
        raise ProxyHeaderError(f"header of {FIXED_LENGTH + length} bytes (limit {MAX_HEADER})")
    if len(data) < FIXED_LENGTH + length:
        return None
    body = data[FIXED_LENGTH:FIXED_LENGTH + length]
    if family not in (FAMILY_TCP4, FAMILY_TCP6):
        raise ProxyHeaderError(f"not TCP over IPv4 or IPv6 (family 0x{family:02x})")
    size = 4 if family == FAMILY_TCP4 else 16
    if length < 2 * size + 4:
        raise ProxyHeaderError("address block too short")
    client = ipaddress.ip_address(body[:size])
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        client = client.ipv4_mapped
    (port,) = struct.unpack_from("!H", body, 2 * size)
    fingerprint = _fingerprint(body[2 * size + 4:])
    return ProxiedClient(str(client), port, via, fingerprint), FIXED_LENGTH + length


def _fingerprint(tlvs: bytes) -> str | None:
    found: str | None = None
    offset = 0
    while offset < len(tlvs):
        if offset + 3 > len(tlvs):
            raise ProxyHeaderError("truncated TLV")
        kind, length = struct.unpack_from("!BH", tlvs, offset)
        value = tlvs[offset + 3:offset + 3 + length]
        if len(value) != length:
            raise ProxyHeaderError("truncated TLV")
        if kind == CLIENT_KEY_TLV:
            if found is not None or length > MAX_FINGERPRINT:
                raise ProxyHeaderError("bad client key TLV")
            try:
                found = value.decode("ascii")
            except UnicodeDecodeError:
                raise ProxyHeaderError("client key TLV is not ASCII") from None
            if not found.startswith("SHA256:") or not found.isprintable():
                raise ProxyHeaderError("client key TLV is not a SHA256 fingerprint")
        offset += 3 + length
    return found
