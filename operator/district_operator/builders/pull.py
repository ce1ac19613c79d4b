"""The SIF pull's pieces (integration.mode pull): its settings, Secret volumes, egress policy."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from district_contract import commands
from district_contract.commands import env_var

from district_operator import names
from district_operator.builders.common import metadata
from district_operator.model import District, InvalidDistrictError, SifPull

# Secret files readable by their owner only (fsGroup adds group read for uid 10001's group).
SECRET_MODE = 0o400
HTTPS_PORT = 443
DNS_PORT = 53


def zone_endpoint(sif: SifPull) -> tuple[str, int]:
    """The zone server's host (a name or an address) and TCP port, from its https URL."""
    try:
        parts = urlsplit(sif.zone_url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise InvalidDistrictError(f"spec.integration.sif.zoneURL: {exc}") from exc
    if parts.scheme != "https" or not host:
        raise InvalidDistrictError("spec.integration.sif.zoneURL must be an https URL "
                                   "with a host")
    return host, port or HTTPS_PORT


def pull_settings(sif: SifPull) -> dict[str, str]:
    """The pull container's SFTPD_* variables; the Secrets arrive as mounted files."""
    values = {
        env_var(commands.ZONE_URL): sif.zone_url,
        env_var(commands.SOURCE_ID): sif.source_id,
        env_var(commands.OBJECTS): ",".join(sif.objects),
        env_var(commands.MAX_BUFFER_SIZE): str(sif.max_buffer_size),
        env_var(commands.SIF_AUTH_DIR): names.SIF_AUTH_DIR,
    }
    if sif.ca is not None:
        values[env_var(commands.SIF_CA_FILE)] = f"{names.SIF_CA_DIR}/{names.SIF_CA_FILE}"
    return values


def pull_volumes(sif: SifPull) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The credentials and the zone's CA as read-only Secret volumes, and their mounts."""
    volumes: list[dict[str, Any]] = [
        {"name": names.VOLUME_SIF_AUTH,
         "secret": {"secretName": sif.auth_secret, "defaultMode": SECRET_MODE}}]
    mounts: list[dict[str, Any]] = [
        {"name": names.VOLUME_SIF_AUTH, "mountPath": names.SIF_AUTH_DIR, "readOnly": True}]
    if sif.ca is not None:
        # Only the named key, under the file name the contract gives it.
        volumes.append({"name": names.VOLUME_SIF_CA, "secret": {
            "secretName": sif.ca.name, "defaultMode": SECRET_MODE,
            "items": [{"key": sif.ca.key, "path": names.SIF_CA_FILE}]}})
        mounts.append({"name": names.VOLUME_SIF_CA, "mountPath": names.SIF_CA_DIR,
                       "readOnly": True})
    return volumes, mounts


def _zone_peer(host: str) -> list[dict[str, Any]]:
    """The zone as a NetworkPolicy peer: its address, or any address when it is a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # A NetworkPolicy holds addresses, not names: only the port can be pinned
        # (docs/operator.md says what that allows).
        return []
    return [{"ipBlock": {"cidr": f"{address}/{address.max_prefixlen}"}}]


def pull_network_policy(district: District) -> dict[str, Any] | None:
    """Egress of the pull's pods: the zone's port (and address, if the URL gives one) and DNS."""
    sif = district.integration.pull
    if sif is None:
        return None
    host, port = zone_endpoint(sif)
    zone_rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port}]}
    peers = _zone_peer(host)
    if peers:
        zone_rule["to"] = peers
    dns_rule = {"ports": [{"protocol": "UDP", "port": DNS_PORT},
                          {"protocol": "TCP", "port": DNS_PORT}]}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(district, names.pull_network_policy(district.name),
                             names.JOB_PULL),
        "spec": {
            "podSelector": {"matchLabels": names.job_selector(district.name, names.JOB_PULL)},
            # Egress only: nothing connects to the pull, and no Ingress rule means none may.
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [zone_rule, dns_rule],
        },
    }
