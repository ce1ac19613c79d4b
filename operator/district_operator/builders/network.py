"""The Service districts connect to and the NetworkPolicy that admits only SSH and metrics."""

from __future__ import annotations

from typing import Any

from district_operator import names
from district_operator.builders.common import SharedMode, metadata
from district_operator.model import District

# The label the API server puts on every namespace: how a policy names one namespace.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def service(district: District, shared: SharedMode | None = None) -> dict[str, Any]:
    """Dedicated: the Service districts connect to (spec.service). Shared: a ClusterIP only the
    gateway reaches; spec.service.type and .annotations are then not used (no load balancer)."""
    service_type = "ClusterIP" if shared is not None else district.service.type
    spec: dict[str, Any] = {
        "type": service_type,
        "selector": names.server_selector(district.name),
        "ports": [{"name": names.PORT_NAME_SSH, "port": district.service.port,
                   "targetPort": names.PORT_NAME_SSH, "protocol": "TCP"}],
    }
    if service_type != "ClusterIP":
        # Keep the client's address: the server's audit log, ban list and allow-list need it.
        spec["externalTrafficPolicy"] = "Local"
    if service_type == "LoadBalancer" and district.allowed_source_ranges:
        spec["loadBalancerSourceRanges"] = list(district.allowed_source_ranges)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(district, names.service(district.name), names.COMPONENT_SERVER,
                             annotations=None if shared is not None
                             else district.service.annotations),
        "spec": spec,
    }


def _ssh_rule(district: District, shared: SharedMode | None) -> dict[str, Any] | None:
    """Who may reach the SSH port: the allow-list (dedicated), the gateway's pods (shared), or
    nobody (shared with no gateway installed: an ingress rule without `from` admits all)."""
    ssh_rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": names.SSH_PORT}]}
    if shared is not None:
        if shared.gateway_namespace is None:
            return None
        # One peer with both selectors: the gateway's pods in the gateway's namespace only.
        ssh_rule["from"] = [{
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL:
                                                  shared.gateway_namespace}},
            "podSelector": {"matchLabels": names.gateway_selector(shared.gateway_name)}}]
    elif district.allowed_source_ranges:
        ssh_rule["from"] = [{"ipBlock": {"cidr": cidr}} for cidr in district.allowed_source_ranges]
    return ssh_rule


def network_policy(district: District, shared: SharedMode | None = None) -> dict[str, Any]:
    ssh_rule = _ssh_rule(district, shared)
    metrics_rule = {"ports": [{"protocol": "TCP", "port": names.METRICS_PORT}]}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(district, names.network_policy(district.name),
                             names.COMPONENT_NETWORK),
        "spec": {
            "podSelector": {"matchLabels": names.server_selector(district.name)},
            "policyTypes": ["Ingress"],
            "ingress": [rule for rule in (ssh_rule, metrics_rule) if rule is not None],
        },
    }
