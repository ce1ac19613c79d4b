"""spec.downloads in the manifests: the docviewer and pdfs CronJobs, the server's directories,
and the epochs job's district domain."""

from __future__ import annotations

from typing import Any

import pytest
from district_operator import builders, names
from district_operator.model import parse_district

from tests.district_operator.builders.test_builders import INPUTS, district

DATABASE = {"databaseSecretRef": {"name": "lincoln-db", "key": "app-uri"}}
DOCVIEWER = {"forms": ["IEP", "504 Plan"], "baseURL": "https://viewer.example.org/d?x=1",
             "tokenSecretRef": {"name": "lincoln-docviewer", "key": "fernet"},
             "schedule": "15 1 * * *", "tokenTTL": "36h", "keep": 5}
PDFS = {"schedule": "0 4 1 7 *", "forms": ["IEP"], "students": ["S1", "S2"], "keepDays": 3}


def pod_of(cronjob: dict[str, Any]) -> dict[str, Any]:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def with_downloads(**downloads: Any) -> Any:
    return district(processing=DATABASE, downloads=downloads)


def test_docviewer_and_pdfs_cronjobs_are_restricted_tokenless_and_beside_the_server() -> None:
    jobs = builders.cronjobs(with_downloads(docviewer=DOCVIEWER, pdfs=PDFS), INPUTS)
    assert set(jobs) == {"epochs", "retention", "docviewer", "pdfs"}
    for job, command, schedule in (("docviewer", "docviewer", "15 1 * * *"),
                                   ("pdfs", "pdfs", "0 4 1 7 *")):
        cronjob = jobs[job]
        assert cronjob["metadata"]["name"] == f"lincoln-{job}"
        assert cronjob["metadata"]["labels"][names.LABEL_COMPONENT] == job
        spec = cronjob["spec"]
        assert spec["schedule"] == schedule
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["suspend"] is False
        assert spec["jobTemplate"]["metadata"]["labels"][names.LABEL_COMPONENT] == job
        assert spec["jobTemplate"]["spec"]["backoffLimit"] == 1
        pod = pod_of(cronjob)
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        assert pod["restartPolicy"] == "Never"
        assert pod["securityContext"] == {
            "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
            "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}}
        [term] = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term == {"labelSelector": {"matchLabels": names.server_selector("lincoln")},
                        "topologyKey": "kubernetes.io/hostname"}
        (container,) = pod["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}
        assert container["args"][:5] == [command, "--root", "/data", "--result-file",
                                         "/dev/termination-log"]
        assert container["terminationMessagePath"] == "/dev/termination-log"
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        env = env_of(container)
        # The documents are in the district's database, the one uploads are imported into.
        assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "lincoln-db", "key": "app-uri"}}
        assert env["SFTPD_ROOT"] == "/data"

    docviewer = pod_of(jobs["docviewer"])
    (container,) = docviewer["containers"]
    assert container["args"][5:] == ["--token-key-file", "/etc/sftpd/docviewer-token/key"]
    env = env_of(container)
    assert (env["SFTPD_FORMS"], env["SFTPD_BASE_URL"], env["SFTPD_TOKEN_TTL"],
            env["SFTPD_KEEP"]) == ("IEP,504 Plan", "https://viewer.example.org/d?x=1", "36h",
                                   "5")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {"/data", "/tmp", "/etc/sftpd/docviewer-token"}
    assert mounts["/etc/sftpd/docviewer-token"] == {
        "name": "docviewer-token", "mountPath": "/etc/sftpd/docviewer-token", "readOnly": True}
    volumes = {v["name"]: v for v in docviewer["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "lincoln-data"
    assert volumes["docviewer-token"] == {"name": "docviewer-token", "secret": {
        "secretName": "lincoln-docviewer", "defaultMode": 0o400,
        "items": [{"key": "fernet", "path": "key"}]}}

    pdfs = pod_of(jobs["pdfs"])
    (container,) = pdfs["containers"]
    assert container["args"][5:] == []
    env = env_of(container)
    assert (env["SFTPD_FORMS"], env["SFTPD_STUDENTS"], env["SFTPD_KEEP_DAYS"]) == (
        "IEP", "S1,S2", "3")
    assert "SFTPD_BASE_URL" not in env
    assert {v["name"] for v in pdfs["volumes"]} == {"data", "tmp"}  # no token for pdfs


def test_defaults_reach_the_jobs_and_every_student_is_the_default() -> None:
    body = {"metadata": {"name": "lincoln", "namespace": "d", "uid": "u"}, "spec": {
        "authorizedKeys": ["ssh-ed25519 AAAA"], "processing": DATABASE,
        # as the API server stores them after defaulting
        "downloads": {"docviewer": {**{k: DOCVIEWER[k] for k in ("forms", "baseURL")},
                                    "tokenSecretRef": {"name": "t"}},
                      "pdfs": {"schedule": "0 4 * * 6", "forms": ["IEP"]}}}}
    jobs = builders.cronjobs(parse_district(body), INPUTS)
    docviewer = env_of(pod_of(jobs["docviewer"])["containers"][0])
    assert (docviewer["SFTPD_TOKEN_TTL"], docviewer["SFTPD_KEEP"]) == ("7d", "7")
    assert jobs["docviewer"]["spec"]["schedule"] == "30 1 * * *"
    assert pod_of(jobs["docviewer"])["volumes"][-1]["secret"]["items"] == [
        {"key": "key", "path": "key"}]
    pdfs = env_of(pod_of(jobs["pdfs"])["containers"][0])
    assert pdfs["SFTPD_KEEP_DAYS"] == "2"
    assert "SFTPD_STUDENTS" not in pdfs


@pytest.mark.parametrize(("spec", "expected"), [
    ({"processing": DATABASE}, set()),
    ({"processing": DATABASE, "downloads": {"docviewer": {**DOCVIEWER, "enabled": False},
                                            "pdfs": {**PDFS, "enabled": False}}}, set()),
    ({"processing": DATABASE, "downloads": {"pdfs": PDFS}}, {"pdfs"}),
    # Never from the API server (a CEL rule refuses it), but no CronJob without a database.
    ({"downloads": {"docviewer": DOCVIEWER, "pdfs": PDFS}}, set()),
])
def test_only_enabled_download_jobs_with_a_database_get_a_cronjob(spec: dict[str, Any],
                                                                  expected: set[str]) -> None:
    jobs = set(builders.cronjobs(district(**spec), INPUTS)) & set(names.DOWNLOAD_JOBS)
    assert jobs == expected


def test_suspended_district_pauses_the_download_jobs() -> None:
    jobs = builders.cronjobs(district(suspend=True, processing=DATABASE,
                                      downloads={"docviewer": DOCVIEWER, "pdfs": PDFS}), INPUTS)
    assert jobs["docviewer"]["spec"]["suspend"] is True
    assert jobs["pdfs"]["spec"]["suspend"] is True


def test_shared_volumes_free_the_download_jobs_from_the_server_node() -> None:
    jobs = builders.cronjobs(district(storage={"accessMode": "ReadWriteMany"}, processing=DATABASE,
                                      downloads={"docviewer": DOCVIEWER, "pdfs": PDFS}), INPUTS)
    assert all("affinity" not in pod_of(jobs[job]) for job in names.DOWNLOAD_JOBS)


def test_the_server_gets_the_download_directories_only_when_set() -> None:
    def server_env(d: Any) -> dict[str, Any]:
        (container,) = builders.deployment(d, INPUTS)["spec"]["template"]["spec"]["containers"]
        return env_of(container)

    assert server_env(district(downloads={"directories": ["state-ids", "sif_2"]}))[
        "SFTPD_DOWNLOAD_DIRECTORIES"] == "state-ids,sif_2"
    assert "SFTPD_DOWNLOAD_DIRECTORIES" not in server_env(district())
    assert "SFTPD_DOWNLOAD_DIRECTORIES" not in server_env(district(downloads={"directories": []}))


def test_the_epochs_job_gets_the_district_domain_from_the_login() -> None:
    for spec, domain in (({"login": "applegrove.org"}, "applegrove.org"), ({}, "lincoln")):
        jobs = builders.cronjobs(district(**spec), INPUTS)
        assert env_of(pod_of(jobs["epochs"])["containers"][0])["SFTPD_DISTRICT_DOMAIN"] == domain
        assert "SFTPD_DISTRICT_DOMAIN" not in env_of(pod_of(jobs["retention"])["containers"][0])
