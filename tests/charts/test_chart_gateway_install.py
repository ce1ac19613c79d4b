"""The chart with its gateway, installed into the real control plane.

The release namespace enforces the restricted Pod Security Standard, so the API server's own
PodSecurity admission judges the gateway pods the ReplicaSet controller creates (no kubelet
runs here: they stay Pending, which is enough to see them admitted with all 256 routing
sources). `kubectl auth can-i` then shows the operator's gateway rights are what it needs
there and nothing beyond, and that the gateway's own ServiceAccount can do nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from district_contract import layout, routes
from district_devtools.ports import free_port, wait_until
from district_operator import api, names
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from tests.charts.conftest import CHART, KUBE_VERSION, Helm, service_account_kubeconfig, set_args

pytestmark = pytest.mark.cluster
RELEASE = "gw"
NAMESPACE = "chart-gateway"
OTHER = "chart-gateway-other"
FULLNAME = f"{RELEASE}-district-sftp"
GATEWAY = f"{FULLNAME}-gateway"
OPERATOR = f"system:serviceaccount:{NAMESPACE}:{FULLNAME}"
GATEWAY_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{GATEWAY}"
VALUES = {
    "gateway.enabled": "true",
    "gateway.proxyFrom[0]": "10.244.0.0/16",
    # Districts served elsewhere, so every right in the release namespace is the gateway's.
    "watch.namespaces[0]": OTHER,
    # The District CRD belongs to the other chart test's release; none is needed here.
    "crds.enabled": "false",
}


@pytest.fixture(scope="module")
def installed(cluster: Any, helm: Helm) -> Iterator[Any]:
    for namespace in (NAMESPACE, OTHER):
        cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("label", "namespace", NAMESPACE,
                    "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")
    helm.run("install", RELEASE, str(CHART), "--namespace", NAMESPACE, *set_args(VALUES),
             kubeconfig=cluster.kubeconfig)
    try:
        yield cluster
    finally:
        helm.run("uninstall", RELEASE, "--namespace", NAMESPACE,
                 kubeconfig=cluster.kubeconfig, check=False)
        for namespace in (NAMESPACE, OTHER):
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def can(cluster: Any, who: str, verb: str, resource: str, namespace: str | None) -> bool:
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    result = cluster.kubectl("auth", "can-i", verb, resource, *scope, "--as", who, check=False)
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return bool(result.stdout.strip() == "yes")


def gateway_pods(cluster: Any) -> list[dict[str, Any]]:
    selector = ",".join(f"{k}={v}" for k, v in names.gateway_selector(GATEWAY).items())
    result = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json")
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return items


def test_restricted_namespace_admits_the_gateway_pods(installed: Any) -> None:
    """The ReplicaSet controller's pods pass PodSecurity restricted, with every source."""
    pods = wait_until(lambda: (p if len(p := gateway_pods(installed)) == 2 else None), 60,
                      "the two gateway pods", interval=0.5)
    for pod in pods:
        assert pod["spec"]["automountServiceAccountToken"] is False
        [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "routes"]
        assert [s["configMap"]["name"] for s in volume["projected"]["sources"]] == [
            names.gateway_routes_configmap(GATEWAY, shard) for shard in range(routes.SHARDS)]
        # No token volume was injected: nothing in the pod can talk to the API server.
        assert not any("kube-api-access" in v["name"] for v in pod["spec"]["volumes"])
    events = installed.kubectl("get", "events", "-n", NAMESPACE, "-o", "json")
    refusals = [e["message"] for e in json.loads(events.stdout)["items"]
                if "violates PodSecurity" in e.get("message", "")]
    assert refusals == []


def test_notes_name_the_gateway_service(installed: Any, helm: Helm) -> None:
    notes = helm.run("get", "notes", RELEASE, "--namespace", NAMESPACE,
                     kubeconfig=installed.kubeconfig).stdout
    assert f"kubectl -n {NAMESPACE} get service {names.gateway_service(GATEWAY)}" in notes


def test_gateway_objects_are_installed(installed: Any) -> None:
    for kind, name in [("service", names.gateway_service(GATEWAY)),
                       ("serviceaccount", GATEWAY), ("poddisruptionbudget", GATEWAY),
                       ("networkpolicy", GATEWAY), ("role", GATEWAY), ("rolebinding", GATEWAY)]:
        result = installed.kubectl("get", kind, name, "-n", NAMESPACE, "-o", "json",
                                   check=False)
        assert result.returncode == 0, (kind, result.stderr)
    service = json.loads(installed.kubectl("get", "service", GATEWAY, "-n", NAMESPACE,
                                           "-o", "json").stdout)
    assert service["spec"]["externalTrafficPolicy"] == "Local"


SHARD = names.gateway_routes_configmap(GATEWAY, 7)
OPERATOR_MAY = [
    ("create", "configmaps", NAMESPACE), ("list", "configmaps", NAMESPACE),
    ("patch", f"configmaps/{SHARD}", NAMESPACE), ("get", f"configmaps/{SHARD}", NAMESPACE),
    ("create", "secrets", NAMESPACE),
    ("get", f"secrets/{names.gateway_host_keys_secret(GATEWAY)}", NAMESPACE),
    ("patch", f"secrets/{names.gateway_key_secret(GATEWAY)}", NAMESPACE),
    ("list", "pods", NAMESPACE), ("patch", "pods", NAMESPACE),
    ("get", f"services/{names.gateway_service(GATEWAY)}", NAMESPACE),
    # A watched namespace's District server pods, after their keys Secret changed.
    ("list", "pods", OTHER), ("patch", "pods", OTHER),
]
OPERATOR_MAY_NOT = [
    # Other ConfigMaps, Secrets and Services of the release namespace, by name.
    ("get", "configmaps/kube-root-ca.crt", NAMESPACE), ("delete", "configmaps", NAMESPACE),
    ("patch", f"configmaps/{names.gateway_routes_configmap(GATEWAY, 256)}", NAMESPACE),
    ("watch", "configmaps", NAMESPACE),
    ("get", "secrets/sh.helm.release.v1.gw.v1", NAMESPACE), ("list", "secrets", NAMESPACE),
    ("delete", f"secrets/{names.gateway_key_secret(GATEWAY)}", NAMESPACE),
    ("get", f"services/{FULLNAME}-metrics", NAMESPACE), ("list", "services", NAMESPACE),
    ("patch", f"services/{names.gateway_service(GATEWAY)}", NAMESPACE),
    # No pods made, run into or deleted; nothing of the kind anywhere else.
    ("create", "pods", NAMESPACE), ("delete", "pods", NAMESPACE),
    ("create", "pods/exec", NAMESPACE), ("patch", "deployments.apps", NAMESPACE),
    ("create", "pods", OTHER), ("list", "pods", None), ("patch", "pods", "kube-system"),
    ("create", "configmaps", OTHER), ("list", "configmaps", None),
]


def test_operator_has_the_gateway_rights_it_uses(installed: Any) -> None:
    assert [c for c in OPERATOR_MAY if not can(installed, OPERATOR, *c)] == []


def test_operator_has_no_gateway_right_beyond_them(installed: Any) -> None:
    assert [c for c in OPERATOR_MAY_NOT if can(installed, OPERATOR, *c)] == []


def test_gateway_account_can_do_nothing(installed: Any) -> None:
    checks = [("get", f"configmaps/{SHARD}", NAMESPACE), ("list", "configmaps", NAMESPACE),
              ("get", f"secrets/{names.gateway_key_secret(GATEWAY)}", NAMESPACE),
              ("list", "pods", NAMESPACE), ("get", "services", NAMESPACE),
              ("list", "districts.districtsftp.io", None)]
    assert [c for c in checks if can(installed, GATEWAY_ACCOUNT, *c)] == []





@pytest.fixture()
def as_operator(installed: Any, tmp_path: Path) -> Iterator[api.Kube]:
    """The operator's own API client with a token of the chart's operator ServiceAccount."""
    configuration = k8s_client.Configuration()
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(service_account_kubeconfig(installed, tmp_path / "kubeconfig",
                                                    FULLNAME, NAMESPACE)),
        client_configuration=configuration)
    kube = api.Kube(configuration, field_manager=names.FIELD_MANAGER,
                    extra_kinds={"ConfigMap": ("/api/v1", "configmaps")})
    try:
        yield kube
    finally:
        kube.close()


def operator_env(helm: Helm) -> dict[str, str]:
    """The operator container's environment as the chart renders it for this release."""
    docs = [d for d in yaml.safe_load_all(helm.run(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version",
        KUBE_VERSION, *set_args(VALUES)).stdout) if d]
    [deployment] = [d for d in docs if d["kind"] == "Deployment"
                    and d["metadata"]["name"] == FULLNAME]
    return {e["name"]: e["value"]
            for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_operator_with_the_charts_settings_and_rights_keeps_the_gateway_secrets(
        installed: Any, crd: Any, helm: Helm, tmp_path: Path) -> None:
    """`district-operator run` with the chart's environment and the chart's ServiceAccount
    token creates the gateway's two Secrets where the gateway mounts them, with nothing
    forbidden on the way."""
    env = {**os.environ, **operator_env(helm), "PYTHONUNBUFFERED": "1",
           "KUBECONFIG": str(service_account_kubeconfig(installed, tmp_path / "kubeconfig",
                                                        FULLNAME, NAMESPACE)),
           "DISTRICT_OPERATOR_METRICS_PORT": str(free_port()),
           "DISTRICT_OPERATOR_HEALTH_PORT": str(free_port())}
    assert env["DISTRICT_OPERATOR_GATEWAY_NAMESPACE"] == NAMESPACE
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "district_operator.cli", "run"],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        def secret(name: str) -> dict[str, Any] | None:
            result = installed.kubectl("get", "secret", name, "-n", NAMESPACE, "-o", "json",
                                       check=False)
            return json.loads(result.stdout) if result.returncode == 0 else None

        key = wait_until(lambda: secret(names.gateway_key_secret(GATEWAY)), 60,
                         "the gateway key Secret", interval=0.5)
        host_keys = wait_until(lambda: secret(names.gateway_host_keys_secret(GATEWAY)), 60,
                               "the gateway host-key Secret", interval=0.5)
        assert names.GATEWAY_PRIVATE_KEY_FILE in key["data"]
        assert set(layout.HOST_KEY_FILES.values()) <= host_keys["data"].keys()
        time.sleep(3)  # a few of its 2-second gateway rounds
        assert process.poll() is None, log_path.read_text()
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    text = log_path.read_text()
    assert "orbidden" not in text and " 403" not in text, text


def test_operator_makes_its_gateway_calls(installed: Any, as_operator: api.Kube) -> None:
    """The calls district_operator.routepublisher and .gatewaystate make, as the chart's
    operator ServiceAccount: a shard listed and written by server-side apply (created, then
    changed), the gateway pods listed and annotated, the gateway's Secrets created, read and
    patched, its Service read; a ConfigMap or Secret of another name refused."""
    kube = as_operator

    def shard(name: str, data: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": NAMESPACE,
                             "labels": {names.LABEL_COMPONENT: names.COMPONENT_ROUTES}},
                "data": {routes.shard_file(7): data}}

    kube.apply(shard(SHARD, "1"))
    assert kube.apply(shard(SHARD, "2"))["data"] == {routes.shard_file(7): "2"}
    assert [c["metadata"]["name"] for c in kube.list(
        "ConfigMap", NAMESPACE, f"{names.LABEL_COMPONENT}={names.COMPONENT_ROUTES}")] == [SHARD]
    with pytest.raises(api.ApiError) as refused:
        kube.apply(shard("not-a-shard", "1"))
    assert refused.value.status == 403
    selector = ",".join(f"{k}={v}" for k, v in names.gateway_selector(GATEWAY).items())
    pods = wait_until(lambda: kube.list("Pod", NAMESPACE, selector) or None, 60,
                      "the gateway pods", interval=0.5)
    for pod in pods:
        kube.merge_patch("Pod", NAMESPACE, pod["metadata"]["name"], {"metadata": {
            "annotations": {names.ANNOTATION_ROUTES_REVISION: "r2"}}})
    created = kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                           "metadata": {"generateName": "any-", "namespace": NAMESPACE}})
    assert created["metadata"]["name"].startswith("any-")  # create is not limited by name
    for name in (names.gateway_host_keys_secret(GATEWAY), names.gateway_key_secret(GATEWAY)):
        if kube.get("Secret", NAMESPACE, name) is None:  # this test run alone
            kube.create({"apiVersion": "v1", "kind": "Secret",
                         "metadata": {"name": name, "namespace": NAMESPACE}})
        assert kube.get("Secret", NAMESPACE, name) is not None
        kube.merge_patch("Secret", NAMESPACE, name, {"metadata": {"labels": {"checked": "1"}}})
    with pytest.raises(api.ApiError) as refused:
        kube.get("Secret", NAMESPACE, "sh.helm.release.v1.gw.v1")
    assert refused.value.status == 403
    assert kube.get("Service", NAMESPACE, names.gateway_service(GATEWAY)) is not None
