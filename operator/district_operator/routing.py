"""The gateway's routing data, computed purely: a District's entry, and a shard from its claims."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from district_contract import routes

from district_operator import keys, names
from district_operator.conditions import Reason
from district_operator.model import District, ServiceMode

DistrictKey = tuple[str, str]  # (namespace, name)
# Bytes of a shard file around its entries, and between two entries (routes.encode's layout).
_SEPARATOR: Final = 1


def service_mode(district: District, default: ServiceMode) -> ServiceMode:
    """spec.service.mode, or the operator's default when the District does not say."""
    return district.service.mode or default


def backend(district: District, cluster_ip: str | None) -> str:
    """Where the gateway reaches the District's server: its Service's ClusterIP when known
    (no cluster DNS needed), else the Service's DNS name; the Service's port either way."""
    port = district.service.port
    if cluster_ip and cluster_ip != "None":
        try:
            address = ipaddress.ip_address(cluster_ip)
        except ValueError:
            address = None
        if address is not None:
            return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    return f"{names.service(district.name)}.{district.namespace}.svc:{port}"


def route_entry(district: District, accepted: Sequence[keys.AuthorizedKey],
                host_keys: Iterable[keys.HostKey], cluster_ip: str | None) -> routes.RouteEntry:
    """The District's routing entry: the key lines its server reads (options kept, so from=,
    expiry and read-only are judged at the gateway as at the server), its allow-list and
    suspension, and its host keys, current and next, so a rotation never breaks the gateway."""
    return routes.RouteEntry(
        login=district.login, namespace=district.namespace, name=district.name,
        backend=backend(district, cluster_ip),
        authorized_keys=tuple(key.line for key in accepted),
        allowed_sources=tuple(district.allowed_source_ranges), suspended=district.suspend,
        host_keys=tuple(dict.fromkeys(key.public_line.strip() for key in host_keys)))


def entry_problem(entry: routes.RouteEntry) -> str | None:
    """Why the gateway would refuse this entry (and with it its whole shard), or None: the
    contract's own decoder judges a one-entry shard, so the bounds are exactly the gateway's."""
    shard = routes.shard_of(entry.login)
    try:
        routes.decode(routes.encode([entry], shard))
    except routes.RoutesError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Claim:
    """One shared-mode District's entry in the table, with its place when a shard is full:
    older Districts keep theirs (creationTimestamp, then namespace and name)."""

    entry: routes.RouteEntry
    created_at: str = ""

    @property
    def key(self) -> DistrictKey:
        return (self.entry.namespace, self.entry.name)

    @property
    def priority(self) -> tuple[str, str, str]:
        return (self.created_at or "~", self.entry.namespace, self.entry.name)


@dataclass(frozen=True)
class Verdict:
    """What publishing one District came to: Routed's reason and message."""

    reason: Reason
    message: str

    @property
    def routed(self) -> bool:
        return self.reason is Reason.PUBLISHED


@dataclass(frozen=True)
class ShardPlan:
    """One shard as it should be written, and the verdict for every District that claimed it."""

    shard: int
    data: bytes
    verdicts: Mapping[DistrictKey, Verdict]
    entries: int


def _entry_size(entry: routes.RouteEntry, shard: int, empty: int) -> int:
    """The bytes one entry adds to its shard file (routes.encode's exact layout), `empty`
    being the size of the shard file with no entry."""
    return len(routes.encode([entry], shard)) - empty


def _district(key: DistrictKey) -> str:
    return f"{key[0]}/{key[1]}"


def plan_shard(shard: int, claims: Iterable[Claim]) -> ShardPlan:
    """The shard file for these claims (all filed in `shard`), and each one's verdict.

    A login claimed by two Districts: both are published, so the gateway itself refuses the
    login (`login_clash`) and says why in its log, and both get LoginClash naming the other;
    the same login always lands in one shard, so this is where every clash shows. A shard
    that would pass a ConfigMap's 1 MiB keeps the oldest Districts that fit; the others get
    ShardFull and are left out, the rest of the shard is still written.
    """
    ordered = sorted(claims, key=lambda c: c.priority)
    by_login: dict[str, list[DistrictKey]] = {}
    for claim in ordered:
        by_login.setdefault(claim.entry.login, []).append(claim.key)
    empty = len(routes.encode([], shard))
    size = empty
    kept: list[routes.RouteEntry] = []
    verdicts: dict[DistrictKey, Verdict] = {}
    for claim in ordered:
        added = _entry_size(claim.entry, shard, empty) + (_SEPARATOR if kept else 0)
        if size + added > routes.MAX_SHARD_BYTES:
            verdicts[claim.key] = Verdict(
                Reason.SHARD_FULL,
                f"routing shard {shard} would pass a ConfigMap's {routes.MAX_SHARD_BYTES} "
                f"bytes with this District's entry ({added} bytes; {size} in use): it is left "
                "out, the Districts already in the shard keep their place; fewer or shorter "
                "keys make it fit")
            continue
        size += added
        kept.append(claim.entry)
        others = [_district(k) for k in by_login[claim.entry.login] if k != claim.key]
        if others:
            verdicts[claim.key] = Verdict(
                Reason.LOGIN_CLASH,
                f"login {claim.entry.login!r} is also claimed by District "
                f"{', '.join(others)}: the gateway refuses it for both until one changes its "
                "spec.login or leaves shared mode")
        else:
            verdicts[claim.key] = Verdict(Reason.PUBLISHED,
                                          f"login {claim.entry.login!r} is in routing shard "
                                          f"{shard}; the gateway routes it to "
                                          f"{claim.entry.backend}")
    kept.sort(key=lambda e: (e.login, e.namespace, e.name))
    return ShardPlan(shard, routes.encode(kept, shard), verdicts, len(kept))


def claims_of_shard_data(data: bytes, created: Mapping[DistrictKey, str]) -> list[Claim]:
    """The claims a shard file already holds (an operator's restart starts from them)."""
    return [Claim(entry, created.get((entry.namespace, entry.name), ""))
            for entry in routes.decode(data)]


def revision(shards: Mapping[int, bytes]) -> str:
    """A short digest of every shard's bytes: the gateway pods' annotation value."""
    digest = hashlib.sha256()
    for shard in sorted(shards):
        digest.update(f"{shard}:{len(shards[shard])}:".encode())
        digest.update(shards[shard])
    return digest.hexdigest()[:16]


def configmap(gateway: str, namespace: str, shard: int, data: bytes) -> dict[str, Any]:
    """The ConfigMap one shard is published in."""
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": names.gateway_routes_configmap(gateway, shard),
                     "namespace": namespace,
                     "labels": {names.LABEL_NAME: names.APP_NAME,
                                names.LABEL_INSTANCE: gateway,
                                names.LABEL_COMPONENT: names.COMPONENT_ROUTES,
                                names.LABEL_MANAGED_BY: names.FIELD_MANAGER,
                                names.LABEL_PART_OF: names.APP_NAME}},
        "data": {routes.shard_file(shard): data.decode("utf-8")},
    }


def routes_selector(gateway: str) -> str:
    """The label selector of one gateway's routing ConfigMaps."""
    return (f"{names.LABEL_INSTANCE}={gateway},"
            f"{names.LABEL_COMPONENT}={names.COMPONENT_ROUTES}")


def shard_of_configmap(gateway: str, name: str) -> int | None:
    prefix = names.gateway_routes_configmap(gateway, 0)[:-3]
    tail = name[len(prefix):] if name.startswith(prefix) else ""
    return int(tail) if tail.isdigit() and len(tail) == 3 else None


def configmap_data(body: Mapping[str, Any], shard: int) -> bytes | None:
    text = (body.get("data") or {}).get(routes.shard_file(shard))
    return text.encode("utf-8") if isinstance(text, str) else None


def gateway_not_installed(district: District) -> Verdict:
    """A shared-mode District with no gateway to publish it to: no shard is involved."""
    return Verdict(Reason.GATEWAY_NOT_INSTALLED,
                   "spec.service.mode is shared but this operator was given no gateway "
                   f"(--gateway-namespace): nobody routes the login {district.login!r}")


def invalid(problem: str) -> Verdict:
    return Verdict(Reason.ROUTE_INVALID, f"the routing entry would make the gateway refuse "
                                         f"its whole shard, so it is left out: {problem}")

