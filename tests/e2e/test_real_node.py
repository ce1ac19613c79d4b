"""End to end on a real node: the chart's operator in a container, a District served by its
pod, imports and backups run by real Job pods.

Real: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, the kubelet, containerd and
runc, kube-proxy, the CNI bridge; the image built from the project's Dockerfile; the chart with
its ServiceAccount; PostgreSQL; OpenSSH's sftp with strict host key checking. Stood in for: the
cloud load balancer only (the Service's ingress is the node bridge's address, which kube-proxy
routes), and a provisioner (a hostPath PersistentVolume made for the claim).
"""

from __future__ import annotations

import io
import json
import random
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
from district_devtools.localcluster.outside import OutsideClient, outside_client
from district_devtools.localcluster.product import RELEASE, RELEASE_NAMESPACE, RealCluster
from district_devtools.localcluster.realnode import (
    GATEWAY,
    POD_CIDR,
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
from tests.e2e.gateway_clients import Target, json_lines, lftp, openssh_sftp, paramiko_client
from tests.sftpd.server.conftest import keygen

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "districts"
DISTRICT = "lincoln"
ONEROSTER = REPO / "tests" / "data" / "oneroster" / "v1.1-bulk"
DB_PASSWORD = "district-e2e-password"
# The gateway's test (test_real_node_gateway.py's scenario) shares this module's cluster.
GATEWAY_NAMESPACES = ("gw-east", "gw-west")
KEY_ADDED_BOUND = 30  # seconds: "within seconds", generous under load


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


@pytest.fixture(scope="module")
def product(real: RealCluster) -> RealCluster:
    """The chart installed once for this module's tests: the operator watching the dedicated
    District's namespace and the two shared-mode ones, the gateway enabled (2 replicas) on a
    free port of the load balancer stand-in's address."""
    for namespace in (NAMESPACE, *GATEWAY_NAMESPACES):
        real.plane.kubectl("create", "namespace", namespace)
    real.install_chart(REPO / "charts" / "district-sftp", [NAMESPACE, *GATEWAY_NAMESPACES], {
        "gateway.enabled": "true", "gateway.replicas": "2",
        # The district servers see the gateway pods at their pod addresses.
        "gateway.proxyFrom[0]": POD_CIDR,
        "gateway.service.port": str(free_port(GATEWAY)),
    })
    return real


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


def test_the_chart_serves_a_district_on_a_real_node(product: RealCluster,
                                                    database: PostgresServer,
                                                    tmp_path: Path) -> None:
    real = product
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
    assert status["endpoint"] == {"host": GATEWAY, "port": port, "user": DISTRICT,
                                  "mode": "dedicated"}
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


# ---- the shared SSH gateway (issue 19, docs/gateway.md) ----------------------------------------

EAST, WEST = GATEWAY_NAMESPACES
GATEWAY_NAME = f"{RELEASE}-gateway"


@pytest.fixture
def outside() -> Iterator[OutsideClient]:
    with outside_client() as client:
        yield client


def shared_district(namespace: str, name: str, login: str, keys: list[str],
                    **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{names.GROUP}/{names.VERSION}", "kind": names.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"login": login, "authorizedKeys": keys, "service": {"mode": "shared"},
                     **spec}}


def condition(real: RealCluster, namespace: str, name: str, kind: str) -> dict[str, Any]:
    body = real.get("district", namespace, name) or {}
    for item in (body.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return {}


def gateway_events(real: RealCluster) -> list[dict[str, Any]]:
    selector = ",".join(f"{k}={v}" for k, v in names.gateway_selector(GATEWAY_NAME).items())
    logs = real.plane.kubectl("-n", RELEASE_NAMESPACE, "logs", "-l", selector, "--prefix",
                              "--tail=-1", "--max-log-requests=10").stdout
    return json_lines(logs)


def server_events(real: RealCluster, namespace: str, district: str) -> list[dict[str, Any]]:
    logs = real.plane.kubectl("-n", namespace, "logs", f"deploy/{names.deployment(district)}",
                              "--tail=-1").stdout
    return json_lines(logs)


def gateway_pods(real: RealCluster) -> list[dict[str, Any]]:
    selector = ",".join(f"{k}={v}" for k, v in names.gateway_selector(GATEWAY_NAME).items())
    pods: list[dict[str, Any]] = json.loads(real.plane.kubectl(
        "-n", RELEASE_NAMESPACE, "get", "pods", "-l", selector, "-o", "json").stdout)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def gateway_mark(real: RealCluster) -> set[str]:
    """The gateway's events so far (both pods' logs), to tell the later ones by."""
    return {json.dumps(e, sort_keys=True) for e in gateway_events(real)}


def gateway_events_since(real: RealCluster, mark: set[str]) -> list[dict[str, Any]]:
    return [e for e in gateway_events(real) if json.dumps(e, sort_keys=True) not in mark]


def refused_at_gateway(real: RealCluster, reason: str, login: str, mark: set[str]) -> bool:
    """A gateway pod logged login.failed with `reason` for `login` since `mark`."""
    return any(e.get("event") == "login.failed" and e.get("reason") == reason
               and e.get("user") == login for e in gateway_events_since(real, mark))


def test_the_gateway_routes_two_districts_on_a_real_node(product: RealCluster, tmp_path: Path,
                                                         outside: OutsideClient) -> None:
    real = product
    started = time.monotonic()
    east_key, east_public = make_client_key(tmp_path, "east")
    west_key, west_public = make_client_key(tmp_path, "west")
    east = shared_district(EAST, "applegrove", "applegrove.org", [east_public],
                           # The outside client's network: the gateway judges the real address.
                           allowedSourceRanges=[f"{outside.address}/32"])
    west = shared_district(WEST, "birchfield", "birchfield.org", [west_public])
    for body in (east, west):
        real.plane.kubectl("apply", "-f", "-", input=json.dumps(body))
    volumes = {}
    for body in (east, west):
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        volumes[name] = tmp_path / f"volume-{name}"
        real.local_volume(namespace, names.data_pvc(name), volumes[name])
    wait_until(lambda: real.get("service", RELEASE_NAMESPACE, GATEWAY_NAME), 60,
               "the chart's gateway Service")
    service = real.get("service", RELEASE_NAMESPACE, GATEWAY_NAME) or {}
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    port = int(service["spec"]["ports"][0]["port"])
    real.expose(RELEASE_NAMESPACE, GATEWAY_NAME)

    def ready(namespace: str, name: str) -> dict[str, Any] | None:
        body = real.get("district", namespace, name) or {}
        status = body.get("status") or {}
        ok = all(any(c.get("type") == kind and c.get("status") == "True"
                     for c in status.get("conditions") or [])
                 # No database in this scenario, so not Ready: the server and its route are.
                 for kind in ("ServerReady", "Routed"))
        return status if ok and status.get("knownHosts") else None
    statuses = {b["metadata"]["name"]: wait_until(
        lambda b=b: ready(b["metadata"]["namespace"], b["metadata"]["name"]), 300,
        f"District {b['metadata']['name']} ServerReady and Routed with knownHosts")
        for b in (east, west)}
    for status in statuses.values():
        # In shared mode the endpoint and host keys are the gateway's: one address for both.
        assert status["endpoint"]["host"] == GATEWAY and status["endpoint"]["port"] == port, \
            status["endpoint"]
    assert statuses["applegrove"]["knownHosts"] == statuses["birchfield"]["knownHosts"]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(statuses["applegrove"]["knownHosts"] + "\n")
    pods = gateway_pods(real)
    assert len(pods) == 2
    gateway_ips = {p["status"]["podIP"] for p in pods}
    wait_for_port(GATEWAY, port, 60)
    print(f"\n  gateway: two Districts serving and Routed {time.monotonic() - started:.1f} s "
          "after apply")

    east_target = Target(GATEWAY, port, "applegrove.org", east_key, known_hosts)
    west_target = Target(GATEWAY, port, "birchfield.org", west_key, known_hosts)

    def sftp_ok(target: Target, batch: str) -> str:
        result = openssh_sftp(outside, target, batch)
        assert result.returncode == 0, f"{target.login}: {result.stderr}"
        return result.stdout

    # The kubelet has the routing shards in the gateway's volume a moment after Routed.
    wait_until(lambda: openssh_sftp(outside, east_target, "ls\n").returncode == 0, 60,
               "the first login through the gateway", interval=1)

    # Each client, each District: bytes up and back down, compared; each file in its own tree.
    rng = random.Random(19)
    for target, name in ((east_target, "applegrove"), (west_target, "birchfield")):
        sent = {client: rng.randbytes(1 << 20) for client in ("openssh", "lftp", "paramiko")}
        for client, data in sent.items():
            (tmp_path / f"{name}-{client}.bin").write_bytes(data)
        local = tmp_path / f"{name}-openssh.bin"
        sftp_ok(target, f"put {local} upload/{name}-openssh.bin\n"
                        f"get upload/{name}-openssh.bin {local}.back\n")
        local = tmp_path / f"{name}-lftp.bin"
        result = lftp(outside, target, f"put {local} -o upload/{name}-lftp.bin; "
                                       f"get upload/{name}-lftp.bin -o {local}.back")
        assert result.returncode == 0, f"lftp {name}: {result.stdout}{result.stderr}"
        client = paramiko_client(outside, target)
        try:
            with client.open_sftp() as session:
                session.putfo(io.BytesIO(sent["paramiko"]), f"upload/{name}-paramiko.bin")
                back = io.BytesIO()
                session.getfo(f"upload/{name}-paramiko.bin", back)
                (tmp_path / f"{name}-paramiko.bin.back").write_bytes(back.getvalue())
        finally:
            client.close()
        for client_name, data in sent.items():
            assert (tmp_path / f"{name}-{client_name}.bin.back").read_bytes() == data, \
                f"{client_name} through the gateway to {name}: bytes differ"
            stored = [p for p in volumes[name].rglob(f"{name}-{client_name}.bin")
                      if p.is_file()]
            assert len(stored) == 1 and stored[0].read_bytes() == data, stored
    # Only its own tree: each District's listing and volume hold its files and none of the
    # other's.
    for target, name in ((east_target, "applegrove"), (west_target, "birchfield")):
        listing = set(sftp_ok(target, "ls -1 upload\n").split())
        files = {p.name for p in volumes[name].rglob("*.bin")}
        mine = {f"{name}-{c}.bin" for c in ("openssh", "lftp", "paramiko")}
        assert mine <= {n.rsplit("/", 1)[-1] for n in listing}, listing
        assert files == mine, files

    # The real client address, as the district server saw it: in its audit log, `via` the
    # gateway's pod.
    logins = [e for e in server_events(real, EAST, "applegrove")
              if e.get("event") == "login.succeeded"]
    assert logins and all(e["source"] == outside.address for e in logins), logins
    assert {e["via"] for e in logins} <= gateway_ips, (logins, gateway_ips)

    # Refused at the gateway: A's key with B's login, an unknown login, a source outside the
    # allow-list (this machine itself: kube-proxy masquerades locally made connections to the
    # node bridge's address), a suspended District.
    mark = gateway_mark(real)
    crossed = openssh_sftp(outside, Target(GATEWAY, port, "birchfield.org", east_key,
                                           known_hosts), "ls\n")
    assert crossed.returncode != 0
    unknown = openssh_sftp(outside, Target(GATEWAY, port, "nobody.example", east_key,
                                           known_hosts), "ls\n")
    assert unknown.returncode != 0
    local = subprocess.run(
        [require_binary("sftp"), "-b", "-", "-P", str(port), "-i", str(east_key),
         "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "BatchMode=yes",
         f"applegrove.org@{GATEWAY}"], input="ls\n", capture_output=True, text=True,
        timeout=60, check=False)
    assert local.returncode != 0
    wait_until(lambda: all(refused_at_gateway(real, reason, login, mark) for reason, login in (
        ("unknown_key", "birchfield.org"), ("unknown_user", "nobody.example"),
        ("source_not_allowed", "applegrove.org"))), 30, "the gateway's refusals in its log")
    refusal = next(e for e in gateway_events_since(real, mark) if e.get("reason") ==
                   "source_not_allowed")
    assert refusal["source"] == GATEWAY, refusal  # this machine, masqueraded by kube-proxy
    real.plane.kubectl("-n", WEST, "patch", "district", "birchfield", "--type=merge", "-p",
                       json.dumps({"spec": {"suspend": True}}))
    mark = gateway_mark(real)
    # The server is scaled down at once; the gateway's routing data says `suspended` a moment
    # later (a login in between passes the gateway and finds no server: refused all the same).
    wait_until(lambda: openssh_sftp(outside, west_target, "ls\n").returncode != 0
               and refused_at_gateway(real, "suspended", "birchfield.org", mark), 60,
               "the suspended District refused at the gateway", interval=1)
    real.plane.kubectl("-n", WEST, "patch", "district", "birchfield", "--type=merge", "-p",
                       json.dumps({"spec": {"suspend": False}}))
    wait_until(lambda: openssh_sftp(outside, west_target, "ls\n").returncode == 0, 60,
               "the District back", interval=1)

    # A key added to a District works through the gateway within seconds, nothing restarted.
    # Two steps: the gateway's routing shard (the operator touches the gateway pods: about a
    # second), then the District's own server, whose authorized-keys Secret volume the kubelet
    # rewrites at its next periodic sync of that pod (syncFrequency: 10 s in the recipe, 1 min
    # by default). In between the gateway lets the key by and the server refuses it, counting
    # a failure against the real client: attempts are spaced so as not to reach the server's
    # ban (10 failures).
    def restarts() -> dict[str, int]:
        counts = {}
        for pod in [*gateway_pods(real), *json.loads(real.plane.kubectl(
                "-n", EAST, "get", "pods", "-l", f"{names.LABEL_COMPONENT}=sftpd", "-o",
                "json").stdout)["items"]]:
            counts[pod["metadata"]["uid"]] = pod["status"]["containerStatuses"][0][
                "restartCount"]
        return counts
    before = restarts()
    added_key, added_public = make_client_key(tmp_path, "east-added")
    added = Target(GATEWAY, port, "applegrove.org", added_key, known_hosts)
    added_fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{added_key}.pub"], capture_output=True, text=True,
        check=True).stdout.split()[1]
    mark = gateway_mark(real)
    patched = time.monotonic()
    real.plane.kubectl("-n", EAST, "patch", "district", "applegrove", "--type=merge", "-p",
                       json.dumps({"spec": {"authorizedKeys": [east_public, added_public]}}))
    at_gateway: list[float] = []

    def logs_in() -> bool:
        ok = openssh_sftp(outside, added, "ls\n", timeout=30).returncode == 0
        if not at_gateway and any(
                e.get("event") == "login.succeeded" and e.get("fingerprint") == added_fingerprint
                for e in gateway_events_since(real, mark)):
            at_gateway.append(time.monotonic() - patched)
        return ok
    wait_until(logs_in, KEY_ADDED_BOUND, "the added key through the gateway", interval=2)
    took = time.monotonic() - patched
    print(f"  gateway: a key added to a District: past the gateway after "
          f"{at_gateway[0] if at_gateway else took:.1f} s, logged in end to end after "
          f"{took:.1f} s (bound {KEY_ADDED_BOUND} s; attempts every 2 s)")
    assert restarts() == before
    # What the server refused in between, it refused for the real client (its ban counts
    # that address, not the gateway's).
    refused = [e for e in server_events(real, EAST, "applegrove")
               if e.get("event") == "login.failed" and e.get("fingerprint") == added_fingerprint]
    assert all(e["source"] == outside.address and e["via"] in gateway_ips for e in refused), \
        refused
    print(f"  gateway: the district server refused the added key {len(refused)} time(s) "
          "before its own volume had it, each for the real client's address")

    # A login clash: a second District claims applegrove.org; both marked, neither routed.
    clash = shared_district(WEST, "applegrove-copy", "applegrove.org", [west_public])
    real.plane.kubectl("apply", "-f", "-", input=json.dumps(clash))
    for namespace, name in ((EAST, "applegrove"), (WEST, "applegrove-copy")):
        wait_until(lambda namespace=namespace, name=name: condition(
            real, namespace, name, "Routed").get("reason") == "LoginClash", 60,
            f"{namespace}/{name} Routed=False LoginClash")
        assert condition(real, namespace, name, "Routed")["status"] == "False"
        events = json.loads(real.plane.kubectl(
            "-n", namespace, "get", "events", "--field-selector",
            f"involvedObject.name={name}", "-o", "json").stdout)["items"]
        assert any(e.get("reason") == "LoginClash" for e in events), \
            [e.get("reason") for e in events]
    mark = gateway_mark(real)
    for key in (east_key, west_key):
        wait_until(lambda key=key: openssh_sftp(outside, Target(
            GATEWAY, port, "applegrove.org", key, known_hosts), "ls\n").returncode != 0, 60,
            "the clashing login refused", interval=1)
    wait_until(lambda: refused_at_gateway(real, "login_clash", "applegrove.org", mark), 30,
               "login_clash in the gateway's log")
    real.plane.kubectl("-n", WEST, "delete", "district", "applegrove-copy", "--wait=true")
    wait_until(lambda: condition(real, EAST, "applegrove", "Routed").get("status") == "True",
               60, "applegrove routed again once the clash is gone")
    wait_until(lambda: openssh_sftp(outside, east_target, "ls\n").returncode == 0, 60,
               "applegrove's key through the gateway again", interval=1)

    # The gateway's ban counts the real address: failures from the outside client ban it on
    # both replicas, while the same login from another address still gets in.
    mark = gateway_mark(real)
    stranger, _ = make_client_key(tmp_path, "stranger")
    wrong = Target(GATEWAY, port, "birchfield.org", stranger, known_hosts)

    def banned_on_both() -> bool:
        openssh_sftp(outside, wrong, "ls\n", timeout=30)
        bans = {e["_pod"] for e in gateway_events_since(real, mark)
                if e.get("event") == "address.banned" and e.get("source") == outside.address}
        return len(bans) == 2
    wait_until(banned_on_both, 120, "the outside address banned on both gateway replicas",
               interval=0)
    for _ in range(4):  # whichever replica kube-proxy picks
        assert openssh_sftp(outside, west_target, "ls\n").returncode != 0
    home = subprocess.run(
        [require_binary("sftp"), "-b", "-", "-P", str(port), "-i", str(west_key),
         "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "BatchMode=yes",
         f"birchfield.org@{GATEWAY}"], input="ls\n", capture_output=True, text=True,
        timeout=60, check=False)
    assert home.returncode == 0, home.stderr
    print(f"  gateway: scenario took {time.monotonic() - started:.1f} s")
