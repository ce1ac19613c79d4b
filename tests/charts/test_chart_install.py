"""The chart installed into the real control plane, and its ServiceAccount put to work.

One `helm install` (no --wait: no kubelet runs here, so the operator pod stays Pending) serves
the module. The operator then runs as a local process with the chart's ServiceAccount token,
the Deployment's command and the Deployment's environment: what the pod would do, with exactly
the rights the chart grants. A District must come out reconciled (the RBAC is sufficient), and
`kubectl auth can-i` as that ServiceAccount shows it can do nothing beyond (least privilege).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from district_devtools.ports import free_port, wait_until
from district_operator import names

from tests.charts.conftest import (
    CHART,
    FULLNAME,
    RELEASE,
    RELEASE_NAMESPACE,
    Helm,
    Manifests,
    service_account_kubeconfig,
    set_args,
)
from tests.conftest import require_binary

pytestmark = pytest.mark.cluster
NORTH, SOUTH, ELSEWHERE = "chart-north", "chart-south", "chart-elsewhere"
SERVICE_ACCOUNT = f"system:serviceaccount:{RELEASE_NAMESPACE}:{FULLNAME}"
DISTRICT_IMAGE = "registry.invalid/district-sftp-data:chart-test"
VALUES = {
    "watch.namespaces[0]": NORTH,
    "watch.namespaces[1]": SOUTH,
    "peering.enabled": "true",
    "districts.image.repository": "registry.invalid/district-sftp-data",
    "districts.image.tag": "chart-test",
    "districts.server.resources.limits.memory": "300Mi",
    "operator.resyncSeconds": "5",
}
DISTRICT_CRD = f"{names.PLURAL}.{names.GROUP}"


def wait_for(predicate: Any, what: str, timeout: float = 60) -> Any:
    try:
        return wait_until(predicate, timeout, what, interval=0.3)
    except TimeoutError as exc:
        pytest.fail(str(exc))


@dataclass
class Release:
    cluster: Any
    rendered: Manifests

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
        result = self.cluster.kubectl(*args, check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def can(self, verb: str, resource: str, namespace: str | None) -> bool:
        scope = ["-n", namespace] if namespace else ["--all-namespaces"]
        result = self.cluster.kubectl("auth", "can-i", verb, resource, *scope,
                                      "--as", SERVICE_ACCOUNT, check=False)
        assert result.stdout.strip() in ("yes", "no"), result.stderr
        return result.stdout.strip() == "yes"


def adopt_existing_crd(cluster: Any) -> None:
    """Let Helm take over a District CRD that other tests applied with kubectl (the same
    procedure docs/helm.md gives for clusters where the CRD was installed by hand)."""
    if cluster.kubectl("get", "crd", DISTRICT_CRD, check=False).returncode != 0:
        return
    cluster.kubectl("label", "crd", DISTRICT_CRD, "--overwrite",
                    "app.kubernetes.io/managed-by=Helm")
    cluster.kubectl("annotate", "crd", DISTRICT_CRD, "--overwrite",
                    f"meta.helm.sh/release-name={RELEASE}",
                    f"meta.helm.sh/release-namespace={RELEASE_NAMESPACE}")


@pytest.fixture(scope="module")
def release(cluster: Any, helm: Helm) -> Iterator[Release]:
    for namespace in (RELEASE_NAMESPACE, NORTH, SOUTH, ELSEWHERE):
        cluster.kubectl("create", "namespace", namespace)
    adopt_existing_crd(cluster)
    helm.run("install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
             *set_args(VALUES), kubeconfig=cluster.kubeconfig)
    try:
        yield Release(cluster, helm.template(VALUES))
    finally:
        helm.run("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE,
                 kubeconfig=cluster.kubeconfig, check=False)
        for namespace in (RELEASE_NAMESPACE, NORTH, SOUTH, ELSEWHERE):
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_release_installs_every_object(release: Release) -> None:
    deployment = release.get("deployment", FULLNAME, RELEASE_NAMESPACE)
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == FULLNAME
    for kind, name in [("serviceaccount", FULLNAME), ("poddisruptionbudget", FULLNAME),
                       ("service", f"{FULLNAME}-metrics")]:
        assert release.get(kind, name, RELEASE_NAMESPACE) is not None, kind
    for namespace in (NORTH, SOUTH):
        assert release.get("role", FULLNAME, namespace) is not None
        assert release.get("rolebinding", FULLNAME, namespace) is not None
        # The post-install hook created the peering object kopf keeps its heartbeats in.
        assert release.get("kopfpeerings.kopf.dev", FULLNAME, namespace) is not None
    for namespace in (ELSEWHERE, RELEASE_NAMESPACE):
        assert release.get("role", FULLNAME, namespace) is None
    assert release.get("clusterrole", FULLNAME) is not None
    crd = release.get("crd", DISTRICT_CRD)
    assert crd is not None
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE


# ---- the operator with the chart's credentials -----------------------------------------------



@pytest.fixture(scope="module")
def operator(release: Release, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    """The Deployment's command with the Deployment's environment, as a local process."""
    directory = tmp_path_factory.mktemp("chart-operator")
    kubeconfig = service_account_kubeconfig(release.cluster, directory / "kubeconfig",
                                            FULLNAME, RELEASE_NAMESPACE)
    container = release.rendered.container()
    health_port = free_port()
    env = {**os.environ, **release.rendered.env(), "KUBECONFIG": str(kubeconfig),
           "PYTHONUNBUFFERED": "1",
           # Free ports instead of the pod's own (other operators may run on this machine).
           "DISTRICT_OPERATOR_METRICS_PORT": str(free_port()),
           "DISTRICT_OPERATOR_HEALTH_PORT": str(health_port)}
    command = [*container["command"], *container["args"]]
    if shutil.which(command[0]) is None:
        command = [sys.executable, "-m", "district_operator.cli", *command[1:]]
    log_path = directory / "operator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield process, log_path, health_port
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def ssh_public_key(directory: Path) -> str:
    key = directory / "id_ed25519"
    subprocess.run([require_binary("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C",
                    "it@chart.example", "-f", str(key)], check=True)
    return Path(f"{key}.pub").read_text().strip()


def apply(release: Release, manifest: dict[str, Any]) -> None:
    release.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def reconciled(release: Release, namespace: str, name: str) -> dict[str, Any] | None:
    body = release.get(names.PLURAL, name, namespace)
    status = (body or {}).get("status") or {}
    if body and status.get("observedGeneration") == body["metadata"]["generation"]:
        return body
    return None


def finish_job_like_a_kubelet(release: Release, namespace: str, cronjob: str, job: str,
                              result: dict[str, Any]) -> None:
    """Start a Job from the CronJob's template (as the CronJob controller would) and end its
    pod with `result` as termination message through the pod status subresource (as a kubelet
    would; none runs here). The real job controller marks the Job complete."""
    template = release.get("cronjob", cronjob, namespace)
    assert template is not None
    spec = template["spec"]["jobTemplate"]
    apply(release, {"apiVersion": "batch/v1", "kind": "Job",
                    "metadata": {"name": job, "namespace": namespace,
                                 "labels": spec["metadata"]["labels"]},
                    "spec": spec["spec"]})

    def pod() -> str:
        return release.cluster.kubectl(
            "get", "pods", "-n", namespace, "-l", f"{names.LABEL_JOB_NAME}={job}",
            "-o", "jsonpath={.items[0].metadata.name}", check=False).stdout

    pod_name = wait_for(pod, f"the job controller to create a pod for {job}")
    release.cluster.kubectl("-n", namespace, "patch", "pod", pod_name, "--subresource=status",
                            "--type=merge", "-p", json.dumps({"status": {
                                "phase": "Succeeded", "containerStatuses": [{
                                    "name": names.JOB_EPOCHS, "image": DISTRICT_IMAGE,
                                    "imageID": "", "ready": False, "restartCount": 0,
                                    "state": {"terminated": {
                                        "exitCode": 0, "reason": "Completed",
                                        "message": json.dumps(result),
                                        "startedAt": "2026-11-28T02:00:00Z",
                                        "finishedAt": "2026-11-28T02:01:00Z"}}}]}}))


def test_operator_with_the_charts_credentials_reconciles(
        release: Release, operator: tuple[subprocess.Popen[bytes], Path, int],
        tmp_path: Path) -> None:
    process, log_path, health_port = operator

    def log() -> str:
        return log_path.read_text(errors="replace")[-6000:]

    key = ssh_public_key(tmp_path)
    apply(release, {"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "lincoln-db", "namespace": NORTH},
                    "stringData": {"uri": "postgresql://lincoln@db.invalid/lincoln"}})
    for namespace, name in ((NORTH, "lincoln"), (SOUTH, "jackson")):
        spec: dict[str, Any] = {"authorizedKeys": [key]}
        if namespace == NORTH:
            spec["backups"] = {"databaseSecretRef": {"name": "lincoln-db"}}
        apply(release, {"apiVersion": names.API_VERSION, "kind": names.KIND,
                        "metadata": {"name": name, "namespace": namespace}, "spec": spec})

    for namespace, name in ((NORTH, "lincoln"), (SOUTH, "jackson")):
        body = wait_for(lambda ns=namespace, n=name: (
            process.poll() is None or pytest.fail(f"the operator exited:\n{log()}"))
            and reconciled(release, ns, n), f"District {namespace}/{name} reconciled")
        conditions = {c["type"]: c for c in body["status"]["conditions"]}
        assert conditions["KeysValid"]["status"] == "True"
        assert {"Ready", "StorageReady", "ServerReady"} <= set(conditions)
        assert body["status"]["hostKeys"]

    # Every child exists, built with the image and resources the chart passed on.
    for kind, name in [("secret", "lincoln-host-keys"), ("secret", "lincoln-authorized-keys"),
                       ("pvc", "lincoln-data"), ("service", "lincoln-sftp"),
                       ("networkpolicy", "lincoln-sftpd"), ("cronjob", "lincoln-epochs"),
                       ("cronjob", "lincoln-retention"), ("cronjob", "lincoln-backup")]:
        assert release.get(kind, name, NORTH) is not None, f"{kind} {name}"
    server = release.get("deployment", "lincoln-sftpd", NORTH)
    assert server is not None
    container = server["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == DISTRICT_IMAGE
    assert container["resources"]["limits"]["memory"] == "300Mi"

    # kopf's liveness endpoint answers where the chart's probe looks.
    probe = release.rendered.container()["livenessProbe"]["httpGet"]["path"]
    with urllib.request.urlopen(f"http://127.0.0.1:{health_port}{probe}", timeout=5) as rsp:
        assert rsp.status == 200

    # Peering: this replica announces itself in the namespace's KopfPeering.
    def peers() -> dict[str, Any]:
        peering = release.get("kopfpeerings.kopf.dev", FULLNAME, NORTH) or {}
        return dict(peering.get("status") or {})

    assert wait_for(peers, "a heartbeat in the KopfPeering")

    # A finished Job: its pods are listed, its result lands in the status, the Job annotated.
    epochs = {"kind": "epochs", "outcome": "Succeeded", "message": "1 processed",
              "processed": [{"name": "2026-11-28T0200Z", "outcome": "Succeeded",
                             "format": "oneroster", "processedAt": "2026-11-28T02:10:00Z",
                             "rows": 3, "errors": 0}], "unrecognized": [], "pending": []}
    finish_job_like_a_kubelet(release, NORTH, "lincoln-epochs", "lincoln-epochs-1", epochs)
    wait_for(lambda: names.ANNOTATION_RESULT_RECORDED in (
        (release.get("job", "lincoln-epochs-1", NORTH) or {}).get("metadata", {})
        .get("annotations") or {}), "the job's result recorded")
    body = release.get(names.PLURAL, "lincoln", NORTH)
    assert body is not None
    assert body["status"]["lastEpoch"]["name"] == "2026-11-28T0200Z"

    # Turning backups off deletes their CronJob.
    apply(release, {"apiVersion": names.API_VERSION, "kind": names.KIND,
                    "metadata": {"name": "lincoln", "namespace": NORTH},
                    "spec": {"authorizedKeys": [key]}})
    wait_for(lambda: release.get("cronjob", "lincoln-backup", NORTH) is None,
             "the backup CronJob deleted")

    time.sleep(1)
    assert process.poll() is None, log()
    for refusal in ("Forbidden", "forbidden", " 403"):
        assert refusal not in log(), log()


def test_a_district_in_an_unwatched_namespace_is_left_alone(release: Release) -> None:
    apply(release, {"apiVersion": names.API_VERSION, "kind": names.KIND,
                    "metadata": {"name": "ignored", "namespace": ELSEWHERE},
                    "spec": {"authorizedKeys": [
                        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINzdmVxOZfojVuZlP43haO0M"
                        "LMrCWjfq6GUob3Hg22Ly it@elsewhere.example"]}})
    time.sleep(3)
    assert release.get("secret", "ignored-host-keys", ELSEWHERE) is None
    body = release.get(names.PLURAL, "ignored", ELSEWHERE)
    assert body is not None and not body.get("status")


# ---- least privilege ------------------------------------------------------------------------

ALLOWED = [
    ("get", "secrets", NORTH), ("create", "secrets", SOUTH), ("patch", "deployments.apps", NORTH),
    ("delete", "cronjobs.batch", NORTH), ("patch", "districts.districtsftp.io/status", SOUTH),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("patch", f"kopfpeerings.kopf.dev/{FULLNAME}", NORTH),
]
REFUSED = [
    # Nothing at all in namespaces it does not serve, its own included.
    ("get", "secrets", ELSEWHERE), ("list", "secrets", ELSEWHERE),
    ("get", "secrets", RELEASE_NAMESPACE), ("get", "secrets", "kube-system"),
    ("list", "secrets", None), ("list", "districts.districtsftp.io", None),
    ("create", "deployments.apps", ELSEWHERE), ("list", "districts.districtsftp.io", ELSEWHERE),
    ("create", "events", ELSEWHERE),
    # Where it serves: never delete what holds data, never run pods or read what is not its.
    ("delete", "persistentvolumeclaims", NORTH), ("delete", "secrets", NORTH),
    ("delete", "districts.districtsftp.io", NORTH), ("delete", "deployments.apps", NORTH),
    ("update", "secrets", NORTH), ("create", "pods", NORTH), ("get", "pods", NORTH),
    ("create", "pods/exec", NORTH), ("get", "configmaps", NORTH),
    ("create", "serviceaccounts/token", NORTH),
    ("create", "roles.rbac.authorization.k8s.io", NORTH),
    ("create", "rolebindings.rbac.authorization.k8s.io", NORTH), ("create", "jobs.batch", NORTH),
    ("create", "ingresses.networking.k8s.io", NORTH),
    ("patch", "kopfpeerings.kopf.dev/someone-else", NORTH),
    # Cluster-wide: no writes to the API itself, no nodes, no impersonation.
    ("create", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("get", "nodes", None), ("create", "namespaces", None),
    ("impersonate", "serviceaccounts", None), ("escalate", "clusterroles", None),
]


def test_service_account_has_the_rights_it_uses(release: Release) -> None:
    denied = [c for c in ALLOWED if not release.can(*c)]
    assert denied == []


def test_service_account_has_no_right_beyond_them(release: Release) -> None:
    granted = [c for c in REFUSED if release.can(*c)]
    assert granted == []


def test_token_is_the_service_accounts(release: Release, tmp_path: Path) -> None:
    """The kubeconfig the operator ran with really is the ServiceAccount, not the admin."""
    kubeconfig = service_account_kubeconfig(release.cluster, tmp_path / "kubeconfig",
                                            FULLNAME, RELEASE_NAMESPACE)
    whoami = subprocess.run([str(release.cluster.bin_dir / "kubectl"), "--kubeconfig",
                             str(kubeconfig), "auth", "whoami", "-o", "json"],
                            capture_output=True, text=True, check=True)
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == SERVICE_ACCOUNT
    refused = subprocess.run([str(release.cluster.bin_dir / "kubectl"), "--kubeconfig",
                              str(kubeconfig), "get", "secrets", "-n", ELSEWHERE],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "forbidden" in refused.stderr
