"""`helm lint` and `helm template` of the chart: defaults and variations, rendered as intended."""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any

import pytest
import yaml
from district_devtools.localcluster.node import DEV_KINDS
from district_operator import api, builders, cli, config, names

from tests.charts.conftest import (
    CHART,
    FULLNAME,
    RELEASE_NAMESPACE,
    REPO,
    Helm,
    Manifests,
    rule_set,
)

VARIATIONS: dict[str, dict[str, str]] = {
    "defaults": {},
    "single-namespace": {"watch.namespaces[0]": "districts"},
    "several-namespaces": {"watch.namespaces[0]": "north", "watch.namespaces[1]": "south"},
    "all-namespaces": {"watch.allNamespaces": "true"},
    "ha": {"replicaCount": "2", "watch.namespaces[0]": "north",
           "watch.namespaces[1]": "south"},
    "ha-all-namespaces": {"replicaCount": "2", "watch.allNamespaces": "true"},
    "crds-disabled": {"crds.enabled": "false"},
    "crds-not-kept": {"crds.keep": "false"},
    "service-monitor": {"metrics.serviceMonitor.enabled": "true",
                        "metrics.serviceMonitor.labels.release": "prometheus"},
    "monitoring": {"watch.allNamespaces": "true", "metrics.serviceMonitor.enabled": "true",
                   "metrics.podMonitor.enabled": "true",
                   "metrics.prometheusRule.enabled": "true",
                   "metrics.prometheusRule.alertLabels.severity": "warning",
                   "metrics.dashboard.enabled": "true"},
    "gateway": {"gateway.enabled": "true", "gateway.proxyFrom[0]": "10.244.0.0/16"},
}
CLUSTER_ONLY = {("apiextensions.k8s.io", "customresourcedefinitions", "*", v)
                for v in ("list", "watch")}


@pytest.fixture(scope="module")
def rendered(helm: Helm) -> dict[str, Manifests]:
    return {name: helm.template(values) for name, values in VARIATIONS.items()}


@pytest.mark.parametrize("variation", VARIATIONS)
def test_lint_is_clean(helm: Helm, variation: str) -> None:
    result = helm.lint(VARIATIONS[variation])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_defaults_serve_the_release_namespace(rendered: dict[str, Manifests]) -> None:
    docs = rendered["defaults"]
    assert docs.kinds() == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                            "RoleBinding", "Deployment", "PodDisruptionBudget", "Service",
                            "CustomResourceDefinition"}
    assert docs.env()["DISTRICT_OPERATOR_NAMESPACES"] == RELEASE_NAMESPACE
    assert "DISTRICT_OPERATOR_PEERING" not in docs.env()
    assert docs.one("Role")["metadata"]["namespace"] == RELEASE_NAMESPACE
    deployment = docs.one("Deployment")
    assert deployment["spec"]["replicas"] == 1
    # Without peering, a rolling update would briefly run two active operators.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    binding = docs.one("RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME,
                                    "namespace": RELEASE_NAMESPACE}]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == FULLNAME


def test_several_namespaces_get_a_role_each_and_nothing_cluster_wide(
        rendered: dict[str, Manifests]) -> None:
    docs = rendered["several-namespaces"]
    assert {r["metadata"]["namespace"] for r in docs.of_kind("Role")} == {"north", "south"}
    assert {b["metadata"]["namespace"] for b in docs.of_kind("RoleBinding")} == {"north",
                                                                               "south"}
    assert docs.env()["DISTRICT_OPERATOR_NAMESPACES"] == "north,south"
    cluster_grants = rule_set(docs.one("ClusterRole")["rules"])
    # Only names and schemas cluster-wide: CRDs, and namespaces (to notice a watched one).
    assert cluster_grants == CLUSTER_ONLY | {("", "namespaces", "*", "list"),
                                             ("", "namespaces", "*", "watch")}


def test_all_namespaces_moves_the_same_rules_into_the_cluster_role(
        rendered: dict[str, Manifests]) -> None:
    """The rules are written once: the namespaced Role's rules are the ClusterRole's."""
    role_grants = rule_set(rendered["defaults"].one("Role")["rules"])
    docs = rendered["all-namespaces"]
    assert not docs.of_kind("Role") and not docs.of_kind("RoleBinding")
    assert docs.env()["DISTRICT_OPERATOR_ALL_NAMESPACES"] == "true"
    assert "DISTRICT_OPERATOR_NAMESPACES" not in docs.env()
    assert rule_set(docs.one("ClusterRole")["rules"]) == role_grants | CLUSTER_ONLY


def test_namespaced_rules_are_what_the_operator_calls(rendered: dict[str, Manifests]) -> None:
    grants = rule_set(rendered["defaults"].one("Role")["rules"])
    for group, resource, verbs in [
        ("districtsftp.io", "districts", {"get", "list", "watch", "patch"}),
        ("districtsftp.io", "districts/status", {"patch"}),
        ("", "secrets", {"get", "list", "watch", "create", "patch"}),
        ("batch", "cronjobs", {"get", "list", "watch", "create", "patch", "delete"}),
        ("batch", "jobs", {"list", "watch", "patch"}),
        ("", "pods", {"list", "patch"}),  # patch: the keys-revision touch (podtouch.py)
        ("", "events", {"create"}),
    ]:
        assert {v for g, r, _, v in grants if (g, r) == (group, resource)} == verbs, resource
    # Never: deleting what holds data, touching workloads it does not manage, escalating.
    for group, resource, verb in [("", "persistentvolumeclaims", "delete"),
                                  ("", "secrets", "delete"), ("apps", "deployments", "delete"),
                                  ("", "pods", "get"), ("", "pods", "create"),
                                  ("", "configmaps", "get"), ("", "serviceaccounts", "create"),
                                  ("rbac.authorization.k8s.io", "roles", "create")]:
        assert not any((g, r, v) == (group, resource, verb) for g, r, _, v in grants)
    assert not any("*" in (g, r, v) for g, r, _, v in grants)
    # Every kind the operator's API module names has a rule. api.KINDS is what the operator
    # and the plugin address; the dev cluster's stand-ins name their own kinds apart
    # (district_devtools.localcluster.node.DEV_KINDS), and the operator gets no rule for them.
    # The gateway's kinds (ConfigMaps, its routing shards) are ruled in the gateway's Role in
    # the release namespace only (tests/charts/test_chart_gateway.py).
    gateway_grants = rule_set(rendered["gateway"].one("Role", f"{FULLNAME}-gateway")["rules"])
    kinds_ruled = {r for _, r, _, _ in grants | gateway_grants}
    for _, plural in {**api.KINDS, **api.GATEWAY_KINDS}.values():
        assert plural in kinds_ruled, plural
    for _, plural in DEV_KINDS.values():
        assert plural not in kinds_ruled, plural


def test_ha_turns_peering_on(rendered: dict[str, Manifests]) -> None:
    docs = rendered["ha"]
    deployment = docs.one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert "strategy" not in deployment["spec"]  # a rolling update: the peers hand over
    assert docs.env()["DISTRICT_OPERATOR_PEERING"] == FULLNAME
    assert docs.one("CustomResourceDefinition", "kopfpeerings.kopf.dev")["spec"]["scope"] == \
        "Namespaced"
    peerings = docs.of_kind("KopfPeering")
    assert {p["metadata"]["namespace"] for p in peerings} == {"north", "south"}
    assert all(p["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
               for p in peerings)
    for role in docs.of_kind("Role"):
        grants = rule_set(role["rules"])
        assert ("kopf.dev", "kopfpeerings", FULLNAME, "patch") in grants
        assert ("kopf.dev", "kopfpeerings", "*", "patch") not in grants
    assert docs.one("PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1, "selector": deployment["spec"]["selector"]}


def test_ha_across_all_namespaces_uses_a_cluster_peering(rendered: dict[str, Manifests]
                                                         ) -> None:
    docs = rendered["ha-all-namespaces"]
    assert docs.one("ClusterKopfPeering")["metadata"]["name"] == FULLNAME
    assert not docs.of_kind("KopfPeering")
    assert docs.one("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev")["spec"][
        "scope"] == "Cluster"
    grants = rule_set(docs.one("ClusterRole")["rules"])
    assert ("kopf.dev", "clusterkopfpeerings", FULLNAME, "patch") in grants
    assert not any(r == "kopfpeerings" for _, r, _, _ in grants)


def test_no_peering_objects_without_peering(rendered: dict[str, Manifests]) -> None:
    for name in ("defaults", "all-namespaces", "several-namespaces"):
        docs = rendered[name]
        assert not docs.of_kind("KopfPeering") and not docs.of_kind("ClusterKopfPeering")
        assert [c["metadata"]["name"] for c in docs.of_kind("CustomResourceDefinition")] == [
            "districts.districtsftp.io"]
        assert not any(g == "kopf.dev" for g, _, _, _ in rule_set(
            r for role in docs.of_kind("Role") + docs.of_kind("ClusterRole")
            for r in role["rules"]))


def test_crd_lifecycle(rendered: dict[str, Manifests]) -> None:
    kept = rendered["defaults"].one("CustomResourceDefinition")
    assert kept["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    not_kept = rendered["crds-not-kept"].one("CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (not_kept["metadata"].get("annotations") or {})
    assert not rendered["crds-disabled"].of_kind("CustomResourceDefinition")
    # Everything else is still there without the CRD.
    assert rendered["crds-disabled"].kinds() == rendered["defaults"].kinds() - {
        "CustomResourceDefinition"}


def test_chart_crd_is_the_repository_crd() -> None:
    copy = CHART / "files" / "crds" / "district.yaml"
    assert copy.read_bytes() == (REPO / "crds" / "district.yaml").read_bytes(), (
        "the chart's CRD drifted from crds/district.yaml: "
        "cp crds/district.yaml charts/district-sftp/files/crds/district.yaml")


def test_rendered_crd_equals_the_repository_crd(rendered: dict[str, Manifests]) -> None:
    source = yaml.safe_load((REPO / "crds" / "district.yaml").read_text())
    crd = rendered["defaults"].one("CustomResourceDefinition")
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["name"] == source["metadata"]["name"]
    assert source["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()


def test_service_monitor_scrapes_the_metrics_service(rendered: dict[str, Manifests]) -> None:
    docs = rendered["service-monitor"]
    monitor = docs.one("ServiceMonitor")
    service = docs.one("Service", f"{FULLNAME}-metrics")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NAMESPACE]}
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in port_names
    container_ports = {p["name"]: p["containerPort"] for p in docs.container()["ports"]}
    assert str(container_ports["metrics"]) == docs.env()["DISTRICT_OPERATOR_METRICS_PORT"]
    assert not rendered["defaults"].of_kind("ServiceMonitor")


def test_operator_pod_is_restricted_and_probed_on_kopf_health(
        rendered: dict[str, Manifests]) -> None:
    docs = rendered["defaults"]
    pod = docs.one("Deployment")["spec"]["template"]["spec"]
    container = docs.container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == names.RUN_AS_USER
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    probe = container["livenessProbe"]
    assert probe["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert str(ports[probe["httpGet"]["port"]]) == docs.env()["DISTRICT_OPERATOR_HEALTH_PORT"]
    assert container["command"] == ["district-operator"]
    assert container["args"] == ["run"]


def operator_config(env: dict[str, str], monkeypatch: pytest.MonkeyPatch
                    ) -> config.OperatorConfig:
    """What `district-operator run` makes of the Deployment's environment and arguments."""
    for name in [n for n in os.environ if n.startswith(config.ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args: argparse.Namespace = cli.build_parser().parse_args(["run"])
    return config.from_args(args)


def test_the_operator_reads_the_charts_environment(helm: Helm,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    docs = helm.template({
        "watch.namespaces[0]": "north", "watch.namespaces[1]": "south", "replicaCount": "2",
        "image.repository": "registry.invalid/ds", "image.tag": "1.2.3",
        "districts.server.resources.limits.memory": "300Mi",
        "districts.jobs.resources.requests.cpu": "200m",
        "operator.resyncSeconds": "120", "operator.workers": "4"})
    settings = operator_config(docs.env(), monkeypatch)
    assert settings.namespaces == ("north", "south")
    assert not settings.all_namespaces
    assert settings.peering == FULLNAME
    assert settings.inputs.image == "registry.invalid/ds:1.2.3"
    assert docs.container()["image"] == "registry.invalid/ds:1.2.3"
    assert settings.inputs.server_resources.limits == {"memory": "300Mi"}
    # The chart's defaults are the operator's own (measured: see bench/sftpd_memory.py).
    assert settings.inputs.server_resources.requests == {"cpu": "50m", "memory": "48Mi"}
    assert settings.inputs.server_resources.requests == \
        builders.BuildInputs(image="x").server_resources.requests
    assert settings.inputs.job_resources.requests == {"cpu": "200m", "memory": "128Mi"}
    assert settings.resync_seconds == 120 and settings.workers == 4
    assert (settings.metrics_port, settings.health_port) == (8080, 8081)

    everywhere = operator_config(helm.template({"watch.allNamespaces": "true"}).env(),
                                 monkeypatch)
    assert everywhere.all_namespaces and everywhere.namespaces == ()
    assert everywhere.peering is None
    assert everywhere.inputs.image_pull_secrets == ()

    private = helm.template({"districts.imagePullSecrets[0]": "regcred",
                             "districts.imagePullSecrets[1]": "mirror"})
    assert operator_config(private.env(), monkeypatch).inputs.image_pull_secrets == (
        "regcred", "mirror")


def test_default_district_resources_are_the_operators_defaults(
        rendered: dict[str, Manifests], monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart's documented defaults are the ones the operator would pick by itself."""
    settings = operator_config(rendered["defaults"].env(), monkeypatch)
    defaults = builders.BuildInputs(image="any")
    assert settings.inputs.server_resources == defaults.server_resources
    assert settings.inputs.job_resources == defaults.job_resources


@pytest.mark.parametrize(("values", "operator_image", "district_image"), [
    ({}, "district-sftp:0.1.0", "district-sftp:0.1.0"),
    ({"image.tag": "v9"}, "district-sftp:v9", "district-sftp:v9"),
    ({"image.digest": "sha256:" + "a" * 64},
     "district-sftp@sha256:" + "a" * 64, "district-sftp@sha256:" + "a" * 64),
    ({"districts.image.repository": "mirror.invalid/ds", "image.digest": "sha256:" + "a" * 64},
     "district-sftp@sha256:" + "a" * 64, "mirror.invalid/ds:0.1.0"),
    ({"districts.image.tag": "v2", "districts.image.pullPolicy": "Always"},
     "district-sftp:0.1.0", "district-sftp:v2"),
])
def test_images(helm: Helm, values: dict[str, str], operator_image: str,
                district_image: str) -> None:
    docs = helm.template(values)
    assert docs.container()["image"] == operator_image
    assert docs.env()["DISTRICT_OPERATOR_IMAGE"] == district_image
    policy = values.get("districts.image.pullPolicy", "IfNotPresent")
    assert docs.env()["DISTRICT_OPERATOR_IMAGE_PULL_POLICY"] == policy


def test_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version is not None and chart["appVersion"] == version.group(1)


# ---- documentation --------------------------------------------------------------------------

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9]*):")


def documented_keys() -> tuple[list[str], list[str]]:
    """Key paths of values.yaml: those documented with `# --` above them, and those with no
    comment above them and no `# --`-documented ancestor (a value nobody explained)."""
    documented: list[str] = []
    undocumented: list[str] = []
    stack: list[tuple[int, str, bool]] = []  # (indent, key, documented with "# --")
    comment: list[str] = []  # the comment block right above the current line
    for line in (CHART / "values.yaml").read_text().splitlines():
        match = KEY_LINE.match(line)
        if match:
            indent = len(match["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = ".".join([k for _, k, _ in stack] + [match["key"]])
            dashed = bool(comment) and comment[0].startswith("# --")
            if dashed:
                documented.append(path)
            elif not comment and not any(d for _, _, d in stack):
                undocumented.append(path)
            stack.append((indent, match["key"], dashed))
        comment = [*comment, line.strip()] if line.lstrip().startswith("#") else []
    return documented, undocumented


def test_every_value_is_documented_in_values_yaml() -> None:
    documented, undocumented = documented_keys()
    assert undocumented == []
    assert len(documented) > 40


def test_chart_readme_lists_every_value() -> None:
    documented, _ = documented_keys()
    readme = (CHART / "README.md").read_text()
    listed = set(re.findall(r"^\| `([A-Za-z0-9.]+)` \|", readme, re.M))
    assert sorted(set(documented) - listed) == []
    assert sorted(listed - set(documented)) == []


def test_values_yaml_is_valid_against_its_schema_and_complete(helm: Helm) -> None:
    """Every key in values.yaml is declared by the schema (which refuses unknown keys)."""
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) == set(schema["properties"])
    assert schema["additionalProperties"] is False
