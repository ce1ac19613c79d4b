"""The chart's gateway (gateway.enabled): rendered as the operator and `sftpd gateway` expect,
restricted, with the operator's rights over the gateway's objects and nothing more."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from district_contract import layout, routes
from district_contract.commands import env_var
from district_operator import config, names

from sftpd import cli
from sftpd.gateway import command as gateway_command
from tests.charts.conftest import (
    CHART,
    FULLNAME,
    KUBE_VERSION,
    RELEASE_NAMESPACE,
    Helm,
    Manifests,
    rule_set,
)
from tests.charts.test_chart_render import operator_config

GATEWAY = f"{FULLNAME}-gateway"
PROXY_FROM = "10.244.0.0/16"
ENABLED = {"gateway.enabled": "true", "gateway.proxyFrom[0]": PROXY_FROM}
VARIATIONS: dict[str, dict[str, str]] = {
    "enabled": ENABLED,
    "shared": {**ENABLED, "districts.serviceMode": "shared", "gateway.proxyFrom[1]": "fd00::/48",
               "gateway.hostKeys.rotate": "3", "gateway.hostKeys.overlap": "2d"},
    "cluster-ip": {**ENABLED, "gateway.service.type": "ClusterIP",
                   "gateway.networkPolicy.enabled": "false",
                   "gateway.podDisruptionBudget.enabled": "false",
                   "gateway.spreadAcrossNodes": ""},
    "ranges": {**ENABLED, "gateway.service.loadBalancerSourceRanges[0]": "203.0.113.0/24",
               "gateway.service.loadBalancerSourceRanges[1]": "198.51.100.0/24",
               "gateway.service.annotations.lb\\.example/internal": "yes",
               "metrics.podMonitor.enabled": "true", "watch.allNamespaces": "true"},
    "options": {**ENABLED, "gateway.options.maxSessions": "1234",
                "gateway.options.idleTimeout": "60", "gateway.options.banAfter": "0",
                "gateway.options.shutdownGrace": "30", "gateway.options.routesPoll": "2",
                "gateway.options.maxUnauthenticatedPerSource": "3", "gateway.replicas": "3",
                "gateway.name": "sftp-gateway"},
}


@pytest.fixture(scope="module")
def rendered(helm: Helm) -> dict[str, Manifests]:
    return {name: helm.template(values) for name, values in VARIATIONS.items()}


def gateway_of(docs: Manifests, name: str = GATEWAY) -> dict[str, Any]:
    return docs.one("Deployment", name)


def pod_of(docs: Manifests, name: str = GATEWAY) -> dict[str, Any]:
    pod: dict[str, Any] = gateway_of(docs, name)["spec"]["template"]["spec"]
    return pod


def operator_env(docs: Manifests) -> dict[str, str]:
    container = docs.one("Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def gateway_objects(docs: Manifests) -> list[dict[str, Any]]:
    return [d for d in docs if "gateway" in d["metadata"]["name"]
            or d["metadata"].get("labels", {}).get(names.LABEL_COMPONENT) == "gateway"]


@pytest.mark.parametrize("variation", VARIATIONS)
def test_lint_is_clean_with_the_gateway(helm: Helm, variation: str) -> None:
    result = helm.lint(VARIATIONS[variation])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_disabled_renders_nothing_of_the_gateway(helm: Helm) -> None:
    """Off by default, and while off no gateway value changes a byte of the output."""
    defaults = helm.template_text()
    assert helm.template_text({"gateway.enabled": "false", "gateway.name": "elsewhere",
                               "gateway.replicas": "5", "gateway.proxyFrom[0]": PROXY_FROM,
                               "gateway.options.maxSessions": "7"}) == defaults
    docs = helm.template()
    assert gateway_objects(docs) == []
    assert not any(n.startswith(("DISTRICT_OPERATOR_GATEWAY_", "DISTRICT_OPERATOR_SERVICE_MODE"))
                   for n in operator_env(docs))


def test_enabled_installs_the_gateway_objects(rendered: dict[str, Manifests]) -> None:
    docs = rendered["enabled"]
    assert {(d["kind"], d["metadata"]["name"]) for d in gateway_objects(docs)} == {
        ("Deployment", GATEWAY), ("Service", names.gateway_service(GATEWAY)),
        ("ServiceAccount", GATEWAY), ("PodDisruptionBudget", GATEWAY),
        ("NetworkPolicy", GATEWAY), ("Role", GATEWAY), ("RoleBinding", GATEWAY)}
    assert all(d["metadata"].get("namespace") == RELEASE_NAMESPACE
               for d in gateway_objects(docs))
    less = rendered["cluster-ip"]
    assert not less.of_kind("NetworkPolicy") and less.of_kind("PodDisruptionBudget") == [
        less.one("PodDisruptionBudget", FULLNAME)]


def test_default_name_is_the_operators(helm: Helm) -> None:
    """A release named district-sftp gets the operator's default gateway name."""
    docs = Manifests([d for d in yaml.safe_load_all(helm.run(
        "template", "district-sftp", str(CHART), "--namespace", RELEASE_NAMESPACE,
        "--kube-version", KUBE_VERSION, "--set", "gateway.enabled=true",
        "--set", f"gateway.proxyFrom[0]={PROXY_FROM}").stdout) if d])
    assert docs.one("Deployment", names.GATEWAY_DEFAULT_NAME)
    assert docs.one("Service", names.gateway_service(names.GATEWAY_DEFAULT_NAME))


def test_gateway_pod_is_restricted_and_tokenless(rendered: dict[str, Manifests]) -> None:
    docs = rendered["enabled"]
    pod = pod_of(docs)
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == GATEWAY
    assert docs.one("ServiceAccount", GATEWAY)["automountServiceAccountToken"] is False
    # Nothing grants the gateway's ServiceAccount anything.
    for binding in docs.of_kind("RoleBinding") + docs.of_kind("ClusterRoleBinding"):
        assert all(s["name"] != GATEWAY for s in binding["subjects"]), binding
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["runAsGroup"] == layout.RUN_AS_USER
    assert security["fsGroup"] == layout.RUN_AS_USER  # reads the 0400 key files
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    [container] = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert all(m["readOnly"] for m in container["volumeMounts"] if m["name"] != "tmp")


def test_routes_volume_projects_every_shard_optional(rendered: dict[str, Manifests]) -> None:
    """256 ConfigMap sources named as the operator names them, each optional, each giving the
    shard file the gateway reads; the list never depends on the Districts."""
    for variation, gateway in (("enabled", GATEWAY), ("options", "sftp-gateway")):
        pod = pod_of(rendered[variation], gateway)
        [volume] = [v for v in pod["volumes"] if v["name"] == "routes"]
        sources = volume["projected"]["sources"]
        assert len(sources) == routes.SHARDS
        assert sources == [{"configMap": {
            "name": names.gateway_routes_configmap(gateway, shard), "optional": True,
            "items": [{"key": routes.shard_file(shard), "path": routes.shard_file(shard)}]}}
            for shard in range(routes.SHARDS)]
        [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "routes"]
        assert mount["mountPath"] == gateway_command.DEFAULT_ROUTES
    # The pod spec stays far below what the API server and kubelet handle comfortably.
    assert len(json.dumps(gateway_of(rendered["enabled"]))) < 64 * 1024


def test_key_volumes_are_the_operators_secrets(rendered: dict[str, Manifests]) -> None:
    pod = pod_of(rendered["enabled"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    # The whole host-key Secret: a rotation's next keys appear in it without a restart.
    assert volumes["host-keys"]["secret"] == {
        "secretName": names.gateway_host_keys_secret(GATEWAY), "defaultMode": 0o400}
    assert volumes["gateway-key"]["secret"] == {
        "secretName": names.gateway_key_secret(GATEWAY), "defaultMode": 0o400,
        "items": [{"key": names.GATEWAY_PRIVATE_KEY_FILE,
                   "path": names.GATEWAY_PRIVATE_KEY_FILE}]}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["host-keys"] == layout.HOST_KEYS_DIR
    assert (Path(mounts["gateway-key"]) / names.GATEWAY_PRIVATE_KEY_FILE ==
            Path(gateway_command.DEFAULT_GATEWAY_KEY))


def gateway_args(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch
                 ) -> argparse.Namespace:
    """What `sftpd gateway` makes of the container's arguments and environment."""
    for name in [n for n in os.environ if n.startswith("SFTPD_")]:
        monkeypatch.delenv(name)
    for variable in container["env"]:
        monkeypatch.setenv(variable["name"], variable["value"])
    args: argparse.Namespace = cli.build_parser("gateway").parse_args(container["args"])
    return args


def test_the_gateway_reads_the_charts_environment(rendered: dict[str, Manifests],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    container = pod_of(rendered["enabled"])["containers"][0]
    assert container["args"] == ["gateway"]
    assert all(v["name"].startswith("SFTPD_") for v in container["env"])
    args = gateway_args(container, monkeypatch)
    settings = gateway_command.settings_from_args(args)
    assert settings.routes == Path(gateway_command.DEFAULT_ROUTES)
    assert settings.host_keys == [Path(p) for p in layout.host_key_paths()]
    assert settings.next_host_keys == [Path(p) for p in layout.next_host_key_paths()]
    assert settings.gateway_key == Path(gateway_command.DEFAULT_GATEWAY_KEY)
    assert settings.port == layout.SSH_PORT
    # The chart's option defaults are the command's own, and each is one of its options.
    for name in [n for n in os.environ if n.startswith("SFTPD_")]:
        monkeypatch.delenv(name)
    own = cli.build_parser("gateway").parse_args(["gateway"])
    values = yaml.safe_load((CHART / "values.yaml").read_text())["gateway"]["options"]
    dests = {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower() for key in values}
    assert dests <= vars(own).keys()
    assert {d: getattr(args, d) for d in dests} == {d: getattr(own, d) for d in dests}
    assert {v["name"] for v in container["env"]} >= {env_var(d.replace("_", "-"))
                                                    for d in dests}


def test_gateway_options_reach_the_command(rendered: dict[str, Manifests],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pod = pod_of(rendered["options"], "sftp-gateway")
    args = gateway_args(pod["containers"][0], monkeypatch)
    settings = gateway_command.settings_from_args(args)
    assert settings.max_sessions == 1234
    assert settings.idle_timeout_seconds == 60
    assert settings.ban_after_failures == 0
    assert settings.routes_poll_seconds == 2
    assert settings.max_unauthenticated_per_source == 3
    assert args.shutdown_grace == 30
    # The kubelet waits longer than the preStop pause and the gateway's own goodbye.
    pause = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause == 5
    assert pod["terminationGracePeriodSeconds"] > pause + args.shutdown_grace
    assert pod_of(rendered["enabled"])["terminationGracePeriodSeconds"] > 10
    assert gateway_of(rendered["options"], "sftp-gateway")["spec"]["replicas"] == 3


def test_fractional_seconds_reach_the_command(helm: Helm, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    docs = helm.template(ENABLED, "--set-json", "gateway.options.routesPoll=0.25",
                         "--set-json", "gateway.options.shutdownGrace=12.5",
                         "--set-json", "gateway.options.maxSessions=1000000")
    pod = pod_of(docs)
    args = gateway_args(pod["containers"][0], monkeypatch)
    assert args.routes_poll == 0.25 and args.shutdown_grace == 12.5
    assert args.max_sessions == 1_000_000  # not 1e+06
    assert pod["terminationGracePeriodSeconds"] > 12.5


def test_pre_stop_pause_only_where_kubernetes_has_it(helm: Helm) -> None:
    """The sleep action exists from Kubernetes 1.30 on; before, no pause (and no shell in the
    image to sleep with)."""
    old = pod_of(helm.template(ENABLED, "--kube-version", "1.29.4"))
    assert "lifecycle" not in old["containers"][0]
    assert old["terminationGracePeriodSeconds"] > 10
    none = pod_of(helm.template({**ENABLED, "gateway.preStopSeconds": "0"}))
    assert "lifecycle" not in none["containers"][0]


def test_gateway_rollout_probes_and_spread(rendered: dict[str, Manifests]) -> None:
    deployment = gateway_of(rendered["enabled"])
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    selector = names.gateway_selector(GATEWAY)
    assert deployment["spec"]["selector"] == {"matchLabels": selector}
    pod = deployment["spec"]["template"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"ssh": layout.SSH_PORT, "metrics": layout.METRICS_PORT}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"] == {"port": "ssh"}
    [spread] = pod["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"] == {"matchLabels": selector}
    assert "topologySpreadConstraints" not in pod_of(rendered["cluster-ip"])


def test_service_keeps_the_client_address(rendered: dict[str, Manifests]) -> None:
    service = rendered["enabled"].one("Service", names.gateway_service(GATEWAY))
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert service["spec"]["selector"] == names.gateway_selector(GATEWAY)
    assert service["spec"]["ports"] == [{"name": "ssh", "port": 22, "targetPort": "ssh",
                                         "protocol": "TCP"}]
    assert "loadBalancerSourceRanges" not in service["spec"]
    ranged = rendered["ranges"].one("Service", names.gateway_service(GATEWAY))
    assert ranged["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24", "198.51.100.0/24"]
    assert ranged["metadata"]["annotations"] == {"lb.example/internal": "yes"}
    internal = rendered["cluster-ip"].one("Service", names.gateway_service(GATEWAY))
    assert internal["spec"]["type"] == "ClusterIP"
    assert "externalTrafficPolicy" not in internal["spec"]


def test_disruption_budget_keeps_one_gateway(rendered: dict[str, Manifests]) -> None:
    budget = rendered["enabled"].one("PodDisruptionBudget", GATEWAY)
    assert budget["spec"] == {"minAvailable": 1,
                              "selector": {"matchLabels": names.gateway_selector(GATEWAY)}}


def test_network_policy(rendered: dict[str, Manifests]) -> None:
    policy = rendered["enabled"].one("NetworkPolicy", GATEWAY)["spec"]
    assert policy["podSelector"] == {"matchLabels": names.gateway_selector(GATEWAY)}
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ssh, metrics = policy["ingress"]
    assert ssh == {"ports": [{"protocol": "TCP", "port": layout.SSH_PORT}]}  # from anywhere
    assert metrics["ports"] == [{"protocol": "TCP", "port": layout.METRICS_PORT}]
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]
    servers, dns = policy["egress"]
    assert servers["ports"] == [{"protocol": "TCP", "port": layout.SSH_PORT}]
    [peer] = servers["to"]
    assert peer["namespaceSelector"] == {}
    # The labels the operator puts on every District's server pod, and only on those.
    selected = peer["podSelector"]["matchLabels"]
    assert selected.items() <= names.labels("any-district", names.COMPONENT_SERVER).items()
    assert names.LABEL_COMPONENT in selected
    assert not selected.items() <= names.labels("any", names.JOB_EPOCHS).items()
    assert {p["port"] for p in dns["ports"]} == {53} and "to" not in dns
    ranged = rendered["ranges"].one("NetworkPolicy", GATEWAY)["spec"]
    assert ranged["ingress"][0]["from"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}},
                                            {"ipBlock": {"cidr": "198.51.100.0/24"}}]


def test_pod_monitor_scrapes_the_gateway(rendered: dict[str, Manifests]) -> None:
    monitor = rendered["ranges"].one("PodMonitor", GATEWAY)
    assert monitor["spec"]["selector"] == {"matchLabels": names.gateway_selector(GATEWAY)}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NAMESPACE]}
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert len(rendered["ranges"].of_kind("PodMonitor")) == 2  # the districts' too
    assert not rendered["enabled"].of_kind("PodMonitor")


def test_the_operator_reads_the_gateway_environment(rendered: dict[str, Manifests],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    settings = operator_config(operator_env(rendered["enabled"]), monkeypatch)
    assert settings.gateway == config.GatewayConfig(
        namespace=RELEASE_NAMESPACE, name=GATEWAY, proxy_from=(PROXY_FROM,),
        host_keys_rotate="0")
    assert settings.service_mode == "dedicated"
    shared = operator_config(operator_env(rendered["shared"]), monkeypatch)
    assert shared.gateway == config.GatewayConfig(
        namespace=RELEASE_NAMESPACE, name=GATEWAY, proxy_from=(PROXY_FROM, "fd00::/48"),
        host_keys_rotate="3", host_keys_overlap="2d")
    assert shared.service_mode == "shared"
    named = operator_config(operator_env(rendered["options"]), monkeypatch)
    assert named.gateway is not None and named.gateway.name == "sftp-gateway"
    # Every variable the chart sets is one the operator reads (a typo would be ignored).
    flags = {action.dest.upper() for action in _operator_run_parser()._actions}
    for variable in operator_env(rendered["shared"]):
        if variable.startswith(config.ENV_PREFIX):
            assert variable.removeprefix(config.ENV_PREFIX) in flags | {"NAMESPACES"}, variable


def _operator_run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return parser


def test_chart_default_overlap_is_the_operators(rendered: dict[str, Manifests],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    settings = operator_config(operator_env(rendered["enabled"]), monkeypatch)
    assert settings.gateway is not None
    assert settings.gateway.host_keys_overlap == config.GatewayConfig(namespace="x") \
        .host_keys_overlap


def gateway_role(docs: Manifests) -> dict[str, Any]:
    return docs.one("Role", GATEWAY, RELEASE_NAMESPACE)


def test_operator_role_for_the_gateway(rendered: dict[str, Manifests]) -> None:
    docs = rendered["enabled"]
    grants = rule_set(gateway_role(docs)["rules"])
    shards = {names.gateway_routes_configmap(GATEWAY, s) for s in range(routes.SHARDS)}
    secrets = {names.gateway_host_keys_secret(GATEWAY), names.gateway_key_secret(GATEWAY)}
    # What district_operator.routepublisher and .gatewaystate call, and nothing more.
    assert grants == (
        {("", "configmaps", "*", v) for v in ("list", "create")}
        | {("", "configmaps", n, v) for n in shards for v in ("get", "patch")}
        | {("", "secrets", "*", "create")}
        | {("", "secrets", n, v) for n in secrets for v in ("get", "patch")}
        | {("", "pods", "*", v) for v in ("list", "patch")}
        | {("", "services", names.gateway_service(GATEWAY), "get")})
    binding = docs.one("RoleBinding", GATEWAY, RELEASE_NAMESPACE)
    assert binding["roleRef"]["name"] == GATEWAY
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME,
                                    "namespace": RELEASE_NAMESPACE}]


def test_gateway_adds_no_cluster_wide_rights(helm: Helm, rendered: dict[str, Manifests]) -> None:
    """No cluster-wide pod or ConfigMap rights: the ClusterRole is what it is without it."""
    for variation, base in (("enabled", {}), ("ranges", {"watch.allNamespaces": "true",
                                                         "metrics.podMonitor.enabled": "true"})):
        assert rendered[variation].one("ClusterRole") == helm.template(base).one("ClusterRole")
        assert rendered[variation].one("ClusterRoleBinding") == \
            helm.template(base).one("ClusterRoleBinding")


def test_no_role_without_rbac(helm: Helm) -> None:
    docs = helm.template({**ENABLED, "rbac.create": "false"})
    assert not docs.of_kind("Role") and not docs.of_kind("RoleBinding")
    assert docs.one("Deployment", GATEWAY)
