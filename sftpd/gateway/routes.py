"""The routing table: the shard files of a directory, reread when they change, a bad shard
refused and its last good data kept, and a login listed twice refused rather than guessed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from district_contract import routes

from sftpd.events import EventLog
from sftpd.gateway.metrics import ROUTES, SHARDS_REFUSED, SHARDS_REFUSED_NOW
from sftpd.server.access import IPNetwork, parse_networks
from sftpd.server.fileidentity import FileIdentity, identity_of

SUFFIX: Final = ".json"


@dataclass(frozen=True)
class Route:
    """Where one login goes and who may use it."""

    login: str
    namespace: str
    name: str
    host: str
    port: int
    authorized_keys: tuple[str, ...]
    allowed_sources: tuple[IPNetwork, ...]
    suspended: bool
    host_keys: tuple[str, ...]

    @property
    def district(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Clash:
    """A login that more than one District claims: refused until only one does."""

    login: str
    districts: tuple[str, ...]


def split_backend(backend: str) -> tuple[str, int]:
    """host:port or [v6]:port; ValueError when it is neither."""
    host, sep, port_text = backend.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"backend {backend!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def route_of(entry: routes.RouteEntry) -> Route:
    host, port = split_backend(entry.backend)
    return Route(entry.login, entry.namespace, entry.name, host, port, entry.authorized_keys,
                 parse_networks(entry.allowed_sources, "allowedSources"), entry.suspended,
                 entry.host_keys)



@dataclass
class _Shard:
    identity: FileIdentity
    routes: tuple[Route, ...]


@dataclass
class RouteTable:
    """All shards of one directory (a ConfigMap volume: names are links into `..data`)."""

    directory: Path
    log: EventLog
    _shards: dict[str, _Shard] = field(default_factory=dict)
    _refused: dict[str, FileIdentity] = field(default_factory=dict)
    _index: dict[str, Route | Clash] = field(default_factory=dict)

    def lookup(self, login: str) -> Route | Clash | None:
        return self._index.get(login)

    @property
    def size(self) -> int:
        return len(self._index)

    def refresh(self) -> bool:
        """Reread the shards that changed; True when the table changed."""
        try:
            names = sorted(p.name for p in self.directory.iterdir()
                           if p.name.endswith(SUFFIX) and not p.name.startswith("."))
        except OSError as exc:
            self.log.event("routes.unreadable", path=str(self.directory), error=str(exc))
            return False
        changed = False
        for gone in set(self._shards) - set(names):
            del self._shards[gone]
            self.log.event("routes.shard_removed", file=gone)
            changed = True
        for name in names:
            changed |= self._load(name)
        for gone in set(self._refused) - set(names):
            del self._refused[gone]
        SHARDS_REFUSED_NOW.set(len(self._refused))
        if changed:
            self._rebuild()
        return changed

    def _load(self, name: str) -> bool:
        identity = identity_of(self.directory / name)
        known = self._shards.get(name)
        if identity is None or (known is not None and known.identity == identity) or \
                self._refused.get(name) == identity:
            return False
        try:
            with open(identity.real_path, "rb") as f:
                data = f.read(routes.MAX_SHARD_BYTES + 1)
            entries = [route_of(e) for e in routes.decode(data)]
        except (OSError, ValueError) as exc:
            # The last good data of this shard stays in force; the change is not retried
            # until the file changes again.
            self._refused[name] = identity
            SHARDS_REFUSED.inc()
            self.log.event("routes.shard_refused", file=name, error=str(exc),
                           kept=0 if known is None else len(known.routes))
            return False
        self._refused.pop(name, None)
        self._shards[name] = _Shard(identity, tuple(entries))
        return True

    def _rebuild(self) -> None:
        claims: dict[str, list[Route]] = {}
        for shard in self._shards.values():
            for route in shard.routes:
                claims.setdefault(route.login, []).append(route)
        index: dict[str, Route | Clash] = {}
        for login, claimed in claims.items():
            if len(claimed) == 1:
                index[login] = claimed[0]
            else:
                clash = Clash(login, tuple(sorted(r.district for r in claimed)))
                index[login] = clash
                if self._index.get(login) != clash:
                    self.log.event("routes.login_clash", login=login,
                                   districts=list(clash.districts))
        self._index = index
        ROUTES.set(len(index))
        self.log.event("routes.loaded", files=len(self._shards), logins=len(index))

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the directory's files (a stat each) every `interval` seconds."""
        while True:
            await asyncio.sleep(interval)
            self.refresh()
