"""spec.service.mode shared on the real control plane: a District's children behind the shared
gateway, the gateway's two Secrets (created once, rotated with overlap, never regenerated), and
the status showing the gateway's address and host keys, refreshed when they change.

The cluster has no cloud load balancer controller: the tests write the gateway Service's
`status.loadBalancer` themselves, as that controller would (a stand-in for the cloud)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from district_operator import api, keys, names

from tests.district_operator.conftest import (
    OperatorProcess,
    apply_yaml,
    district_manifest,
    make_namespace,
    settled,
    wait_for,
)

pytestmark = pytest.mark.cluster
NS = "shared-e2e"
GATEWAY_NS = "shared-e2e-gateway"
GATEWAY = "gw"
PROXY_FROM = "10.244.0.0/16"
ALLOW = ["203.0.113.0/24"]
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq1JrjvVvDK9Ys3K+o3lT2S9mD1rq8LcmPwbeuNzg0B "
       "it@applegrove.example")
GATEWAY_ARGS = ("--gateway-namespace", GATEWAY_NS, "--gateway-name", GATEWAY,
                "--gateway-proxy-from", PROXY_FROM)


@pytest.fixture(scope="module")
def namespaces(crd: Any) -> Iterator[None]:
    make_namespace(crd, NS)
    make_namespace(crd, GATEWAY_NS)
    yield
    for namespace in (NS, GATEWAY_NS):
        crd.kubectl("delete", "namespace", namespace, "--wait=false")


@pytest.fixture(scope="module")
def operator(namespaces: None, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    process = OperatorProcess(NS, tmp_path_factory.mktemp("operator") / "operator.log",
                              *GATEWAY_ARGS)
    yield process
    process.stop()


def secret_files(kube: api.Kube, namespace: str, name: str) -> dict[str, str] | None:
    body = kube.get("Secret", namespace, name)
    if body is None:
        return None
    return {k: base64.b64decode(v).decode() for k, v in (body.get("data") or {}).items()}


def gateway_secrets(kube: api.Kube, timeout: float = 30
                    ) -> tuple[dict[str, str], dict[str, str]]:
    def both() -> tuple[dict[str, str], dict[str, str]] | None:
        pair = secret_files(kube, GATEWAY_NS, names.gateway_key_secret(GATEWAY))
        host = secret_files(kube, GATEWAY_NS, names.gateway_host_keys_secret(GATEWAY))
        return (pair, host) if pair and host else None
    return wait_for(both, timeout=timeout,  # type: ignore[no-any-return]
                    what="the gateway's two Secrets")


def publish_gateway_address(crd: Any, kube: api.Kube, address: str) -> None:
    """The gateway Service (the chart's), its load balancer address set as a cloud would."""
    apply_yaml(crd, {"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": names.gateway_service(GATEWAY),
                                  "namespace": GATEWAY_NS},
                     "spec": {"type": "LoadBalancer", "selector": names.gateway_selector(GATEWAY),
                              "ports": [{"name": "ssh", "port": 22, "targetPort": 2222}]}})
    crd.kubectl("-n", GATEWAY_NS, "patch", "service", names.gateway_service(GATEWAY),
                "--subresource=status", "--type=merge", "-p", json.dumps(
                    {"status": {"loadBalancer": {"ingress": [{"ip": address}]}}}))


def fingerprints(files: dict[str, str], which: dict[str, str] = names.HOST_KEY_FILES
                 ) -> list[str]:
    return [k.fingerprint for k in keys.describe_host_keys(files, which)]


def status_of(kube: api.Kube, name: str) -> dict[str, Any]:
    body = kube.get(names.KIND, NS, name)
    return dict((body or {}).get("status") or {})


def env_of(kube: api.Kube, name: str) -> dict[str, str]:
    deployment = kube.get("Deployment", NS, names.deployment(name))
    assert deployment is not None
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


def test_gateway_secrets_are_created_at_start(kube: api.Kube,
                                              operator: OperatorProcess) -> None:
    # Generous: on a control plane just started, the first requests wait for its storage.
    pair, host = gateway_secrets(kube, timeout=120)
    public = keys.parse_authorized_key(pair[names.GATEWAY_PUBLIC_KEY_FILE])
    assert public.key_type == "ssh-ed25519"
    assert "OPENSSH PRIVATE KEY" in pair[names.GATEWAY_PRIVATE_KEY_FILE]
    # The layout of a District's host-key Secret: both types, private and public.
    assert set(host) == {f for f in names.HOST_KEY_FILES.values()} | {
        f + ".pub" for f in names.HOST_KEY_FILES.values()}
    for name in (names.gateway_key_secret(GATEWAY), names.gateway_host_keys_secret(GATEWAY)):
        body = kube.get("Secret", GATEWAY_NS, name)
        assert body is not None
        assert body["metadata"]["labels"][names.LABEL_COMPONENT] == names.COMPONENT_GATEWAY
        assert "ownerReferences" not in body["metadata"]


def test_shared_district_is_reached_through_the_gateway_only(
        crd: Any, kube: api.Kube, operator: OperatorProcess) -> None:
    pair, host = gateway_secrets(kube)
    publish_gateway_address(crd, kube, "198.51.100.20")
    apply_yaml(crd, district_manifest(
        "applegrove", NS, login="applegrove.example", authorizedKeys=[KEY],
        allowedSourceRanges=ALLOW,
        service={"mode": "shared", "type": "LoadBalancer",
                 "annotations": {"lb.example/internal": "true"}}))
    wait_for(lambda: settled(kube, NS, "applegrove"), what="applegrove reconciled")
    service = kube.get("Service", NS, names.service("applegrove"))
    assert service is not None
    assert service["spec"]["type"] == "ClusterIP"
    assert "lb.example/internal" not in (service["metadata"].get("annotations") or {})
    assert "loadBalancerSourceRanges" not in service["spec"]
    env = env_of(kube, "applegrove")
    assert env["SFTPD_PROXY_FROM"] == PROXY_FROM
    assert env["SFTPD_GATEWAY_KEY"] == f"{names.AUTHORIZED_KEYS_DIR}/gateway_key.pub"
    files = secret_files(kube, NS, names.authorized_keys_secret("applegrove"))
    assert files is not None
    assert files[names.GATEWAY_PUBLIC_KEY_FILE].strip() == \
        pair[names.GATEWAY_PUBLIC_KEY_FILE].strip()
    policy = kube.get("NetworkPolicy", NS, names.network_policy("applegrove"))
    assert policy is not None
    ssh, _metrics = policy["spec"]["ingress"]
    assert ssh["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": GATEWAY_NS}},
        "podSelector": {"matchLabels": names.gateway_selector(GATEWAY)}}]

    def published() -> dict[str, Any] | None:
        st = status_of(kube, "applegrove")
        return st if st.get("endpoint") else None
    st = wait_for(published, what="the gateway's address in applegrove's status")
    assert st["endpoint"] == {"host": "198.51.100.20", "port": 22,
                              "user": "applegrove.example", "mode": "shared"}
    assert [k["fingerprint"] for k in st["hostKeys"]] == fingerprints(host)
    own = secret_files(kube, NS, names.host_keys_secret("applegrove"))
    assert own is not None and not set(fingerprints(own)) & set(fingerprints(host))
    assert st["knownHosts"].splitlines()[0].startswith("198.51.100.20 ssh-ed25519 ")

    # An address that changes later (a new load balancer) reaches the status by itself.
    publish_gateway_address(crd, kube, "198.51.100.21")
    wait_for(lambda: (status_of(kube, "applegrove").get("endpoint") or {}).get("host")
             == "198.51.100.21", what="the new gateway address in the status")
    assert status_of(kube, "applegrove")["knownHosts"].startswith("198.51.100.21 ")


def test_switching_modes_updates_everything_in_place(crd: Any, kube: api.Kube,
                                                      operator: OperatorProcess) -> None:
    gateway_secrets(kube)
    spec: dict[str, Any] = {"login": "birchwood.example", "authorizedKeys": [KEY],
                            "allowedSourceRanges": ALLOW,
                            "service": {"type": "LoadBalancer", "port": 2022}}
    apply_yaml(crd, district_manifest("birchwood", NS, **spec))
    wait_for(lambda: settled(kube, NS, "birchwood"), what="birchwood reconciled")
    first = kube.get("Service", NS, names.service("birchwood"))
    assert first is not None and first["spec"]["type"] == "LoadBalancer"
    uid = first["metadata"]["uid"]

    for mode, service_type in (("shared", "ClusterIP"), ("dedicated", "LoadBalancer"),
                               ("shared", "ClusterIP")):
        spec["service"] = {**spec["service"], "mode": mode}
        apply_yaml(crd, district_manifest("birchwood", NS, **spec))
        wait_for(lambda t=service_type: (kube.get("Service", NS, names.service("birchwood"))
                                         or {}).get("spec", {}).get("type") == t,
                 what=f"birchwood's Service to become {service_type}")
        wait_for(lambda: settled(kube, NS, "birchwood"), what="birchwood reconciled")
        service = kube.get("Service", NS, names.service("birchwood"))
        assert service is not None and service["metadata"]["uid"] == uid  # updated, not new
        env = env_of(kube, "birchwood")
        files = secret_files(kube, NS, names.authorized_keys_secret("birchwood")) or {}
        policy = kube.get("NetworkPolicy", NS, names.network_policy("birchwood"))
        assert policy is not None
        sources = policy["spec"]["ingress"][0]["from"]
        if mode == "shared":
            assert "SFTPD_PROXY_FROM" in env and names.GATEWAY_PUBLIC_KEY_FILE in files
            assert "namespaceSelector" in sources[0]
            assert not any(p.get("nodePort") for p in service["spec"]["ports"])
        else:
            assert "SFTPD_PROXY_FROM" not in env and names.GATEWAY_PUBLIC_KEY_FILE not in files
            assert sources == [{"ipBlock": {"cidr": ALLOW[0]}}]
            assert service["spec"]["loadBalancerSourceRanges"] == ALLOW
            assert status_of(kube, "birchwood").get("endpoint") is None  # no cloud LB here


def test_a_new_gateway_key_reaches_every_shared_district(crd: Any, kube: api.Kube,
                                                          operator: OperatorProcess) -> None:
    pair, _ = gateway_secrets(kube)
    apply_yaml(crd, district_manifest("cedar", NS, login="cedar.example", authorizedKeys=[KEY],
                                      service={"mode": "shared"}))
    wait_for(lambda: (secret_files(kube, NS, names.authorized_keys_secret("cedar")) or {})
             .get(names.GATEWAY_PUBLIC_KEY_FILE), what="cedar's copy of the gateway key")
    # The key pair Secret lost (or deliberately deleted to replace the key): a new pair, and
    # every shared District's Secret follows, with no change to the District itself.
    kube.delete("Secret", GATEWAY_NS, names.gateway_key_secret(GATEWAY))
    new_pair = wait_for(lambda: (lambda f: f if f and f != pair else None)(secret_files(
        kube, GATEWAY_NS, names.gateway_key_secret(GATEWAY))), what="a new gateway key pair")
    new_public = new_pair[names.GATEWAY_PUBLIC_KEY_FILE].strip()
    assert new_public != pair[names.GATEWAY_PUBLIC_KEY_FILE].strip()
    wait_for(lambda: (secret_files(kube, NS, names.authorized_keys_secret("cedar")) or {})
             .get(names.GATEWAY_PUBLIC_KEY_FILE, "").strip() == new_public,
             what="cedar's copy of the new gateway key")


def test_gateway_host_keys_rotate_with_overlap_and_are_never_regenerated(
        crd: Any, kube: api.Kube, operator: OperatorProcess,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    pair, host = gateway_secrets(kube)
    publish_gateway_address(crd, kube, "198.51.100.30")
    apply_yaml(crd, district_manifest("dogwood", NS, login="dogwood.example",
                                      authorizedKeys=[KEY], service={"mode": "shared"}))
    wait_for(lambda: status_of(kube, "dogwood").get("knownHosts"), what="dogwood's knownHosts")
    operator.stop()
    # A restart keeps both Secrets as they are; rotation 1 starts with a short overlap.
    rotating = OperatorProcess(NS, tmp_path_factory.mktemp("rotating") / "operator.log",
                               *GATEWAY_ARGS, "--gateway-host-keys-rotate", "1",
                               "--gateway-host-keys-overlap", "8s")
    try:
        current = fingerprints(host)

        def announced() -> dict[str, Any] | None:
            st = status_of(kube, "dogwood")
            return st if st.get("nextHostKeys") else None
        st = wait_for(announced, what="the gateway's next host keys in dogwood's status")
        during = secret_files(kube, GATEWAY_NS, names.gateway_host_keys_secret(GATEWAY))
        assert during is not None
        assert fingerprints(during) == current  # the current keys stay while announced
        upcoming = fingerprints(during, names.NEXT_HOST_KEY_FILES)
        assert [k["fingerprint"] for k in st["hostKeys"]] == current
        assert [k["fingerprint"] for k in st["nextHostKeys"]] == upcoming
        assert len(st["knownHosts"].splitlines()) == 4  # both sides of the rotation
        assert st["hostKeyRotation"]["rotation"] == 1 and st["hostKeyRotation"]["promoteAt"]

        def promoted() -> dict[str, Any] | None:
            st = status_of(kube, "dogwood")
            shown = [k["fingerprint"] for k in st.get("hostKeys") or []]
            return st if shown == upcoming and not st.get("nextHostKeys") else None
        st = wait_for(promoted, timeout=60, what="the gateway's next keys promoted")
        assert st["hostKeyRotation"]["completedAt"]
        after = secret_files(kube, GATEWAY_NS, names.gateway_host_keys_secret(GATEWAY))
        assert after is not None and fingerprints(after) == upcoming
        assert not any(after.get(f) for f in names.NEXT_HOST_KEY_FILES.values())
        # The key pair was never touched by the restart or the rotation.
        assert secret_files(kube, GATEWAY_NS, names.gateway_key_secret(GATEWAY)) == pair
    finally:
        rotating.stop()
