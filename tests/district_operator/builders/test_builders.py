"""Pure builder tests: every child manifest for a District, with precise assertions."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from district_operator import builders, names
from district_operator.model import parse_district

IMAGE = "registry.example/district-sftp:1.2.3"
INPUTS = builders.BuildInputs(
    image=IMAGE,
    server_resources=builders.Resources(requests={"cpu": "10m", "memory": "32Mi"},
                                        limits={"memory": "128Mi"}),
    job_resources=builders.Resources(requests={"cpu": "20m"}, limits={}))


def district_body(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": names.API_VERSION, "kind": names.KIND,
            "metadata": {"name": "lincoln", "namespace": "districts", "uid": "u-1",
                         "generation": 3},
            "spec": {"authorizedKeys": ["ssh-ed25519 AAAA"], **spec}}


def district(**spec: Any):  # type: ignore[no-untyped-def]
    return parse_district(district_body(**spec))


OWNER = {"apiVersion": "districtsftp.io/v1alpha1", "kind": "District", "name": "lincoln",
         "uid": "u-1", "controller": True, "blockOwnerDeletion": True}


def test_every_child_is_named_labelled_and_owned() -> None:
    children = builders.desired_children(district(backups={"databaseSecretRef": {"name": "db"}}),
                                         INPUTS, "")
    assert [(c["kind"], c["metadata"]["name"]) for c in children] == [
        ("Secret", "lincoln-authorized-keys"), ("PersistentVolumeClaim", "lincoln-data"),
        ("Deployment", "lincoln-sftpd"), ("Service", "lincoln-sftp"),
        ("NetworkPolicy", "lincoln-sftpd"), ("CronJob", "lincoln-epochs"),
        ("CronJob", "lincoln-retention"), ("CronJob", "lincoln-backup")]
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "districts"
        assert meta["labels"][names.LABEL_DISTRICT] == "lincoln"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "district-sftp"
        if child["kind"] != "PersistentVolumeClaim":
            assert meta["ownerReferences"] == [OWNER]


def test_host_key_secret_holds_the_given_keys() -> None:
    secret = builders.host_keys_secret(district(), {"ssh_host_ed25519_key": "PRIV",
                                                    "ssh_host_ed25519_key.pub": "PUB"})
    assert secret["data"] == {"ssh_host_ed25519_key": base64.b64encode(b"PRIV").decode(),
                              "ssh_host_ed25519_key.pub": base64.b64encode(b"PUB").decode()}
    assert secret["metadata"]["ownerReferences"] == [OWNER]


def test_authorized_keys_secret_has_the_file_the_server_reads() -> None:
    secret = builders.authorized_keys_secret(district(), "ssh-ed25519 AAAA a\n")
    assert base64.b64decode(secret["data"]["authorized_keys"]) == b"ssh-ed25519 AAAA a\n"


def test_server_defaults_fit_the_measured_memory() -> None:
    """Idle `sftpd serve` after a login: about 44 MiB RSS (bench/sftpd_memory.py); the request
    covers it, not the 64Mi of before, and the limit 100 uploads at about 2.5 MiB each."""
    (container,) = builders.deployment(district(), builders.BuildInputs(image=IMAGE))[
        "spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {"requests": {"cpu": "50m", "memory": "48Mi"},
                                      "limits": {"memory": "256Mi"}}


@pytest.mark.parametrize(("policy", "owned"), [("Retain", False), ("Delete", True)])
def test_pvc_is_owned_only_when_deleted_with_the_district(policy: str, owned: bool) -> None:
    pvc = builders.data_pvc(district(deletionPolicy=policy, storage={
        "size": "20Gi", "storageClassName": "fast", "accessMode": "ReadWriteMany"}))
    assert ("ownerReferences" in pvc["metadata"]) is owned
    assert pvc["spec"] == {"accessModes": ["ReadWriteMany"], "volumeMode": "Filesystem",
                           "resources": {"requests": {"storage": "20Gi"}},
                           "storageClassName": "fast"}


def test_pvc_without_class_leaves_the_default_class_to_the_cluster() -> None:
    assert "storageClassName" not in builders.data_pvc(district())["spec"]


def test_deployment_runs_sftpd_serve_restricted_and_tokenless() -> None:
    deployment = builders.deployment(district(login="lincoln_sis",
                                              allowedSourceRanges=["203.0.113.0/24"]), INPUTS)
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert spec["selector"]["matchLabels"] == names.server_selector("lincoln")
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["args"] == ["serve", "--root", "/data"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SFTPD_LOGIN"] == "lincoln_sis"
    assert env["SFTPD_PORT"] == "2222"
    assert env["SFTPD_METRICS_PORT"] == "9090"
    assert env["SFTPD_HOST_KEY"] == ("/etc/sftpd/host-keys/ssh_host_ed25519_key,"
                                     "/etc/sftpd/host-keys/ssh_host_rsa_key")
    # A rotation's next keys, in the same Secret volume (absent unless one is in flight).
    assert env["SFTPD_NEXT_HOST_KEY"] == ("/etc/sftpd/host-keys/next_ssh_host_ed25519_key,"
                                          "/etc/sftpd/host-keys/next_ssh_host_rsa_key")
    assert env["SFTPD_AUTHORIZED_KEYS"] == "/etc/sftpd/authorized-keys/authorized_keys"
    assert env["SFTPD_ALLOWED_SOURCE"] == "203.0.113.0/24"
    assert {p["containerPort"] for p in container["ports"]} == {2222, 9090}
    assert container["readinessProbe"]["tcpSocket"]["port"] == "ssh"
    assert "livenessProbe" in container
    assert container["resources"] == {"requests": {"cpu": "10m", "memory": "32Mi"},
                                      "limits": {"memory": "128Mi"}}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {"/data", "/tmp", "/etc/sftpd/host-keys", "/etc/sftpd/authorized-keys"}
    assert mounts["/etc/sftpd/host-keys"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "lincoln-data"
    assert volumes["host-keys"]["secret"] == {"secretName": "lincoln-host-keys",
                                              "defaultMode": 0o400}
    assert volumes["authorized-keys"]["secret"]["secretName"] == "lincoln-authorized-keys"
    assert "emptyDir" in volumes["tmp"]


def test_suspended_district_runs_no_server_and_pauses_jobs() -> None:
    suspended = district(suspend=True)
    assert builders.deployment(suspended, INPUTS)["spec"]["replicas"] == 0
    assert all(c["spec"]["suspend"] is True for c in builders.cronjobs(suspended, INPUTS).values())
    assert all(c["spec"]["suspend"] is False
               for c in builders.cronjobs(district(), INPUTS).values())


def test_service_maps_the_district_port_to_ssh() -> None:
    svc = builders.service(district(service={"type": "LoadBalancer", "port": 2022,
                                             "annotations": {"lb.example/internal": "true"}},
                                    allowedSourceRanges=["198.51.100.0/24"]))
    assert svc["metadata"]["annotations"] == {"lb.example/internal": "true"}
    assert svc["spec"]["ports"] == [{"name": "ssh", "port": 2022, "targetPort": "ssh",
                                     "protocol": "TCP"}]
    assert svc["spec"]["selector"] == names.server_selector("lincoln")
    assert svc["spec"]["loadBalancerSourceRanges"] == ["198.51.100.0/24"]
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    cluster_ip = builders.service(district(service={"type": "ClusterIP"}))
    assert "externalTrafficPolicy" not in cluster_ip["spec"]
    assert "annotations" not in cluster_ip["metadata"]


def test_network_policy_admits_ssh_from_the_allow_list_and_metrics() -> None:
    open_policy = builders.network_policy(district())["spec"]
    assert open_policy["policyTypes"] == ["Ingress"]
    assert open_policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": 2222}]},
                                      {"ports": [{"protocol": "TCP", "port": 9090}]}]
    listed = builders.network_policy(district(allowedSourceRanges=["203.0.113.0/24",
                                                                   "2001:db8::/48"]))["spec"]
    assert listed["ingress"][0]["from"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}},
                                           {"ipBlock": {"cidr": "2001:db8::/48"}}]
    assert "from" not in listed["ingress"][1]


def test_cronjobs_follow_the_pod_contract() -> None:
    d = district(processing={"schedule": "*/5 * * * *", "settleSeconds": 60,
                             "databaseSecretRef": {"name": "lincoln-db"}},
                 retention={"processedDays": 7, "schedule": "1 1 * * *"},
                 backups={"schedule": "0 3 * * *", "keep": 5,
                          "databaseSecretRef": {"name": "lincoln-db", "key": "app-uri"}})
    jobs = builders.cronjobs(d, INPUTS)
    assert set(jobs) == {"epochs", "retention", "backup"}
    expected_args = {"epochs": "process-epochs", "retention": "retention", "backup": "backup"}
    schedules = {"epochs": "*/5 * * * *", "retention": "1 1 * * *", "backup": "0 3 * * *"}
    for job, cronjob in jobs.items():
        spec = cronjob["spec"]
        assert spec["schedule"] == schedules[job]
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["successfulJobsHistoryLimit"] == 3
        assert spec["failedJobsHistoryLimit"] == 3
        template = spec["jobTemplate"]
        assert template["metadata"]["labels"][names.LABEL_COMPONENT] == job
        pod = template["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["restartPolicy"] == "Never"
        affinity = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert affinity[0]["labelSelector"]["matchLabels"] == names.server_selector("lincoln")
        (container,) = pod["containers"]
        assert container["args"] == [expected_args[job], "--root", "/data",
                                     "--result-file", "/dev/termination-log"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["resources"] == {"requests": {"cpu": "20m"}}
    epochs_env = {e["name"]: e for e in jobs["epochs"]["spec"]["jobTemplate"]["spec"]["template"]
                  ["spec"]["containers"][0]["env"]}
    assert epochs_env["DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "lincoln-db", "key": "uri"}}
    assert epochs_env["SFTPD_SETTLE_SECONDS"]["value"] == "60"
    assert "SFTPD_DISTRICT" not in epochs_env  # process-epochs has no --district
    backup_env = {e["name"]: e for e in jobs["backup"]["spec"]["jobTemplate"]["spec"]["template"]
                  ["spec"]["containers"][0]["env"]}
    assert backup_env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "app-uri"
    assert backup_env["SFTPD_KEEP_BACKUPS"]["value"] == "5"
    assert backup_env["SFTPD_DISTRICT"]["value"] == "lincoln"
    retention_env = {e["name"]: e for e in jobs["retention"]["spec"]["jobTemplate"]["spec"]
                     ["template"]["spec"]["containers"][0]["env"]}
    assert retention_env["SFTPD_PROCESSED_DAYS"]["value"] == "7"
    assert "DATABASE_URL" not in retention_env


def test_backups_need_a_database_and_shared_volumes_free_the_jobs() -> None:
    d = district(storage={"accessMode": "ReadWriteMany"})
    jobs = builders.cronjobs(d, INPUTS)
    assert set(jobs) == {"epochs", "retention"}
    assert all("affinity" not in j["spec"]["jobTemplate"]["spec"]["template"]["spec"]
               for j in jobs.values())


def test_builders_are_pure() -> None:
    d = district()
    assert builders.desired_children(d, INPUTS, "x") == builders.desired_children(d, INPUTS, "x")


def test_image_pull_secrets_reach_every_pod_and_only_when_given() -> None:
    with_secrets = builders.BuildInputs(image=IMAGE, image_pull_secrets=("regcred", "mirror"))
    body = district(backups={"databaseSecretRef": {"name": "db"}})
    pods = [builders.deployment(body, with_secrets)["spec"]["template"]["spec"],
            *(c["spec"]["jobTemplate"]["spec"]["template"]["spec"]
              for c in builders.cronjobs(body, with_secrets).values())]
    assert len(pods) == 4  # the server, epochs, retention, backups
    for pod in pods:
        assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    plain = [builders.deployment(body, INPUTS)["spec"]["template"]["spec"],
             *(c["spec"]["jobTemplate"]["spec"]["template"]["spec"]
               for c in builders.cronjobs(body, INPUTS).values())]
    assert all("imagePullSecrets" not in pod for pod in plain)
