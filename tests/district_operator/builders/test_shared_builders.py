"""Pure builder tests for spec.service.mode shared: a District behind the shared SSH gateway."""

from __future__ import annotations

import base64
from typing import Any

from district_operator import builders, keys, names

from tests.district_operator.builders.test_builders import INPUTS, district

GATEWAY_KEY = keys.generate_gateway_key()[names.GATEWAY_PUBLIC_KEY_FILE]
SHARED = builders.SharedMode(gateway_namespace="sftp-gateway", gateway_name="gw",
                             proxy_from=("10.244.0.0/16", "fd00::/64"),
                             gateway_public_key=GATEWAY_KEY)
ALLOW = ["203.0.113.0/24"]


def children(shared: builders.SharedMode | None, **spec: Any) -> dict[str, dict[str, Any]]:
    built = builders.desired_children(district(**spec), INPUTS, "ssh-ed25519 AAAA a\n", shared)
    return {c["kind"]: c for c in built if c["kind"] in (
        "Service", "NetworkPolicy", "Deployment", "Secret")}


def server_env(child: dict[str, Any]) -> dict[str, str]:
    (container,) = child["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def test_shared_service_is_a_cluster_ip_without_load_balancer_settings() -> None:
    spec = {"service": {"type": "LoadBalancer", "port": 2022,
                        "annotations": {"lb.example/internal": "true"}},
            "allowedSourceRanges": ALLOW}
    dedicated = children(None, **spec)["Service"]
    assert dedicated["spec"]["type"] == "LoadBalancer"
    assert dedicated["spec"]["loadBalancerSourceRanges"] == ALLOW
    shared = children(SHARED, **spec)["Service"]
    assert shared["spec"] == {
        "type": "ClusterIP", "selector": names.server_selector("lincoln"),
        "ports": [{"name": "ssh", "port": 2022, "targetPort": "ssh", "protocol": "TCP"}]}
    assert "annotations" not in shared["metadata"]


def test_shared_server_takes_the_gateway_header_and_key_from_the_keys_volume() -> None:
    env = server_env(children(SHARED, allowedSourceRanges=ALLOW)["Deployment"])
    assert env["SFTPD_PROXY_FROM"] == "10.244.0.0/16,fd00::/64"
    assert env["SFTPD_GATEWAY_KEY"] == f"{names.AUTHORIZED_KEYS_DIR}/gateway_key.pub"
    # The allow-list is still the server's: it judges the real client the header names.
    assert env["SFTPD_ALLOWED_SOURCE"] == ALLOW[0]
    dedicated = server_env(children(None)["Deployment"])
    assert "SFTPD_PROXY_FROM" not in dedicated and "SFTPD_GATEWAY_KEY" not in dedicated


def test_shared_authorized_keys_secret_carries_the_gateway_public_key() -> None:
    data = children(SHARED)["Secret"]["data"]
    assert base64.b64decode(data["authorized_keys"]) == b"ssh-ed25519 AAAA a\n"
    assert base64.b64decode(data[names.GATEWAY_PUBLIC_KEY_FILE]).decode() == GATEWAY_KEY
    assert names.GATEWAY_PUBLIC_KEY_FILE not in children(None)["Secret"]["data"]


def test_shared_network_policy_admits_ssh_from_the_gateway_pods_only() -> None:
    policy = children(SHARED, allowedSourceRanges=ALLOW)["NetworkPolicy"]
    ssh, metrics = policy["spec"]["ingress"]
    assert ssh == {"ports": [{"protocol": "TCP", "port": names.SSH_PORT}], "from": [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "sftp-gateway"}},
        "podSelector": {"matchLabels": names.gateway_selector("gw")}}]}
    assert metrics == {"ports": [{"protocol": "TCP", "port": names.METRICS_PORT}]}


def test_shared_without_a_gateway_is_reachable_by_nobody_and_still_builds() -> None:
    built = children(builders.SharedMode(), allowedSourceRanges=ALLOW)
    assert built["Service"]["spec"]["type"] == "ClusterIP"
    # No SSH rule at all (a rule without `from` would admit everyone): metrics only.
    assert built["NetworkPolicy"]["spec"]["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": names.METRICS_PORT}]}]
    env = server_env(built["Deployment"])
    assert "SFTPD_PROXY_FROM" not in env and "SFTPD_GATEWAY_KEY" not in env
    assert set(built["Secret"]["data"]) == {"authorized_keys"}


def test_gateway_secrets_are_labelled_for_the_gateway_and_owned_by_nobody() -> None:
    from district_operator.builders.gatewaysecrets import gateway_key_secret
    secret = gateway_key_secret("sftp-gateway", "gw", keys.generate_gateway_key())
    meta = secret["metadata"]
    assert meta["name"] == "gw-key" and meta["namespace"] == "sftp-gateway"
    assert meta["labels"][names.LABEL_COMPONENT] == "gateway"
    assert "ownerReferences" not in meta
    private = base64.b64decode(secret["data"][names.GATEWAY_PRIVATE_KEY_FILE]).decode()
    assert "OPENSSH PRIVATE KEY" in private
    public = base64.b64decode(secret["data"][names.GATEWAY_PUBLIC_KEY_FILE]).decode()
    assert keys.parse_authorized_key(public).key_type == "ssh-ed25519"
