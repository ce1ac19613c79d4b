"""The Service districts connect to and the NetworkPolicy that admits only SSH and metrics."""

from __future__ import annotations

from typing import Any

from district_operator import names
from district_operator.builders.common import metadata
from district_operator.model import District


def service(district: District) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": district.service.type,
        "selector": names.server_selector(district.name),
        "ports": [{"name": names.PORT_NAME_SSH, "port": district.service.port,
                   "targetPort": names.PORT_NAME_SSH, "protocol": "TCP"}],
    }
    if district.service.type != "ClusterIP":
        # Keep the client's address: the server's audit log, ban list and allow-list need it.
        spec["externalTrafficPolicy"] = "Local"
    if district.service.type == "LoadBalancer" and district.allowed_source_ranges:
        spec["loadBalancerSourceRanges"] = list(district.allowed_source_ranges)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(district, names.service(district.name), names.COMPONENT_SERVER,
                             annotations=district.service.annotations),
        "spec": spec,
    }


def network_policy(district: District) -> dict[str, Any]:
    ssh_rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": names.SSH_PORT}]}
    if district.allowed_source_ranges:
        ssh_rule["from"] = [{"ipBlock": {"cidr": cidr}} for cidr in district.allowed_source_ranges]
    metrics_rule = {"ports": [{"protocol": "TCP", "port": names.METRICS_PORT}]}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(district, names.network_policy(district.name),
                             names.COMPONENT_NETWORK),
        "spec": {
            "podSelector": {"matchLabels": names.server_selector(district.name)},
            "policyTypes": ["Ingress"],
            "ingress": [ssh_rule, metrics_rule],
        },
    }
