"""The gateway's routing data: JSON shard files the operator publishes and `sftpd gateway` reads.

Each District in shared mode is one entry, filed in shard `shard_of(login, shards)` of a fixed
number of shards (SHARDS), each shard one ConfigMap (so each file stays under the 1 MiB a
ConfigMap may hold) and all mounted as one projected volume, which the kubelet swaps
atomically. A file:

    {"format": "district-sftp/routes/v1", "shard": 7, "shards": 256, "entries": [
      {"login": "applegrove.org", "namespace": "districts", "name": "applegrove",
       "backend": "applegrove-sftp.districts.svc:22", "authorizedKeys": ["ssh-ed25519 AAAA..."],
       "allowedSources": ["203.0.113.0/24"], "suspended": false,
       "hostKeys": ["ssh-ed25519 AAAA..."]}]}

`decode` checks the structure and every bound and says what is wrong with which entry; it does
not judge the keys or addresses themselves (the gateway does, as sftpd serve does).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

FORMAT: Final = "district-sftp/routes/v1"
SHARDS: Final = 256
MAX_SHARD_BYTES: Final = 1 << 20  # a ConfigMap's limit
MAX_ENTRIES: Final = 4096  # per shard
MAX_KEYS: Final = 256  # spec.authorizedKeys (64) and the keys of authorizedKeysSecretRef
MAX_KEY_LINE: Final = 8192
MAX_SOURCES: Final = 256
MAX_NAME: Final = 253
MAX_BACKEND: Final = 300


def shard_of(login: str, shards: int = SHARDS) -> int:
    """The shard a login is filed in: its SHA-256, first four bytes, modulo the shard count."""
    return int.from_bytes(hashlib.sha256(login.encode("utf-8")).digest()[:4], "big") % shards


def shard_file(shard: int) -> str:
    return f"routes-{shard:03d}.json"


@dataclass(frozen=True)
class RouteEntry:
    """One District's routing entry, as published."""

    login: str
    namespace: str
    name: str
    backend: str  # host:port ([v6]:port for an IPv6 address)
    authorized_keys: tuple[str, ...] = ()
    allowed_sources: tuple[str, ...] = ()
    suspended: bool = False
    host_keys: tuple[str, ...] = ()  # the backend's public host keys; empty: not checked


class RoutesError(ValueError):
    """A shard that is not routing data of this format, or breaks one of its bounds."""


def encode(entries: list[RouteEntry], shard: int, shards: int = SHARDS) -> bytes:
    """One shard file; RoutesError if an entry is filed in the wrong shard or it is too big."""
    records = []
    for entry in entries:
        if shard_of(entry.login, shards) != shard:
            raise RoutesError(f"{entry.login!r} belongs in shard {shard_of(entry.login, shards)}")
        records.append({"login": entry.login, "namespace": entry.namespace, "name": entry.name,
                        "backend": entry.backend, "authorizedKeys": list(entry.authorized_keys),
                        "allowedSources": list(entry.allowed_sources),
                        "suspended": entry.suspended, "hostKeys": list(entry.host_keys)})
    data = json.dumps({"format": FORMAT, "shard": shard, "shards": shards, "entries": records},
                      separators=(",", ":"), sort_keys=True).encode("utf-8")
    if len(data) > MAX_SHARD_BYTES:
        raise RoutesError(f"shard {shard} is {len(data)} bytes (limit {MAX_SHARD_BYTES})")
    return data


def decode(data: bytes) -> list[RouteEntry]:
    """The entries of one shard file, or RoutesError saying which entry is wrong and why."""
    if len(data) > MAX_SHARD_BYTES:
        raise RoutesError(f"{len(data)} bytes (limit {MAX_SHARD_BYTES})")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RoutesError(f"not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise RoutesError(f"not {FORMAT} routing data")
    shards, shard = document.get("shards"), document.get("shard")
    if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= 65536 or \
            not isinstance(shard, int) or isinstance(shard, bool) or not 0 <= shard < shards:
        raise RoutesError("shard and shards must be whole numbers, 0 <= shard < shards <= 65536")
    raw = document.get("entries")
    if not isinstance(raw, list) or len(raw) > MAX_ENTRIES:
        raise RoutesError(f"entries must be a list of at most {MAX_ENTRIES}")
    entries = []
    for index, record in enumerate(raw):
        try:
            entry = _entry(record)
        except RoutesError as exc:
            login = record.get("login") if isinstance(record, dict) else None
            shown = f" ({str(login)[:MAX_NAME]!r})" if isinstance(login, str) else ""
            raise RoutesError(f"entry {index}{shown}: {exc}") from None
        if shard_of(entry.login, shards) != shard:
            raise RoutesError(f"entry {index} ({entry.login!r}): filed in shard {shard}, "
                              f"belongs in {shard_of(entry.login, shards)}")
        entries.append(entry)
    return entries


def _text(record: dict[str, Any], key: str, limit: int) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise RoutesError(f"{key} must be a non-empty string of at most {limit} characters")
    return value


def _texts(record: dict[str, Any], key: str, count: int, limit: int) -> tuple[str, ...]:
    value = record.get(key, [])
    if not isinstance(value, list) or len(value) > count or \
            not all(isinstance(v, str) and 0 < len(v) <= limit for v in value):
        raise RoutesError(f"{key} must be a list of at most {count} strings of at most "
                          f"{limit} characters")
    return tuple(value)


def _entry(record: object) -> RouteEntry:
    if not isinstance(record, dict):
        raise RoutesError("not an object")
    suspended = record.get("suspended", False)
    if not isinstance(suspended, bool):
        raise RoutesError("suspended must be true or false")
    return RouteEntry(
        login=_text(record, "login", MAX_NAME), namespace=_text(record, "namespace", MAX_NAME),
        name=_text(record, "name", MAX_NAME), backend=_text(record, "backend", MAX_BACKEND),
        authorized_keys=_texts(record, "authorizedKeys", MAX_KEYS, MAX_KEY_LINE),
        allowed_sources=_texts(record, "allowedSources", MAX_SOURCES, 64),
        suspended=suspended, host_keys=_texts(record, "hostKeys", 8, MAX_KEY_LINE))
