"""End to end on a real node: the chart's operator in a container, a District served by its
pod, imports and backups run by real Job pods.

Real: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, the kubelet, containerd and
runc, kube-proxy, the CNI bridge; the image built from the project's Dockerfile; the chart with
its ServiceAccount; PostgreSQL; OpenSSH's sftp with strict host key checking. Stood in for: the
cloud load balancer only (the Service's ingress is the node bridge's address, which kube-proxy
routes), and a provisioner (a hostPath PersistentVolume made for the claim).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from district_devtools.localcluster.controlplane import ControlPlane, repo_root
from district_devtools.localcluster.product import RealCluster
from district_devtools.localcluster.realnode import (
    GATEWAY,
    NodeUnavailable,
    RealNode,
    build_images,
    node_binaries_dir,
    prepare_bridge,
)
from district_devtools.ports import free_port, wait_for_port, wait_until
from district_devtools.postgres import PostgresServer, start_postgres
from district_operator import names

from tests.conftest import missing, require_binary
from tests.sftpd.server.conftest import keygen

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "districts"
DISTRICT = "lincoln"
ONEROSTER = REPO / "tests" / "data" / "oneroster" / "v1.1-bulk"
DB_PASSWORD = "district-e2e-password"


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    repo = repo_root()
    assert repo is not None
    try:
        bin_dir = node_binaries_dir(repo)
        images = build_images(repo)
    except NodeUnavailable as exc:
        missing(str(exc))
        raise
    base = tmp_path_factory.mktemp("real-node")
    prepare_bridge()
    plane = ControlPlane.start(base / "cluster", address=GATEWAY)
    node: RealNode | None = None
    try:
        node = RealNode.start(plane, base / "cluster" / "node", bin_dir, images)
        app = next(name for _, name in images if "pause" not in name)
        yield RealCluster(plane=plane, node=node, image=app)
    finally:
        if node is not None:
            node.stop(plane)
        plane.stop()
        RealNode.remove_bridge()


@pytest.fixture(scope="module")
def database() -> Iterator[PostgresServer]:
    # Not under pytest's base directory: it is 0700 for root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="district-sftp-postgres-"))
    server = start_postgres(base, pod_network=(GATEWAY, "10.88.77.0/24"))
    try:
        server.psql(f"CREATE ROLE district LOGIN PASSWORD '{DB_PASSWORD}'")
        server.psql("CREATE DATABASE lincoln OWNER district")
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def make_client_key(directory: Path, name: str) -> tuple[Path, str]:
    key = keygen(directory / name)
    return key, key.with_name(key.name + ".pub").read_text().strip()


def district_status(real: RealCluster) -> dict[str, Any]:
    body = real.get("district", NAMESPACE, DISTRICT) or {}
    status: dict[str, Any] = body.get("status") or {}
    return status


def sftp(batch: str, key: Path, known_hosts: Path, port: int,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("sftp"), "-b", "-", "-i", str(key), "-P", str(port),
         "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", f"{DISTRICT}@{GATEWAY}"],
        input=batch, capture_output=True, text=True, timeout=120, check=check)


def run_job(real: RealCluster, job: str, field: str, before: Any) -> dict[str, Any]:
    """Start the District's CronJob now (as `kubectl create job --from` does) and wait until
    its real termination message has reached status.<field>."""
    name = f"{names.cronjob(DISTRICT, job)}-now-{int(time.time())}"
    real.plane.kubectl("-n", NAMESPACE, "create", "job", name,
                       f"--from=cronjob/{names.cronjob(DISTRICT, job)}")

    def recorded() -> dict[str, Any] | None:
        value = district_status(real).get(field)
        return value if value and value != before else None
    try:
        return wait_until(recorded, 240, f"the {job} job's result in status.{field}")
    except TimeoutError:
        pods = real.plane.kubectl("-n", NAMESPACE, "get", "pods", "-o", "wide").stdout
        logs = real.plane.kubectl("-n", NAMESPACE, "logs", f"job/{name}", check=False)
        raise AssertionError(f"{pods}\n{logs.stdout}{logs.stderr}") from None


def test_the_chart_serves_a_district_on_a_real_node(real: RealCluster,
                                                    database: PostgresServer,
                                                    tmp_path: Path) -> None:
    real.plane.kubectl("create", "namespace", NAMESPACE)
    real.install_chart(REPO / "charts" / "district-sftp", [NAMESPACE])
    url = (f"postgresql://district:{DB_PASSWORD}@{GATEWAY}:{database.port}/lincoln")
    real.plane.kubectl("-n", NAMESPACE, "create", "secret", "generic", "lincoln-db",
                       f"--from-literal=uri={url}")
    key, public = make_client_key(tmp_path, "first")
    port = free_port(GATEWAY)
    district = {
        "apiVersion": f"{names.GROUP}/{names.VERSION}", "kind": names.KIND,
        "metadata": {"name": DISTRICT, "namespace": NAMESPACE},
        "spec": {"authorizedKeys": [public],
                 "service": {"type": "LoadBalancer", "port": port},
                 "processing": {"databaseSecretRef": {"name": "lincoln-db"},
                                "settleSeconds": 5},
                 "backups": {"databaseSecretRef": {"name": "lincoln-db"}}},
    }
    real.plane.kubectl("apply", "-f", "-", input=json.dumps(district))
    wait_until(lambda: real.get("pvc", NAMESPACE, names.data_pvc(DISTRICT)), 60,
               "the operator (a pod) to create the claim")
    real.local_volume(NAMESPACE, names.data_pvc(DISTRICT), tmp_path / "volume")
    real.expose(NAMESPACE, names.service(DISTRICT))

    def ready() -> dict[str, Any] | None:
        status = district_status(real)
        ok = any(c.get("type") == "Ready" and c.get("status") == "True"
                 for c in status.get("conditions") or [])
        return status if ok and status.get("knownHosts") else None
    status = wait_until(ready, 300, "the District to be Ready with knownHosts")
    assert status["endpoint"] == {"host": GATEWAY, "port": port}
    # kube-proxy programs the load balancer's address a moment after the Service has it.
    wait_for_port(GATEWAY, port, 60)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(status["knownHosts"] + "\n")

    # The server's container, seen from inside: uid, capabilities, seccomp, read-only root.
    probe = ("import os; s=open('/proc/self/status').read();"
             "print(os.getuid(), os.getgid());"
             "print([l for l in s.splitlines()"
             " if l.startswith(('CapEff','Seccomp:','NoNewPrivs'))]);"
             "import pathlib\n"
             "try:\n pathlib.Path('/probe').write_text('x'); print('root writable')\n"
             "except OSError as e:\n print('root read-only', e.errno)\n"
             "print(os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/token'))")
    inside = real.plane.kubectl("-n", NAMESPACE, "exec", f"deploy/{names.deployment(DISTRICT)}",
                                "--", "python3", "-c", probe).stdout.splitlines()
    assert inside[0] == "10001 10001"
    assert "CapEff:\\t0000000000000000" in inside[1]
    assert "Seccomp:\\t2" in inside[1] and "NoNewPrivs:\\t1" in inside[1]
    assert inside[2] == "root read-only 30"  # EROFS
    assert inside[3] == "False"  # no API token in the data plane

    # An epoch uploaded with OpenSSH, strict host key checking against status.knownHosts.
    epoch = "20261202-020000"
    puts = "\n".join(f"put {f} upload/{epoch}/{f.name}" for f in sorted(ONEROSTER.iterdir()))
    (tmp_path / "_COMPLETE").write_text("")
    sftp(f"mkdir upload/{epoch}\n{puts}\nput {tmp_path / '_COMPLETE'} upload/{epoch}/_COMPLETE\n",
         key, known_hosts, port)
    last_epoch = run_job(real, names.JOB_EPOCHS, "lastEpoch", None)
    assert last_epoch["name"] == epoch and last_epoch["outcome"] == "Succeeded"
    with psycopg.connect(database.database_url("lincoln")) as conn:
        users = conn.execute("SELECT count(*) FROM oneroster.users").fetchone()
    expected_users = len((ONEROSTER / "users.csv").read_text().strip().splitlines()) - 1
    assert users == (expected_users,)

    # A backup by a real Job pod, downloaded over SFTP and restored.
    backup = run_job(real, names.JOB_BACKUP, "lastBackup", None)
    dump = tmp_path / backup["file"]
    sftp(f"get downloads/backups/{backup['file']} {dump}\n", key, known_hosts, port)
    assert dump.stat().st_size == backup["bytes"]
    database.psql("CREATE DATABASE restored")
    restore = subprocess.run([str(database.bin_dir / "pg_restore"), "--no-owner", "-d",
                              database.database_url("restored"), str(dump)],
                             capture_output=True, text=True, check=False)
    assert restore.returncode == 0, restore.stderr
    with psycopg.connect(database.database_url("restored")) as conn:
        assert conn.execute("SELECT count(*) FROM oneroster.users").fetchone() == users

    # A key added to the District reaches the running server through the kubelet's Secret
    # update: no restart.
    pod_before = json.loads(real.plane.kubectl("-n", NAMESPACE, "get", "pods", "-l",
                                               f"{names.LABEL_COMPONENT}=sftpd", "-o",
                                               "json").stdout)["items"][0]
    second, second_public = make_client_key(tmp_path, "second")
    real.plane.kubectl("-n", NAMESPACE, "patch", "district", DISTRICT, "--type=merge", "-p",
                       json.dumps({"spec": {"authorizedKeys": [public, second_public]}}))
    attempts: list[subprocess.CompletedProcess[str]] = []

    def second_logs_in() -> bool:
        attempts.append(sftp("ls upload\n", second, known_hosts, port, check=False))
        return attempts[-1].returncode == 0
    try:
        wait_until(second_logs_in, 180, "the second key to log in", interval=3)
    except TimeoutError:
        kubectl = real.plane.kubectl
        deployment = f"deploy/{names.deployment(DISTRICT)}"
        secret = kubectl("-n", NAMESPACE, "get", "secret",
                         names.authorized_keys_secret(DISTRICT), "-o", "yaml", check=False)
        mounted = kubectl("-n", NAMESPACE, "exec", deployment, "--", "python3", "-c",
                          "import os; d='/etc/sftpd/authorized-keys'; print(os.listdir(d),"
                          " os.readlink(d + '/..data'), open(d + '/authorized_keys').read())",
                          check=False)
        logs = kubectl("-n", NAMESPACE, "logs", deployment, "--tail=20", check=False)
        raise AssertionError(f"second key refused: {attempts[-1].stderr}\nSecret: "
                             f"{secret.stdout}\nmounted: {mounted.stdout}{mounted.stderr}\n"
                             f"server log: {logs.stdout}") from None
    pod_after = json.loads(real.plane.kubectl("-n", NAMESPACE, "get", "pods", "-l",
                                              f"{names.LABEL_COMPONENT}=sftpd", "-o",
                                              "json").stdout)["items"][0]
    assert pod_after["metadata"]["uid"] == pod_before["metadata"]["uid"]
    assert pod_after["status"]["containerStatuses"][0]["restartCount"] == 0

    # The pod deleted: back with the same host keys (strict checking passes) and the data.
    real.plane.kubectl("-n", NAMESPACE, "delete", "pod", pod_before["metadata"]["name"],
                       "--wait=true")
    listing = wait_until(lambda: (r := sftp("ls upload-processed\n", key, known_hosts, port,
                                            check=False)).returncode == 0 and r.stdout,
                         180, "the new pod to serve the same keys and data")
    assert epoch in listing
    assert district_status(real)["lastBackup"]["file"] == backup["file"]
