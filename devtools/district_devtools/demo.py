"""`python -m district_devtools.demo` (`make demo`): the product on this machine until Ctrl-C."""

# Starts a real local cluster with a real node (containerd, kubelet, kube-scheduler,
# kube-proxy), builds the image from the Dockerfile, installs the chart (the operator runs as a
# pod), applies examples/district.yaml with a freshly generated key and an epochs CronJob that
# runs every minute, and prints the sftp command that logs in. Every process it starts is
# stopped on the way out, and the node leaves the machine as it found it.

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from district_operator import names

from district_devtools.localcluster.controlplane import ControlPlane, _alive, repo_root
from district_devtools.localcluster.product import RealCluster
from district_devtools.localcluster.realnode import (
    GATEWAY,
    POD_CIDR,
    RealNode,
    build_images,
    node_binaries_dir,
    prepare_bridge,
)
from district_devtools.ports import free_port, wait_for_port, wait_until
from district_devtools.postgres import start_postgres

NAMESPACE = "districts"
DATABASE_SECRET_NAME = "demo-db"  # noqa: S105 - a Secret's name, not a password


def say(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def write_key_pair(private_path: Path, comment: str) -> str:
    """A fresh Ed25519 key pair in OpenSSH format; returns the public key line."""
    key = ed25519.Ed25519PrivateKey.generate()
    private_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    private_path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    line = f"{public} {comment}"
    private_path.with_name(private_path.name + ".pub").write_text(line + "\n")
    return line


def district_manifest(example: Path, public_key: str, port: int) -> dict[str, Any]:
    district: dict[str, Any] = yaml.safe_load(example.read_text())
    spec = district.setdefault("spec", {})
    spec["authorizedKeys"] = [public_key]
    # The load balancer stand-in's address is this machine's: a port of its own, not 22.
    spec["service"] = {"type": "LoadBalancer", "port": port}
    # Uploads are picked up within a minute, not at the production default's ten.
    spec.setdefault("processing", {}).update(schedule="* * * * *", settleSeconds=10)
    # The demo has a database, so uploads are imported and backups exported as in production.
    spec.setdefault("processing", {})["databaseSecretRef"] = {"name": DATABASE_SECRET_NAME}
    spec.setdefault("backups", {})["databaseSecretRef"] = {"name": DATABASE_SECRET_NAME}
    return district


def run(stack: contextlib.ExitStack, base: Path, repo: Path) -> int:
    say(f"working directory {base}")
    say("building (or reusing) the node's binaries and the image from the Dockerfile "
        "(the first run builds them and takes a while)")
    bin_dir = node_binaries_dir(repo)
    images = build_images(repo)
    say("starting the local cluster: etcd, kube-apiserver, kube-controller-manager and a real "
        "node (containerd, kubelet, kube-scheduler, kube-proxy)")
    prepare_bridge()
    stack.callback(RealNode.remove_bridge)
    plane = ControlPlane.start(base / "cluster", address=GATEWAY)
    stack.callback(plane.stop)
    node = RealNode.start(plane, base / "cluster" / "node", bin_dir, images)
    stack.callback(node.stop, plane)
    real = RealCluster(plane=plane, node=node,
                       image=next(name for _, name in images if "pause" not in name))
    os.environ["KUBECONFIG"] = str(plane.kubeconfig)

    say("starting PostgreSQL for the district's database (reachable from the pods)")
    postgres = start_postgres(base / "postgres", pod_network=(GATEWAY, POD_CIDR))
    stack.callback(postgres.stop)
    password = secrets.token_urlsafe(16)
    postgres.psql(f"CREATE ROLE district LOGIN PASSWORD '{password}'")
    postgres.psql("CREATE DATABASE lincoln OWNER district")

    say(f"installing the chart (the operator runs as a pod, image {real.image})")
    plane.kubectl("create", "namespace", NAMESPACE)
    real.install_chart(repo / "charts" / "district-sftp", [NAMESPACE])
    plane.kubectl("-n", NAMESPACE, "create", "secret", "generic", DATABASE_SECRET_NAME,
                  f"--from-literal=uri=postgresql://district:{password}@{GATEWAY}:"
                  f"{postgres.port}/lincoln")

    key = base / "demo_key"
    public_key = write_key_pair(key, "demo@district-sftp")
    port = free_port(GATEWAY)
    district = district_manifest(repo / "examples" / "district.yaml", public_key, port)
    name = district["metadata"]["name"]
    login = district["spec"].get("login") or name
    plane.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=yaml.safe_dump(district))
    say(f"applied District {name} (examples/district.yaml with the demo's public key)")
    wait_until(lambda: real.get("pvc", NAMESPACE, names.data_pvc(name)), 120,
               "the operator to create the District's claim")
    real.local_volume(NAMESPACE, names.data_pvc(name), base / "volume")
    real.expose(NAMESPACE, names.service(name))

    def ready() -> dict[str, Any] | None:
        body = real.get("district", NAMESPACE, name) or {}
        status = body.get("status") or {}
        is_ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                       for c in status.get("conditions") or [])
        return status if is_ready and status.get("knownHosts") else None
    status = wait_until(ready, 300, f"District {name} to be Ready with its host keys")
    known_hosts = base / "known_hosts"
    known_hosts.write_text(status["knownHosts"] + "\n")

    endpoint = status["endpoint"]
    # kube-proxy programs the load balancer's address a moment after the Service has it.
    wait_for_port(str(endpoint["host"]), int(endpoint["port"]), 60)
    command = shlex.join(["sftp", "-i", str(key), "-P", str(endpoint["port"]),
                          "-o", f"UserKnownHostsFile={known_hosts}",
                          f"{login}@{endpoint['host']}"])
    table = plane.kubectl("-n", NAMESPACE, "get", "districts", check=False).stdout
    print(f"\nDistrict {name} is served. Log in with:\n\n    {command}\n\n"
          f"Upload an epoch the way districts do (mkdir upload/YYYYMMDD-HHMMSS, put the CSV files "
          f"in it, then an empty COMPLETE file): the epochs CronJob runs every minute.\n\n"
          f"$ kubectl get districts -n {NAMESPACE}\n{table}\n"
          f"kubectl for this cluster: export KUBECONFIG={plane.kubeconfig}; "
          f"{plane.bin_dir / 'kubectl'} district connect-info {name} -n {NAMESPACE}\n"
          f"Press Ctrl-C to stop everything.", flush=True)

    while True:
        for what, pid in {**plane.pids, **node.pids}.items():
            if not _alive(pid):
                say(f"{what} exited; stopping")
                return 1
        time.sleep(1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="district-sftp-demo", description=__doc__)
    parser.parse_args(argv)
    repo = repo_root()
    if repo is None:
        say("run the demo from a source checkout (it needs crds/, examples/ and scripts/)")
        return 2
    if os.geteuid() != 0:
        say("the demo runs a real node (containerd, kubelet): run it as root "
            "(for example in a development VM)")
        return 2
    # Explicitly: a shell starting us in the background may have left SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    base = Path(tempfile.mkdtemp(prefix="district-sftp-demo-"))
    base.chmod(0o755)  # PostgreSQL runs as its own user and must reach its directory
    stack = contextlib.ExitStack()
    try:
        return run(stack, base, repo)
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.close()
        shutil.rmtree(base, ignore_errors=True)
        say("stopped; nothing left running")


if __name__ == "__main__":
    sys.exit(main())
