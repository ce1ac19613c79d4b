"""The operator on the real control plane: apply, update, drift, delete, bad input, jobs, resync.

One operator process (a real `district-operator run`) serves the whole module; each test works on
Districts of its own, and the last one checks that a resync of all of them writes nothing.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from district_operator import api, builders, drift, names
from district_operator.model import parse_district

from tests.conftest import require_binary
from tests.district_operator.conftest import (
    RESYNC_SECONDS,
    TEST_IMAGE,
    OperatorProcess,
    apply_yaml,
    condition,
    district_manifest,
    finish_job,
    make_namespace,
    settled,
    wait_for,
)
from tests.district_operator.test_notifications import Hook

pytestmark = pytest.mark.cluster
NS = "operator-e2e"
CHILD_KINDS = ("Secret", "PersistentVolumeClaim", "Deployment", "Service", "NetworkPolicy",
               "CronJob")


@pytest.fixture(scope="module")
def namespace(crd: Any) -> Iterator[str]:
    yield make_namespace(crd, NS)
    crd.kubectl("delete", "namespace", NS, "--wait=false")


@pytest.fixture(scope="module")
def operator(namespace: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    process = OperatorProcess(namespace, tmp_path_factory.mktemp("operator") / "operator.log")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client_keys(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three real client public keys from ssh-keygen."""
    directory = tmp_path_factory.mktemp("client-keys")
    lines = []
    for n in range(3):
        path = directory / f"id{n}"
        subprocess.run([require_binary("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C",
                        f"it{n}@district.example", "-f", str(path)], check=True)
        lines.append(Path(f"{path}.pub").read_text().strip())
    return lines


def secret(crd: Any, name: str, **data: str) -> None:
    apply_yaml(crd, {"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": name, "namespace": NS},
                     "stringData": data})


def secret_text(kube: api.Kube, name: str, key: str) -> str:
    body = kube.get("Secret", NS, name)
    assert body is not None, f"Secret {name} is missing"
    return base64.b64decode(body["data"][key]).decode()


def wait_settled(kube: api.Kube, name: str, timeout: float = 30) -> dict[str, Any]:
    return wait_for(lambda: settled(kube, NS, name), timeout=timeout,  # type: ignore[no-any-return]
                    what=f"District {name} to be reconciled")


def wait_condition(kube: api.Kube, name: str, kind: str, status: str, reason: str | None = None,
                   timeout: float = 30) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = kube.get(names.KIND, NS, name)
        for c in (body or {}).get("status", {}).get("conditions", []):
            if c["type"] == kind and c["status"] == status and reason in (None, c["reason"]):
                return body
        return None
    return wait_for(check, timeout=timeout,  # type: ignore[no-any-return]
                    what=f"{name}: {kind}={status} ({reason})")


def events(kube: api.Kube, district: str) -> list[dict[str, Any]]:
    return [e for e in kube.list("Event", NS)
            if e["involvedObject"].get("name") == district
            and e["involvedObject"].get("kind") == names.KIND]


def test_apply_creates_every_child_and_the_conditions(crd: Any, kube: api.Kube,
                                                      operator: OperatorProcess,
                                                      client_keys: list[str]) -> None:
    secret(crd, "lincoln-db", uri="postgresql://lincoln@db.example/lincoln")
    apply_yaml(crd, district_manifest(
        "lincoln", NS, authorizedKeys=[client_keys[0]],
        allowedSourceRanges=["203.0.113.0/24"], service={"type": "ClusterIP", "port": 2022},
        processing={"databaseSecretRef": {"name": "lincoln-db"}},
        backups={"databaseSecretRef": {"name": "lincoln-db"}}))
    body = wait_settled(kube, "lincoln")
    district = parse_district(body)
    expected = builders.desired_children(district, builders.BuildInputs(image=TEST_IMAGE),
                                         client_keys[0] + "\n")
    assert len(expected) == 8
    for manifest in expected:
        live = kube.get(manifest["kind"], NS, manifest["metadata"]["name"])
        assert live is not None, f"{manifest['kind']} {manifest['metadata']['name']} missing"
        # Every field the builder sets is live as built (the server adds only defaults).
        assert drift.contains(manifest, live), manifest["metadata"]["name"]
        assert "district-sftp" in {m["manager"] for m in live["metadata"]["managedFields"]}
    pvc = kube.get("PersistentVolumeClaim", NS, "lincoln-data")
    assert pvc is not None and "ownerReferences" not in pvc["metadata"]  # Retain by default
    assert secret_text(kube, "lincoln-authorized-keys", "authorized_keys") == \
        client_keys[0] + "\n"

    status = body["status"]
    assert condition(body, "KeysValid")["status"] == "True"
    assert condition(body, "StorageReady")["reason"] == "Pending"  # no volume provisioner here
    assert condition(body, "ServerReady")["status"] == "False"  # no kubelet: the pod is Pending
    assert condition(body, "Ready")["status"] == "False"
    assert condition(body, "ProcessingHealthy")["reason"] == "NoRunYet"
    assert condition(body, "BackupsHealthy")["reason"] == "NoRunYet"
    assert condition(body, "UploadsNeedAttention")["status"] == "False"
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])
    assert status["endpoint"] == {"host": f"lincoln-sftp.{NS}.svc", "port": 2022,
                                  "user": "lincoln", "mode": "dedicated"}
    for host_key in status["hostKeys"]:
        public = secret_text(kube, "lincoln-host-keys",
                             names.HOST_KEY_FILES[host_key["type"]] + ".pub")
        assert host_key["fingerprint"] == subprocess.run(
            [require_binary("ssh-keygen"), "-lf", "-"], input=public, capture_output=True,
            text=True, check=True).stdout.split()[1]
        assert f"[lincoln-sftp.{NS}.svc]:2022 {public.strip()}" in status["knownHosts"]
    assert [k["type"] for k in status["hostKeys"]] == ["ssh-ed25519", "ssh-rsa"]


def test_update_changes_children_but_never_the_host_keys(crd: Any, kube: api.Kube,
                                                         operator: OperatorProcess,
                                                         client_keys: list[str]) -> None:
    apply_yaml(crd, {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                     "metadata": {"name": "expandable"},
                     "provisioner": "example.invalid/no-provisioner",
                     "allowVolumeExpansion": True})
    apply_yaml(crd, district_manifest(
        "adams", NS, authorizedKeys=client_keys[:2], processing={"schedule": "*/10 * * * *"},
        storage={"size": "1Gi", "storageClassName": "expandable"}))
    wait_settled(kube, "adams")
    host_keys_before = kube.get("Secret", NS, "adams-host-keys")
    assert host_keys_before is not None
    # No volume provisioner runs here: bind the claim the way the PV controller would, through
    # its status subresource, so the API server allows it to grow.
    crd.kubectl("-n", NS, "patch", "pvc", "adams-data", "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": {"phase": "Bound", "capacity": {"storage": "1Gi"},
                                             "accessModes": ["ReadWriteOnce"]}}))
    wait_condition(kube, "adams", "StorageReady", "True", "Bound")

    crd.kubectl("-n", NS, "patch", "district", "adams", "--type=merge", "-p", json.dumps({
        "spec": {"authorizedKeys": [client_keys[1], client_keys[2]],
                 "processing": {"schedule": "*/7 * * * *"}, "storage": {"size": "2Gi"}}}))
    wait_for(lambda: (settled(kube, NS, "adams") or {}).get("metadata", {}).get("generation")
             == 2, what="generation 2 reconciled")
    assert secret_text(kube, "adams-authorized-keys", "authorized_keys") == \
        f"{client_keys[1]}\n{client_keys[2]}\n"
    cronjob = kube.get("CronJob", NS, "adams-epochs")
    assert cronjob is not None and cronjob["spec"]["schedule"] == "*/7 * * * *"
    pvc = kube.get("PersistentVolumeClaim", NS, "adams-data")
    assert pvc is not None and pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    host_keys_after = kube.get("Secret", NS, "adams-host-keys")
    assert host_keys_after is not None
    assert host_keys_after["metadata"]["uid"] == host_keys_before["metadata"]["uid"]
    assert host_keys_after["metadata"]["resourceVersion"] == \
        host_keys_before["metadata"]["resourceVersion"]
    assert host_keys_after["data"] == host_keys_before["data"]

    refused = crd.kubectl("-n", NS, "patch", "district", "adams", "--type=merge", "-p",
                          json.dumps({"spec": {"storage": {"size": "1Gi"}}}), check=False)
    assert refused.returncode != 0
    assert "cannot shrink" in refused.stderr
    body = kube.get(names.KIND, NS, "adams")
    assert body is not None and body["spec"]["storage"]["size"] == "2Gi"


def test_a_keys_change_touches_the_server_pods(crd: Any, kube: api.Kube,
                                              operator: OperatorProcess,
                                              client_keys: list[str]) -> None:
    """The kubelet rewrites a Secret volume on its periodic pod sync (up to a minute) unless
    the pod changes: after the authorized-keys Secret changed, the server's pods carry its new
    revision, so a new key is served within seconds (and, behind the gateway, not refused and
    counted towards a ban meanwhile)."""
    apply_yaml(crd, district_manifest("hale", NS, authorizedKeys=[client_keys[0]]))
    wait_settled(kube, "hale")
    selector = ",".join(f"{k}={v}" for k, v in names.server_selector("hale").items())
    # The Deployment and ReplicaSet controllers are real: the pod exists (unscheduled here).
    [pod] = wait_for(lambda: kube.list("Pod", NS, selector) or None, timeout=60,
                     what="the server's pod")
    crd.kubectl("-n", NS, "patch", "district", "hale", "--type=merge", "-p", json.dumps({
        "spec": {"authorizedKeys": [client_keys[0], client_keys[1]]}}))

    def revision() -> str | None:
        body = kube.get("Secret", NS, names.authorized_keys_secret("hale")) or {}
        wanted = (body.get("metadata", {}).get("annotations") or {}).get(
            names.ANNOTATION_APPLIED_HASH)
        live = kube.get("Pod", NS, pod["metadata"]["name"]) or {}
        seen = (live.get("metadata", {}).get("annotations") or {}).get(
            names.ANNOTATION_KEYS_REVISION)
        return seen if seen and seen == wanted else None

    wait_for(revision, timeout=30, what="the server pod touched with the keys' revision")
    assert secret_text(kube, "hale-authorized-keys", "authorized_keys") == \
        f"{client_keys[0]}\n{client_keys[1]}\n"
    # The pod itself was not replaced: no restart, only its volume refreshed.
    [after] = kube.list("Pod", NS, selector)
    assert after["metadata"]["uid"] == pod["metadata"]["uid"]


def test_drift_is_restored(crd: Any, kube: api.Kube, operator: OperatorProcess,
                           client_keys: list[str]) -> None:
    apply_yaml(crd, district_manifest("carver", NS, authorizedKeys=[client_keys[0]]))
    wait_settled(kube, "carver")
    service = kube.get("Service", NS, "carver-sftp")
    assert service is not None
    crd.kubectl("-n", NS, "delete", "service", "carver-sftp")
    restored = wait_for(lambda: (s := kube.get("Service", NS, "carver-sftp")) and
                        s["metadata"]["uid"] != service["metadata"]["uid"] and s,
                        what="the deleted Service to come back")
    assert restored["spec"]["ports"][0]["targetPort"] == "ssh"

    crd.kubectl("-n", NS, "set", "image", "deployment/carver-sftpd", "sftpd=evil.example/x:1")
    wait_for(lambda: kube.get("Deployment", NS, "carver-sftpd")["spec"]["template"]["spec"]  # type: ignore[index]
             ["containers"][0]["image"] == TEST_IMAGE, what="the image to be restored")


def test_delete_retains_or_deletes_the_volume(crd: Any, kube: api.Kube,
                                              operator: OperatorProcess,
                                              client_keys: list[str]) -> None:
    apply_yaml(crd, district_manifest("keeper", NS, authorizedKeys=[client_keys[0]]))
    apply_yaml(crd, district_manifest("goner", NS, authorizedKeys=[client_keys[0]],
                                      deletionPolicy="Delete"))
    wait_settled(kube, "keeper")
    wait_settled(kube, "goner")
    goner_pvc = kube.get("PersistentVolumeClaim", NS, "goner-data")
    assert goner_pvc is not None and goner_pvc["metadata"]["ownerReferences"][0]["kind"] == \
        "District"
    crd.kubectl("-n", NS, "delete", "district", "keeper", "goner", "--wait=false")
    wait_for(lambda: not kube.get(names.KIND, NS, "keeper") and not kube.get(names.KIND, NS,
                                                                              "goner"),
             timeout=60, what="the Districts to be deleted")

    def collected(district: str) -> bool:
        selector = f"{names.LABEL_DISTRICT}={district}"
        return all(not [o for o in kube.list(kind, NS, selector)]
                   for kind in CHILD_KINDS if kind != "PersistentVolumeClaim")

    wait_for(lambda: collected("keeper") and collected("goner"), timeout=60,
             what="the garbage collector to remove the children")
    kept = kube.get("PersistentVolumeClaim", NS, "keeper-data")
    assert kept is not None
    assert "ownerReferences" not in kept["metadata"]
    assert "deletionTimestamp" not in kept["metadata"]
    # The garbage collector deletes the owned claim; once the server's pods are gone the
    # pvc-protection controller lets it go for good.
    wait_for(lambda: kube.get("PersistentVolumeClaim", NS, "goner-data") is None, timeout=60,
             what="the owned claim to be deleted")


def districts_gauge(operator: OperatorProcess) -> dict[str, float]:
    """`district_operator_districts` in this module's namespace: Ready status -> Districts."""
    prefix = f'district_operator_districts{{namespace="{NS}",ready="'
    return {key[len(prefix):-2]: value for key, value in operator.metrics().items()
            if key.startswith(prefix) and value}


def test_districts_gauge_counts_known_districts_and_drops_deleted_ones(
        crd: Any, kube: api.Kube, operator: OperatorProcess, client_keys: list[str]) -> None:
    for name in ("gauge-a", "gauge-b"):
        apply_yaml(crd, district_manifest(name, NS, authorizedKeys=[client_keys[0]]))
        wait_settled(kube, name)

    def every_district_counted() -> bool:
        return sum(districts_gauge(operator).values()) == len(kube.list(names.KIND, NS))

    wait_for(every_district_counted, what="the gauge to count every District")
    # No kubelet runs the servers here: these two are not Ready.
    assert districts_gauge(operator)["False"] >= 2
    crd.kubectl("-n", NS, "delete", "district", "gauge-a", "gauge-b", "--wait=false")
    wait_for(lambda: not kube.get(names.KIND, NS, "gauge-a") and
             not kube.get(names.KIND, NS, "gauge-b"), what="the Districts to be deleted")
    wait_for(every_district_counted, what="the gauge to drop the deleted Districts")


def test_bad_inputs_give_clear_conditions_and_disturb_nothing(
        crd: Any, kube: api.Kube, operator: OperatorProcess, client_keys: list[str]) -> None:
    lincoln = kube.get("Deployment", NS, "lincoln-sftpd")
    broken = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBroken"
    apply_yaml(crd, district_manifest("badkeys", NS,
                                      authorizedKeys=[client_keys[0], broken, client_keys[1]]))
    body = wait_condition(kube, "badkeys", "KeysValid", "False", "InvalidKeys")
    assert "spec.authorizedKeys[1]" in condition(body, "KeysValid")["message"]
    assert condition(body, "ServerReady")["reason"] != "ApplyFailed"
    assert secret_text(kube, "badkeys-authorized-keys", "authorized_keys") == \
        f"{client_keys[0]}\n{client_keys[1]}\n"
    wait_for(lambda: any(e["reason"] == "InvalidKeys" and e["type"] == "Warning"
                         for e in events(kube, "badkeys")), what="an InvalidKeys Event")

    apply_yaml(crd, district_manifest("nodb", NS, authorizedKeys=[client_keys[0]],
                                      processing={"databaseSecretRef": {"name": "nodb-db"}}))
    body = wait_condition(kube, "nodb", "ProcessingHealthy", "False", "DatabaseSecretNotFound")
    assert "nodb-db" in condition(body, "ProcessingHealthy")["message"]
    assert kube.get("CronJob", NS, "nodb-epochs") is not None

    secret(crd, "nouri-db", url="postgresql://x@db/x")
    apply_yaml(crd, district_manifest("nouri", NS, authorizedKeys=[client_keys[0]],
                                      backups={"databaseSecretRef": {"name": "nouri-db"}}))
    body = wait_condition(kube, "nouri", "BackupsHealthy", "False", "DatabaseSecretKeyMissing")
    assert "'uri'" in condition(body, "BackupsHealthy")["message"]

    # Fixing the Secret is picked up by the periodic resync.
    secret(crd, "nodb-db", uri="postgresql://nodb@db.example/nodb")
    wait_condition(kube, "nodb", "ProcessingHealthy", "Unknown", "NoRunYet",
                   timeout=RESYNC_SECONDS * 5)
    assert operator.alive()
    assert operator.total("district_operator_reconcile_errors_total") == 0
    after = kube.get("Deployment", NS, "lincoln-sftpd")
    assert lincoln is not None and after is not None
    assert after["metadata"]["resourceVersion"] == lincoln["metadata"]["resourceVersion"]


def run_job(crd: Any, kube: api.Kube, cronjob_name: str, job_name: str,
            results: list[tuple[str, int]]) -> dict[str, Any]:
    return finish_job(crd, kube, NS, cronjob_name, job_name, results)


def recorded(kube: api.Kube, job_name: str) -> bool:
    job = kube.get("Job", NS, job_name)
    return bool(job and names.ANNOTATION_RESULT_RECORDED in
                (job["metadata"].get("annotations") or {}))


def test_finished_jobs_land_in_status_events_and_webhook(
        crd: Any, kube: api.Kube, operator: OperatorProcess, client_keys: list[str]) -> None:
    hook = Hook()
    secret(crd, "jackson-hook", url=hook.url)
    secret(crd, "jackson-db", uri="postgresql://jackson@db.example/jackson")
    apply_yaml(crd, district_manifest(
        "jackson", NS, authorizedKeys=[client_keys[0]],
        processing={"databaseSecretRef": {"name": "jackson-db"}},
        backups={"databaseSecretRef": {"name": "jackson-db"}},
        notifications={"webhookSecretRef": {"name": "jackson-hook"}}))
    wait_settled(kube, "jackson")

    epochs = {"kind": "epochs", "outcome": "NeedsAttention", "message": "1 processed",
              "processed": [{"name": "2026-11-28T0200Z", "outcome": "Succeeded",
                             "format": "oneroster", "processedAt": "2026-11-28T02:10:00Z",
                             "rows": 42, "errors": 0}],
              "unrecognized": ["old-sis-dump"], "pending": []}
    run_job(crd, kube, "jackson-epochs", "jackson-epochs-1", [(json.dumps(epochs), 0)])
    wait_for(lambda: recorded(kube, "jackson-epochs-1"), what="the epochs result recorded")
    body = kube.get(names.KIND, NS, "jackson")
    assert body is not None
    assert body["status"]["lastEpoch"] == {"name": "2026-11-28T0200Z", "outcome": "Succeeded",
                                           "format": "oneroster",
                                           "processedAt": "2026-11-28T02:10:00Z"}
    assert body["status"]["uploadsNeedingAttention"] == ["old-sis-dump"]
    assert condition(body, "UploadsNeedAttention")["status"] == "True"
    assert condition(body, "ProcessingHealthy")["reason"] == "NeedsAttention"
    assert any(e["reason"] == "UploadsNeedAttention" and "old-sis-dump" in e["message"]
               for e in events(kube, "jackson"))

    backup = {"kind": "backup", "outcome": "Succeeded", "file": "jackson-20261128T020000Z.dump",
              "bytes": 1048576, "sha256": "0" * 64, "completedAt": "2026-11-28T02:01:00Z",
              "kept": 1, "pruned": [], "message": "backup written"}
    run_job(crd, kube, "jackson-backup", "jackson-backup-1", [(json.dumps(backup), 0)])
    wait_for(lambda: recorded(kube, "jackson-backup-1"), what="the backup result recorded")
    body = kube.get(names.KIND, NS, "jackson")
    assert body is not None
    assert body["status"]["lastBackup"] == {"file": "jackson-20261128T020000Z.dump",
                                            "bytes": 1048576, "sha256": "0" * 64,
                                            "completedAt": "2026-11-28T02:01:00Z"}
    assert condition(body, "BackupsHealthy")["reason"] == "BackupSucceeded"

    failed = json.dumps({"kind": "backup", "outcome": "Failed", "message": "pg_dump: timeout"})
    # backoffLimit 1: the job controller retries once before it gives the Job up.
    run_job(crd, kube, "jackson-backup", "jackson-backup-2", [(failed, 1), (failed, 1)])
    wait_for(lambda: recorded(kube, "jackson-backup-2"), what="the failed backup recorded")
    body = kube.get(names.KIND, NS, "jackson")
    assert body is not None
    assert condition(body, "BackupsHealthy")["reason"] == "BackupFailed"
    assert "pg_dump: timeout" in condition(body, "BackupsHealthy")["message"]
    assert body["status"]["lastBackup"]["file"] == "jackson-20261128T020000Z.dump"

    hook.wait(2)
    time.sleep(RESYNC_SECONDS * 2)  # resyncs and further Job events must not post again
    hook.server.shutdown()
    assert [(m["event"], m["job"]) for m in hook.received] == [
        ("UploadsNeedAttention", "jackson-epochs-1"), ("JobFailed", "jackson-backup-2")]
    assert hook.received[0]["epochs"] == ["old-sis-dump"]
    assert hook.received[0]["district"] == "jackson"


def snapshot(kube: api.Kube) -> dict[tuple[str, str], str]:
    versions = {}
    for kind in (*CHILD_KINDS, names.KIND):
        selector = None if kind == names.KIND else names.managed_selector()
        for obj in kube.list(kind, NS, selector):
            versions[(kind, obj["metadata"]["name"])] = obj["metadata"]["resourceVersion"]
    return versions


def test_steady_state_resync_makes_zero_writes(kube: api.Kube,
                                               operator: OperatorProcess) -> None:
    districts = kube.list(names.KIND, NS)
    assert len(districts) >= 6
    for body in districts:
        wait_settled(kube, body["metadata"]["name"])
    time.sleep(RESYNC_SECONDS)  # let late watch events (controllers' status updates) pass
    writes_before = operator.total("district_operator_api_writes_total")
    versions_before = snapshot(kube)
    resync = 'district_operator_reconciles_total{result="ok",trigger="resync"}'
    resyncs_before = operator.metrics().get(resync, 0)
    wait_for(lambda: operator.metrics().get(resync, 0) >= resyncs_before + 2 * len(districts),
             timeout=RESYNC_SECONDS * 6, what="two full resyncs")
    assert operator.total("district_operator_api_writes_total") == writes_before
    assert snapshot(kube) == versions_before
    assert operator.total("district_operator_reconcile_errors_total") == 0
