"""End to end: a District applied to a real API server, its pod specs run, a district served.

With a real etcd + kube-apiserver + kube-controller-manager, the operator as a process, a real
PostgreSQL server and OpenSSH's `sftp`, this test takes the Pods that Kubernetes' own
controllers made from the operator's Deployment and CronJob templates and runs them with the
kubelet stand-in (district_devtools/localcluster/kubelet.py and node.py), then checks what a
district and a platform engineer would see.

What is stood in for, and how:
- the kubelet: volumes materialized from the real Secrets as the kubelet lays them out (the
  `..data` symlink swap, modes, fsGroup ownership), the claim as a local directory, the
  container's command run as uid 10001 in a private mount namespace with the volumes at their
  real mount paths and a read-only root; the Pod status (Running/Ready, then terminated with
  the container's real termination message) written back as the kubelet would;
- the scheduler: a Binding of each Pod to a node name;
- the cloud load balancer: the Service gets an external address (203.0.113.10) in its status.
  There is no load balancer to carry traffic, so the client connects to the server's local
  port and OpenSSH is told, with HostKeyAlias, that it is talking to the Service's address:
  the host key is checked against `status.knownHosts` exactly as the operator wrote it;
- the volume provisioner: a hostPath PersistentVolume bound to the claim.

The Job controller, the Deployment/ReplicaSet controllers and the garbage collector are real.
Not stood in for: container images (the container runs this checkout's `sftpd`), networking
(no network namespace, Service routing or NetworkPolicy), resource limits, seccomp, probes
other than the tcpSocket readiness probe, restarts, and the CronJob schedule (each job is
started as `kubectl create job --from=cronjob/...` would).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from district_devtools.localcluster import node
from district_devtools.ports import free_port, wait_until
from district_devtools.postgres import PostgresServer
from district_operator import api, names

from sftpd import tree
from tests.conftest import REPO, TEST_FIELD_MANAGER, missing, require_binary

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.timeout(600)]

DISTRICT = "lincoln"
LB_ADDRESS = "203.0.113.10"
EPOCH = "2026-11-28T0200Z"
ONEROSTER = REPO / "tests" / "data" / "oneroster" / "v1.1-bulk"


@pytest.fixture
def namespace(cluster: Any) -> Iterator[str]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                    str(REPO / "crds" / "district.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    f"crd/{names.PLURAL}.{names.GROUP}")
    name = f"e2e-{os.getpid()}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    cluster.kubectl("delete", "persistentvolume", f"local-{name}-{names.data_pvc(DISTRICT)}",
                    "--wait=false", check=False)


@pytest.fixture
def operator(namespace: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "operator.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "district_operator.cli", "run", "--namespace", namespace,
         "--image", "registry.invalid/district-sftp:e2e", "--resync-seconds", "5",
         "--metrics-port", str(free_port()), "--health-port", "0"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    yield proc
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    log.close()


def sftp(key: Path, port: int, known_hosts: Path, batch: str
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sftp", "-b", "-", "-i", str(key), "-P", str(port),
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", f"HostKeyAlias={LB_ADDRESS}", "-o", "BatchMode=yes",
         "-o", "IdentitiesOnly=yes", "-o", "GlobalKnownHostsFile=/dev/null",
         f"{DISTRICT}@127.0.0.1"],
        input=batch, capture_output=True, text=True, timeout=60)


def district_status(kube: api.Kube, namespace: str) -> dict[str, Any]:
    body = kube.get(names.KIND, namespace, DISTRICT) or {}
    return body.get("status") or {}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def test_district_end_to_end(cluster: Any, postgres: PostgresServer, namespace: str,
                             operator: subprocess.Popen[bytes], tmp_path: Path) -> None:
    require_binary("sftp")
    require_binary("ssh-keygen")
    if os.geteuid() != 0:
        missing("root, for the kubelet stand-in's mount namespace")
    kube = api.Kube(field_manager=TEST_FIELD_MANAGER)
    database = f"e2e_{os.getpid()}"
    database_url = postgres.create_database(database)
    key = tmp_path / "district_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "it@lincoln.example",
                    "-f", str(key)], check=True)
    cluster.kubectl("-n", namespace, "create", "secret", "generic", "lincoln-db",
                    f"--from-literal=uri={database_url}")
    district = {
        "apiVersion": names.API_VERSION, "kind": names.KIND,
        "metadata": {"name": DISTRICT, "namespace": namespace},
        "spec": {"authorizedKeys": [key.with_suffix(".pub").read_text().strip()],
                 "processing": {"databaseSecretRef": {"name": "lincoln-db"}},
                 "backups": {"databaseSecretRef": {"name": "lincoln-db"}, "keep": 3}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(district))

    for kind, name in [("Deployment", names.deployment(DISTRICT)),
                       *[("CronJob", names.cronjob(DISTRICT, job))
                         for job in (names.JOB_EPOCHS, names.JOB_RETENTION, names.JOB_BACKUP)]]:
        wait_until(lambda k=kind, n=name: kube.get(k, namespace, n), 60, f"{kind} {name}")
    data_dir = tmp_path / "pvc"
    node.bind_claim(kube, namespace, names.data_pvc(DISTRICT), data_dir)
    node.expose_service(kube, namespace, names.service(DISTRICT), LB_ADDRESS)
    server = node.start_server(kube, namespace, DISTRICT, tmp_path / "server", data_dir,
                               free_port(), free_port())
    try:
        # The operator sees the Deployment become available through the real controllers.
        def ready() -> dict[str, Any] | None:
            s = district_status(kube, namespace)
            return s if condition(s, "Ready").get("status") == "True" and s.get("knownHosts") \
                else None
        status = wait_until(ready, 90, "the District to be Ready with knownHosts")
        assert status["endpoint"] == {"host": LB_ADDRESS, "port": 22, "user": DISTRICT,
                                      "mode": "dedicated"}
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(status["knownHosts"])

        # A host key other than the District's is refused: the check above is a real one.
        impostor = tmp_path / "impostor"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)],
                       check=True)
        wrong = tmp_path / "wrong_known_hosts"
        wrong.write_text(f"{LB_ADDRESS} {impostor.with_suffix('.pub').read_text()}")
        refused = sftp(key, server.port, wrong, "ls /\n")
        assert refused.returncode != 0
        assert "Host key verification failed" in refused.stderr

        upload = [f"mkdir /upload/{EPOCH}"]
        upload += [f"put {f} /upload/{EPOCH}/{f.name}" for f in sorted(ONEROSTER.iterdir())]
        marker = tmp_path / "_COMPLETE"
        marker.write_text("")
        upload += [f"put {marker} /upload/{EPOCH}/_COMPLETE", "ls /"]
        done = sftp(key, server.port, known_hosts, "\n".join(upload) + "\n")
        assert done.returncode == 0, done.stderr
        assert "upload-processed" in done.stdout

        epochs = node.run_cronjob(kube, namespace, DISTRICT, names.JOB_EPOCHS,
                                  tmp_path / "epochs", data_dir, f"{DISTRICT}-epochs-e2e")
        assert epochs.result.exit_code == 0, epochs.pod.log_tail()
        result = json.loads(epochs.result.message)
        assert result["kind"] == "epochs" and result["outcome"] == "Succeeded", result
        assert [p["name"] for p in result["processed"]] == [EPOCH]
        assert (data_dir / tree.UPLOAD_PROCESSED / EPOCH / "processing.json").is_file()
        with psycopg.connect(database_url) as conn:
            users = conn.execute("SELECT count(*) FROM oneroster.users").fetchone()
        rows_in_file = len((ONEROSTER / "users.csv").read_text().splitlines()) - 1
        assert users == (rows_in_file,)

        backup = node.run_cronjob(kube, namespace, DISTRICT, names.JOB_BACKUP,
                                  tmp_path / "backup", data_dir, f"{DISTRICT}-backup-e2e")
        assert backup.result.exit_code == 0, backup.pod.log_tail()
        made = json.loads(backup.result.message)
        assert made["kind"] == "backup" and made["outcome"] == "Succeeded", made
        # The district downloads it over SFTP; restored into a fresh database it has the rows.
        downloaded = tmp_path / made["file"]
        got = sftp(key, server.port, known_hosts,
                   f"get /{tree.BACKUPS}/{made['file']} {downloaded}\n")
        assert got.returncode == 0, got.stderr
        assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == made["sha256"]
        restored_url = postgres.create_database(f"{database}_restored")
        subprocess.run([str(postgres.bin_dir / "pg_restore"), "--no-owner", "-d", restored_url,
                        str(downloaded)], check=True, capture_output=True)
        with psycopg.connect(restored_url) as conn:
            assert conn.execute("SELECT count(*) FROM oneroster.users").fetchone() == users

        retention = node.run_cronjob(kube, namespace, DISTRICT, names.JOB_RETENTION,
                                     tmp_path / "retention", data_dir,
                                     f"{DISTRICT}-retention-e2e")
        assert retention.result.exit_code == 0, retention.pod.log_tail()
        # Processed today, kept for processedDays: nothing to delete yet.
        assert json.loads(retention.result.message)["deleted"] == []

        # A key added to the District reaches the running server the way the kubelet updates
        # a Secret volume (a `..data` swap): the second key logs in, with no restart.
        second = tmp_path / "second_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(second)],
                       check=True)
        assert sftp(second, server.port, known_hosts, "ls /\n").returncode != 0
        keys = [*district["spec"]["authorizedKeys"], second.with_suffix(".pub").read_text()]
        cluster.kubectl("-n", namespace, "patch", names.KIND.lower(), DISTRICT, "--type=merge",
                        "-p", json.dumps({"spec": {"authorizedKeys": [k.strip() for k in keys]}}))
        wait_until(lambda: server.pod.sync_secrets(), 60,
                        "the authorized-keys Secret to change")
        pid = server.pod.process.pid if server.pod.process else None
        listed = sftp(second, server.port, known_hosts, "ls /\n")
        assert listed.returncode == 0, listed.stderr
        assert server.pod.process is not None and server.pod.process.pid == pid
        assert server.pod.process.poll() is None

        # The termination messages flow back: the Job controller completes each Job from its
        # Pod's status, the operator reads the message and records it on the District.
        def recorded() -> dict[str, Any] | None:
            s = district_status(kube, namespace)
            ok = (s.get("lastEpoch", {}).get("name") == EPOCH
                  and s.get("lastBackup", {}).get("file") == made["file"]
                  and "lastRetention" in s)
            return s if ok else None
        status = wait_until(recorded, 90, "the jobs' results in the District's status")
        assert status["lastEpoch"]["outcome"] == "Succeeded"
        assert status["lastBackup"]["sha256"] == made["sha256"]
        assert status["lastBackup"]["bytes"] == downloaded.stat().st_size
        assert status["lastRetention"]["outcome"] == "Succeeded"
        assert condition(status, "ProcessingHealthy")["status"] == "True"
        assert condition(status, "BackupsHealthy")["reason"] == "BackupSucceeded"
        for job in (epochs, backup, retention):
            annotations = kube.get("Job", namespace, job.job_name)["metadata"]["annotations"]
            assert annotations[names.ANNOTATION_RESULT_RECORDED] in ("Succeeded", "NothingToDo")
    finally:
        stopped = server.stop()
        kube.close()
    # SIGTERM ends the server cleanly (the kubelet's stop, within the grace period).
    assert stopped is not None and stopped.exit_code == 0, server.pod.log_tail()
