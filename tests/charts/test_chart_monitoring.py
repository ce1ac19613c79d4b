"""The chart's alert rules, PodMonitor and dashboard: checked and unit-tested with promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from district_operator import names

from tests.charts.conftest import CHART, FULLNAME, RELEASE_NAMESPACE, REPO, Helm, Manifests

HERE = Path(__file__).resolve().parent
MONITORING = {"metrics.prometheusRule.enabled": "true", "metrics.podMonitor.enabled": "true",
              "metrics.serviceMonitor.enabled": "true", "metrics.dashboard.enabled": "true"}
DASHBOARD = CHART / "files" / "dashboards" / "district-sftp.json"
# Grafana's variables, replaced by values of the same kind so promtool can parse the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
                     "$namespace": ".*", "$district": ".*"}


# The shared SSH gateway installed too: its three alerts join the rules.
GATEWAY = {**MONITORING, "gateway.enabled": "true", "gateway.proxyFrom[0]": "10.244.0.0/16"}
GATEWAY_ALERTS = {"DistrictGatewayDown", "DistrictGatewayBackendFailures",
                  "DistrictGatewayRoutesRefused"}


@pytest.fixture(scope="module")
def rendered(helm: Helm) -> Manifests:
    return helm.template(MONITORING)


@pytest.fixture(scope="module")
def gateway_rendered(helm: Helm) -> Manifests:
    return helm.template(GATEWAY)


def rule_groups(docs: Manifests) -> dict[str, Any]:
    rule = docs.one("PrometheusRule")
    assert rule["metadata"]["namespace"] == RELEASE_NAMESPACE
    groups: dict[str, Any] = rule["spec"]
    return groups


def alerts(docs: Manifests) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rule_groups(docs)["groups"] for r in g["rules"] if "alert" in r}


def promtool_run(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_rendered_rules_pass_promtool_check(rendered: Manifests, promtool: Path,
                                            tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(rendered)))
    result = promtool_run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_every_alert_fires_on_its_series_and_only_on_them(rendered: Manifests, promtool: Path,
                                                          tmp_path: Path) -> None:
    """`promtool test rules` on tests/charts/alerts_test.yaml: firing and quiet cases each."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(rendered)))
    shutil.copy(HERE / "alerts_test.yaml", tmp_path)
    result = promtool_run(promtool, "test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_promtool_tests_cover_every_alert_both_ways(rendered: Manifests) -> None:
    """Each alert is expected to fire somewhere and expected quiet somewhere else."""
    spec = yaml.safe_load((HERE / "alerts_test.yaml").read_text())
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in spec["tests"]:
        for case in test["alert_rule_test"]:
            (fires if case["exp_alerts"] else quiet).add(case["alertname"])
            for alert in case["exp_alerts"]:
                # promtool compares annotations too: the templates render as written.
                assert set(alert["exp_annotations"]) == {"summary", "description",
                                                         "runbook_url"}
    names_ = set(alerts(rendered))
    assert fires == names_
    # DistrictJobFailed's quiet cases are the other CronJobs in its firing test (a later run
    # completed, still running, not a District's): its expected list names only two of five.
    assert quiet | {"DistrictJobFailed"} == names_


def test_the_gateway_alerts_come_with_the_gateway_and_pass_promtool(
        rendered: Manifests, gateway_rendered: Manifests, promtool: Path,
        tmp_path: Path) -> None:
    """gateway.enabled adds DistrictGatewayDown, ...BackendFailures and ...RoutesRefused
    (none without it); `promtool test rules` on tests/charts/gateway_alerts_test.yaml fires
    each and keeps each quiet somewhere."""
    assert not set(alerts(rendered)) & GATEWAY_ALERTS
    assert set(alerts(gateway_rendered)) - set(alerts(rendered)) == GATEWAY_ALERTS
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(gateway_rendered)))
    checked = promtool_run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0 and "SUCCESS: 12 rules found" in checked.stdout, \
        checked.stdout + checked.stderr
    shutil.copy(HERE / "gateway_alerts_test.yaml", tmp_path)
    result = promtool_run(promtool, "test", "rules", "gateway_alerts_test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    spec = yaml.safe_load((HERE / "gateway_alerts_test.yaml").read_text())
    cases = [c for t in spec["tests"] for c in t["alert_rule_test"]]
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == GATEWAY_ALERTS
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == GATEWAY_ALERTS


def test_the_gateway_alerts_read_the_gateway_job_and_thresholds(helm: Helm) -> None:
    rules = alerts(helm.template({**GATEWAY, "metrics.prometheusRule.gatewayJob": "my-gw",
                                  "metrics.prometheusRule.gatewayDownFor": "2m",
                                  "metrics.prometheusRule.gatewayBackendFailuresPer10m": "4"}))
    assert all('job="my-gw"' in rules[name]["expr"] for name in GATEWAY_ALERTS)
    assert rules["DistrictGatewayDown"]["for"] == "2m"
    assert "> 4" in rules["DistrictGatewayBackendFailures"]["expr"]
    refused = helm.run("template", "ds", str(CHART), "--kube-version", "1.35.0",
                       *[a for k, v in {**GATEWAY, "metrics.podMonitor.enabled": "false",
                                        "metrics.prometheusRule.districtJob": "d"}.items()
                         for a in ("--set", f"{k}={v}")], check=False)
    assert refused.returncode != 0
    assert "with gateway.enabled needs metrics.podMonitor.enabled" in refused.stderr


def test_every_alert_links_its_runbook_section(gateway_rendered: Manifests, helm: Helm) -> None:
    operations = (REPO / "docs" / "operations.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", operations, re.M)}
    for name, rule in alerts(gateway_rendered).items():
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["runbook_url"] == f"docs/operations.md#{name.lower()}"
        assert name.lower() in anchors, f"docs/operations.md has no section for {name}"
    published = helm.template({**GATEWAY, "metrics.prometheusRule.runbookBaseUrl":
                               "https://docs.example.org/district-sftp/operations"})
    for name, rule in alerts(published).items():
        assert rule["annotations"]["runbook_url"] == \
            f"https://docs.example.org/district-sftp/operations#{name.lower()}"


def test_thresholds_and_extra_labels_come_from_values(helm: Helm) -> None:
    docs = helm.template({**MONITORING, "metrics.prometheusRule.uploadsOverdueHours": "50",
                          "metrics.prometheusRule.loginFailuresPer10m": "7",
                          "metrics.prometheusRule.alertLabels.severity": "page",
                          "metrics.prometheusRule.districtJob": "my-sftpd-scrape",
                          "metrics.prometheusRule.labels.release": "prometheus"})
    rules = alerts(docs)
    assert "> 50 * 3600" in rules["DistrictUploadsOverdue"]["expr"]
    assert "> 7" in rules["DistrictLoginFailureBurst"]["expr"]
    assert 'job="my-sftpd-scrape"' in rules["DistrictUploadsOverdue"]["expr"]
    assert all(r["labels"] == {"severity": "page"} for r in rules.values())
    assert docs.one("PrometheusRule")["metadata"]["labels"]["release"] == "prometheus"


@pytest.mark.parametrize(("values", "message"), [
    ({"metrics.prometheusRule.enabled": "true", "metrics.serviceMonitor.enabled": "true"},
     "metrics.prometheusRule needs metrics.podMonitor.enabled"),
    ({"metrics.prometheusRule.enabled": "true", "metrics.podMonitor.enabled": "true"},
     "metrics.prometheusRule needs metrics.serviceMonitor.enabled"),
])
def test_rules_without_a_scrape_job_are_refused(helm: Helm, values: dict[str, str],
                                                message: str) -> None:
    result = helm.run("template", "ds", str(CHART), "--kube-version", "1.35.0",
                      *[a for k, v in values.items() for a in ("--set", f"{k}={v}")],
                      check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_monitoring_is_off_by_default(helm: Helm) -> None:
    kinds = helm.template().kinds()
    assert not kinds & {"PrometheusRule", "PodMonitor", "ServiceMonitor"}
    assert not [d for d in helm.template().of_kind("ConfigMap")
                if d["metadata"]["name"].endswith("-dashboard")]


@pytest.mark.parametrize(("values", "scope"), [
    ({}, {"matchNames": [RELEASE_NAMESPACE]}),
    ({"watch.namespaces[0]": "north", "watch.namespaces[1]": "south"},
     {"matchNames": ["north", "south"]}),
    ({"watch.allNamespaces": "true"}, {"any": True}),
])
def test_pod_monitor_scrapes_the_district_servers_where_the_operator_serves(
        helm: Helm, values: dict[str, str], scope: dict[str, Any]) -> None:
    docs = helm.template({"metrics.podMonitor.enabled": "true", **values})
    monitor = docs.one("PodMonitor")
    assert monitor["metadata"]["name"] == f"{FULLNAME}-districts"
    assert monitor["spec"]["namespaceSelector"] == scope
    # The selector picks what the operator labels its server pods with: no other pod.
    selector = monitor["spec"]["selector"]["matchLabels"]
    server_pod = names.labels("lincoln", names.COMPONENT_SERVER)
    assert selector.items() <= server_pod.items()
    for job in names.JOBS:
        assert not selector.items() <= names.labels("lincoln", job).items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == names.PORT_NAME_METRICS
    (relabel,) = endpoint["relabelings"]
    # Prometheus' name of the pod label districtsftp.io/district.
    assert relabel["sourceLabels"] == [
        "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", names.LABEL_DISTRICT)]
    assert relabel["targetLabel"] == "district"


def dashboard_from(docs: Manifests) -> dict[str, Any]:
    (config_map,) = [d for d in docs.of_kind("ConfigMap")
                     if d["metadata"]["name"] == f"{FULLNAME}-dashboard"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard: dict[str, Any] = json.loads(config_map["data"]["district-sftp.json"])
    return dashboard


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_config_map_holds_a_valid_dashboard(rendered: Manifests) -> None:
    dashboard = dashboard_from(rendered)
    assert dashboard == json.loads(DASHBOARD.read_text())
    schema = json.loads((HERE / "grafana_dashboard.schema.json").read_text())
    jsonschema.validate(dashboard, schema)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for title, expr in panel_queries(dashboard):
        used = set(re.findall(r"\$(\w+)", expr)) - {"__rate_interval", "__interval", "__range"}
        assert used <= variables, (title, used)


def test_dashboard_schema_refuses_what_grafana_would_not_load() -> None:
    schema = json.loads((HERE / "grafana_dashboard.schema.json").read_text())
    good = json.loads(DASHBOARD.read_text())
    broken_panel = json.loads(DASHBOARD.read_text())
    del broken_panel["panels"][1]["targets"][0]["expr"]
    too_wide = json.loads(DASHBOARD.read_text())
    too_wide["panels"][1]["gridPos"]["w"] = 30
    fixed_source = json.loads(DASHBOARD.read_text())
    fixed_source["panels"][1]["datasource"] = {"type": "prometheus", "uid": "prod-prometheus"}
    jsonschema.validate(good, schema)
    for bad in (broken_panel, too_wide, fixed_source):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_every_dashboard_query_parses(promtool: Path, tmp_path: Path) -> None:
    """Each panel's PromQL, its Grafana variables filled in, checked by promtool as a rule."""
    queries = panel_queries(json.loads(DASHBOARD.read_text()))
    rules = []
    for i, (_, expr) in enumerate(queries):
        for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
            expr = expr.replace(variable, GRAFANA_VARIABLES[variable])
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:panel_query_{i}", "expr": expr})
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool_run(promtool, "check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_every_metric_the_rules_and_dashboard_read_is_exported(
        gateway_rendered: Manifests) -> None:
    """sftpd_*, sftpd_gateway_* and district_operator_* names as the real exporters write
    them, not as typed (the rules with the gateway's)."""
    import prometheus_client
    from district_operator import metrics as operator_metrics

    from sftpd.gateway import metrics as gateway_metrics
    from sftpd.server import audit  # noqa: F401 - registers the server's metrics
    from sftpd.server import metrics as sftpd_metrics

    registry = sftpd_metrics.Registry()
    registry.metrics = sftpd_metrics.REGISTRY.metrics
    tree = sftpd_metrics.tree_collector(REPO / "no-such-root")
    exported = set(re.findall(r"^# TYPE (\S+)", registry.render(tree()).decode(), re.M))
    exported |= set(re.findall(r"^# TYPE (\S+)", gateway_metrics.REGISTRY.render().decode(),
                               re.M))
    # The operator's families, with the sample names their types give (labelled ones have no
    # samples until first used), and the names its module spells for collectors it registers
    # only once it runs.
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    exported |= {family.name + suffix for family in prometheus_client.REGISTRY.collect()
                 for suffix in suffixes.get(family.type, [""])}
    exported |= set(re.findall(r'"(district_operator_[a-z_]+)"',
                               Path(operator_metrics.__file__).read_text()))
    text = json.dumps(rule_groups(gateway_rendered)) + DASHBOARD.read_text()
    used = set(re.findall(r"\b((?:sftpd|district_operator)_[a-z_]+)", text))
    assert used, "no metric names found"
    assert used <= exported, used - exported
