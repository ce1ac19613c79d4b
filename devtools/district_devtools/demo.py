"""`python -m district_devtools.demo` (`make demo`): the product on this machine until Ctrl-C."""

# Starts a real local control plane, installs the CRD, runs the operator, applies
# examples/district.yaml with a freshly generated key, runs that District's SFTP server from
# the Pod the Deployment made (kubelet stand-in), and prints the sftp command that logs in.
# Every process it starts is stopped on the way out, whatever the way out is.

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
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
from district_operator import api, names

from district_devtools.localcluster import kubelet, node
from district_devtools.localcluster.controlplane import ControlPlane, repo_root
from district_devtools.ports import free_port
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


def local_known_hosts(known_hosts: str, endpoint: dict[str, Any], port: int) -> str:
    """status.knownHosts with the endpoint's host pattern moved to the local port: the keys are
    the District's, the address is where the stand-in server listens."""
    host, service_port = str(endpoint["host"]), int(endpoint["port"])
    pattern = host if service_port == 22 else f"[{host}]:{service_port}"
    lines = []
    for line in known_hosts.splitlines():
        hosts, _, key = line.partition(" ")
        if hosts == pattern:
            lines.append(f"[127.0.0.1]:{port} {key}")
    return "\n".join(lines) + "\n"


def stop_process(process: subprocess.Popen[bytes], grace: float = 20) -> None:
    """SIGTERM the process's group, SIGKILL what is left after the grace period."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def district_manifest(example: Path, public_key: str) -> dict[str, Any]:
    district: dict[str, Any] = yaml.safe_load(example.read_text())
    spec = district.setdefault("spec", {})
    spec["authorizedKeys"] = [public_key]
    # The demo has a database, so uploads are imported and backups exported as in production.
    spec.setdefault("processing", {})["databaseSecretRef"] = {"name": DATABASE_SECRET_NAME}
    spec.setdefault("backups", {})["databaseSecretRef"] = {"name": DATABASE_SECRET_NAME}
    return district


def run(stack: contextlib.ExitStack, base: Path, port: int, repo: Path) -> int:
    say(f"working directory {base}")
    say("starting the local control plane (etcd, kube-apiserver, kube-controller-manager)")
    plane = ControlPlane.start(base / "cluster")
    stack.callback(plane.stop)
    os.environ["KUBECONFIG"] = str(plane.kubeconfig)
    plane.kubectl("apply", "--server-side", "-f", str(repo / "crds" / "district.yaml"))
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                  f"crd/{names.PLURAL}.{names.GROUP}")
    plane.kubectl("create", "namespace", NAMESPACE)

    say("starting PostgreSQL for the district's database")
    postgres = start_postgres(base / "postgres")
    stack.callback(postgres.stop)
    database_url = postgres.create_database("lincoln")
    plane.kubectl("-n", NAMESPACE, "create", "secret", "generic", DATABASE_SECRET_NAME,
                  f"--from-literal=uri={database_url}")

    say("starting the operator")
    log = stack.enter_context((base / "operator.log").open("ab"))
    operator = subprocess.Popen(
        [sys.executable, "-m", "district_operator.cli", "run", "--namespace", NAMESPACE,
         "--metrics-port", str(free_port()), "--health-port", "0"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    stack.callback(stop_process, operator)

    key = base / "demo_key"
    public_key = write_key_pair(key, "demo@district-sftp")
    district = district_manifest(repo / "examples" / "district.yaml", public_key)
    name = district["metadata"]["name"]
    login = district["spec"].get("login") or name
    plane.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=yaml.safe_dump(district))
    say(f"applied District {name} (examples/district.yaml with the demo's public key)")

    kube = api.Kube(field_manager=kubelet.FIELD_MANAGER)
    stack.callback(kube.close)
    node.wait_until(lambda: kube.get("Deployment", NAMESPACE, names.deployment(name)), 60,
                    "the operator to create the SFTP Deployment")
    node.bind_claim(kube, NAMESPACE, names.data_pvc(name), base / "volume")
    node.expose_service(kube, NAMESPACE, names.service(name), "127.0.0.1")
    say("running the District's SFTP server from its pod spec (kubelet stand-in)")
    server = node.start_server(kube, NAMESPACE, name, base / "server-pod", base / "volume",
                               port, free_port())
    stack.callback(server.stop)

    def ready() -> dict[str, Any] | None:
        body = kube.get(names.KIND, NAMESPACE, name) or {}
        status = body.get("status") or {}
        is_ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                       for c in status.get("conditions") or [])
        return status if is_ready and status.get("knownHosts") else None
    status = node.wait_until(ready, 120, f"District {name} to be Ready with its host keys")
    known_hosts = base / "known_hosts"
    known_hosts.write_text(local_known_hosts(status["knownHosts"], status["endpoint"], port))

    command = shlex.join(["sftp", "-i", str(key), "-P", str(port),
                          "-o", f"UserKnownHostsFile={known_hosts}", f"{login}@127.0.0.1"])
    table = plane.kubectl("-n", NAMESPACE, "get", "districts", check=False).stdout
    print(f"\nDistrict {name} is served. Log in with:\n\n    {command}\n\n"
          f"$ kubectl get districts -n {NAMESPACE}\n{table}\n"
          f"kubectl for this cluster: {plane.bin_dir / 'kubectl'} --kubeconfig "
          f"{plane.kubeconfig}\nPress Ctrl-C to stop everything.", flush=True)

    while True:
        for what, process in (("the SFTP server", server.pod.process),
                              ("the operator", operator)):
            if process is not None and process.poll() is not None:
                say(f"{what} exited with {process.returncode}; stopping")
                return 1
        time.sleep(1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="district-sftp-demo", description=__doc__)
    parser.add_argument("--port", type=int, default=0,
                        help="local port for the SFTP server (default: a free one)")
    args = parser.parse_args(argv)
    repo = repo_root()
    if repo is None:
        say("run the demo from a source checkout (it needs crds/, examples/ and scripts/)")
        return 2
    if os.geteuid() != 0:
        say("the demo runs the SFTP server's pod in a mount namespace: run it as root "
            "(for example in a development container or VM)")
        return 2
    # Explicitly: a shell starting us in the background may have left SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    base = Path(tempfile.mkdtemp(prefix="district-sftp-demo-"))
    base.chmod(0o755)  # PostgreSQL runs as its own user and must reach its directory
    stack = contextlib.ExitStack()
    try:
        return run(stack, base, args.port or free_port(), repo)
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
