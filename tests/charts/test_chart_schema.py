"""values.schema.json: bad values are refused by helm itself, with a message naming the value."""

from __future__ import annotations

import pytest

from tests.charts.conftest import CHART, Helm

GATEWAY = {"gateway.enabled": "true", "gateway.proxyFrom[0]": "10.244.0.0/16"}
# (values, what helm's message must say): one refusal per kind of mistake.
REFUSED: dict[str, tuple[dict[str, str], str]] = {
    "no replicas": ({"replicaCount": "0"}, "at '/replicaCount': minimum: got 0, want 1"),
    "typo in a key": ({"replicas": "2"}, "additional properties 'replicas' not allowed"),
    "typo in a nested key": ({"watch.namespace[0]": "a"},
                             "at '/watch': additional properties 'namespace' not allowed"),
    "namespace not a DNS label": ({"watch.namespaces[0]": "Districts_A"},
                                  "at '/watch/namespaces/0': 'Districts_A' does not match"),
    "both scopes": ({"watch.allNamespaces": "true", "watch.namespaces[0]": "a"},
                    "at '/watch/namespaces': maxItems: got 1, want 0"),
    "unknown pull policy": ({"image.pullPolicy": "Sometimes"},
                            "at '/image/pullPolicy': value must be one of 'Always', "
                            "'IfNotPresent', 'Never'"),
    "unquoted numeric tag": ({"image.tag": "2"}, "at '/image/tag': got number, want string"),
    "tag in the repository": ({"image.repository": "district-sftp:latest"},
                              "at '/image/repository': 'district-sftp:latest' does not match"),
    "bad digest": ({"image.digest": "latest"}, "at '/image/digest': 'latest' does not match"),
    "bad quantity": ({"districts.server.resources.limits.memory": "lots"},
                     "at '/districts/server/resources/limits/memory': 'lots' does not match"),
    "resources typo": ({"resources.limit.memory": "1Gi"},
                       "at '/resources': additional properties 'limit' not allowed"),
    "port out of range": ({"operator.healthPort": "70000"},
                          "at '/operator/healthPort': maximum: got 70,000, want 65,535"),
    "zero resync": ({"operator.resyncSeconds": "0"},
                    "at '/operator/resyncSeconds': exclusiveMinimum: got 0, want 0"),
    "root operator": ({"podSecurityContext.runAsNonRoot": "false"},
                      "at '/podSecurityContext/runAsNonRoot': value must be true"),
    "privilege escalation": ({"securityContext.allowPrivilegeEscalation": "true"},
                             "at '/securityContext/allowPrivilegeEscalation': "
                             "value must be false"),
    "both disruption budgets": ({"podDisruptionBudget.minAvailable": "1"},
                                "at '/podDisruptionBudget/maxUnavailable': "
                                "got number, want null"),
    "bad scrape interval": ({"metrics.serviceMonitor.interval": "30 seconds"},
                            "at '/metrics/serviceMonitor/interval': '30 seconds' does not "
                            "match"),
    "existing service account unnamed": ({"serviceAccount.create": "false"},
                                         "at '/serviceAccount/name': minLength: got 0, want 1"),
    "pull secret given as an object": ({"districts.imagePullSecrets[0].name": "regcred"},
                                       "at '/districts/imagePullSecrets/0': got object, "
                                       "want string"),
    "crds.keep not a boolean": ({"crds.keep": "maybe"},
                                "at '/crds/keep': got string, want boolean"),
    "runbook base with an anchor": ({"metrics.prometheusRule.runbookBaseUrl":
                                     "https://docs.example.org/ops.md#alerts"},
                                    "at '/metrics/prometheusRule/runbookBaseUrl': "
                                    "'https://docs.example.org/ops.md#alerts' does not match"),
    # (helm's validator reports a wrong path for propertyNames; the name is right.)
    "alert label not a Prometheus label": ({"metrics.prometheusRule.alertLabels.team-name": "x"},
                                           "invalid propertyName 'team-name'"),
    "overdue threshold of zero": ({"metrics.prometheusRule.uploadsOverdueHours": "0"},
                                  "at '/metrics/prometheusRule/uploadsOverdueHours': "
                                  "exclusiveMinimum: got 0, want 0"),
    "threshold as text": ({"metrics.prometheusRule.uploadsOverdueHours": "26h"},
                          "at '/metrics/prometheusRule/uploadsOverdueHours': got string, "
                          "want number"),
    "typo in prometheusRule": ({"metrics.prometheusRule.enable": "true"},
                               "at '/metrics/prometheusRule': additional properties 'enable' "
                               "not allowed"),
    "bad pod scrape interval": ({"metrics.podMonitor.interval": "often"},
                                "at '/metrics/podMonitor/interval': 'often' does not match"),
    # The gateway (docs/gateway.md): district servers must know whom to take a PROXY header
    # from, and shared mode needs the gateway it routes through.
    "gateway without proxyFrom": ({"gateway.enabled": "true"},
                                  "at '/gateway/proxyFrom': minItems: got 0, want 1"),
    "shared mode without the gateway": ({"districts.serviceMode": "shared"},
                                        "at '/gateway/enabled': value must be true"),
    "unknown service mode": ({"districts.serviceMode": "public"},
                             "at '/districts/serviceMode': value must be one of 'dedicated', "
                             "'shared'"),
    "proxyFrom not a CIDR": ({**GATEWAY, "gateway.proxyFrom[0]": "pods"},
                             "at '/gateway/proxyFrom/0': 'pods' does not match"),
    "typo in a gateway option": ({**GATEWAY, "gateway.options.maxSesions": "3"},
                                 "at '/gateway/options': additional properties 'maxSesions' "
                                 "not allowed"),
    "gateway overlap not a duration": ({**GATEWAY, "gateway.hostKeys.overlap": "1week"},
                                       "at '/gateway/hostKeys/overlap': '1week' does not match"),
    "gateway name not a DNS label": ({**GATEWAY, "gateway.name": "Gate_way"},
                                     "at '/gateway/name': 'Gate_way' does not match"),
    "gateway backend timeout of zero": ({**GATEWAY, "gateway.options.backendTimeout": "0"},
                                        "at '/gateway/options/backendTimeout': minimum: got 0, "
                                        "want 0.1"),
    "gateway rotation not a counter": ({**GATEWAY, "gateway.hostKeys.rotate": "next"},
                                       "at '/gateway/hostKeys/rotate': got string, want "
                                       "integer"),
    "gateway overlap of zero": ({**GATEWAY, "gateway.hostKeys.overlap": "0d"},
                                "at '/gateway/hostKeys/overlap': '0d' does not match"),
    "no gateway replicas": ({**GATEWAY, "gateway.replicas": "0"},
                            "at '/gateway/replicas': minimum: got 0, want 1"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_bad_values_are_refused(helm: Helm, case: str) -> None:
    values, message = REFUSED[case]
    result = helm.run("template", "ds", str(CHART), "--kube-version", "1.35.0",
                      *[a for k, v in values.items() for a in ("--set", f"{k}={v}")],
                      check=False)
    assert result.returncode != 0, f"{case}: accepted\n{result.stdout[:500]}"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr
    assert result.stdout == ""  # nothing rendered, so nothing could be applied


def test_service_monitor_without_its_service_is_refused(helm: Helm) -> None:
    result = helm.run("template", "ds", str(CHART), "--kube-version", "1.35.0",
                      "--set", "metrics.serviceMonitor.enabled=true",
                      "--set", "metrics.service.enabled=false", check=False)
    assert result.returncode != 0
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in result.stderr


def test_old_kubernetes_is_refused(helm: Helm) -> None:
    """Job pods carry batch.kubernetes.io/job-name from 1.27 on; the operator relies on it."""
    result = helm.run("template", "ds", str(CHART), "--kube-version", "1.26.9",
                      check=False)
    assert result.returncode != 0
    assert "chart requires kubeVersion: >=1.27.0-0" in result.stderr


@pytest.mark.parametrize(("values", "message"), [
    ({"gateway.enabled": "true"}, "gateway.enabled needs gateway.proxyFrom: the gateway pods' "
                                  "addresses as the district servers see them"),
    ({"districts.serviceMode": "shared"}, "districts.serviceMode shared needs gateway.enabled"),
])
def test_gateway_refusals_hold_without_the_schema(helm: Helm, values: dict[str, str],
                                                  message: str) -> None:
    """With schema validation skipped (helm --skip-schema-validation), the templates still
    refuse, with a message that says what to set."""
    result = helm.run("template", "ds", str(CHART), "--kube-version", "1.35.0",
                      "--skip-schema-validation",
                      *[a for k, v in values.items() for a in ("--set", f"{k}={v}")],
                      check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert result.stdout == ""
