"""A real local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from district_devtools.localcluster.pki import ControlPlanePKI, generate_pki
from district_devtools.ports import free_port, wait_for_port

# The workload controllers the product's tests rely on: garbage collection for owner references,
# Deployments and CronJobs for the district's pods, namespaces for clean teardown, the
# service-account controller so the ServiceAccount admission plugin stays on, as in a real cluster,
# and PVC protection so a deleted claim goes once no pod uses it.
CONTROLLERS = (
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "job-controller",
    "cronjob-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "persistentvolume-expander-controller",
    "persistentvolumeclaim-protection-controller",
)
# Room for thousands of Services: the scale benchmark gives every District one.
SERVICE_CIDR = "10.0.0.0/16"
STATE_FILE = "state.json"


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl run whose message includes what kubectl printed on stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


class ControlPlaneUnavailable(RuntimeError):
    """The control plane's binaries are missing and cannot be built here."""


def repo_root() -> Path | None:
    """The source checkout this package runs from, when it runs from one."""
    candidate = Path(__file__).resolve().parents[3]
    return candidate if (candidate / "scripts" / "build-control-plane").exists() else None


def binaries_dir() -> Path:
    """Where the pinned binaries are: $DISTRICT_SFTP_K8S_BIN, or built once by the script."""
    override = os.environ.get("DISTRICT_SFTP_K8S_BIN")
    if override:
        return Path(override)
    root = repo_root()
    if root is None:
        raise ControlPlaneUnavailable(
            "set DISTRICT_SFTP_K8S_BIN to a directory holding etcd, kube-apiserver, "
            "kube-controller-manager and kubectl")
    print("local-cluster: making sure the control plane binaries are built "
          "(the first build takes a long while; later runs reuse the cache)", file=sys.stderr)
    result = subprocess.run([str(root / "scripts" / "build-control-plane")],
                            stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise ControlPlaneUnavailable("scripts/build-control-plane failed (see its output above)")
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class ControlPlane:
    """A running control plane and the files needed to talk to it."""

    directory: Path
    bin_dir: Path
    kubeconfig: Path
    apiserver_port: int
    etcd_port: int
    pids: dict[str, int]

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this control plane; errors carry kubectl's own words."""
        result = subprocess.run([str(self.bin_dir / "kubectl"), "--kubeconfig",
                                 str(self.kubeconfig), *args],
                                input=input, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, result.args, result.stdout, result.stderr)
        return result

    def save(self) -> None:
        state = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        (self.directory / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, directory: Path) -> ControlPlane:
        state = json.loads((directory / STATE_FILE).read_text())
        return cls(directory=Path(state["directory"]), bin_dir=Path(state["bin_dir"]),
                   kubeconfig=Path(state["kubeconfig"]), apiserver_port=state["apiserver_port"],
                   etcd_port=state["etcd_port"], pids=state["pids"])

    def running(self) -> bool:
        return any(_alive(pid) for pid in self.pids.values())

    def stop(self) -> None:
        """Stop every process (controllers first, etcd last) and wait until they are gone."""
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            pid = self.pids.get(name)
            if pid is not None:
                _terminate(pid)
        state = self.directory / STATE_FILE
        if state.exists():
            state.unlink()

    @classmethod
    def start(cls, directory: Path, bin_dir: Path | None = None,
              timeout: float = 120) -> ControlPlane:
        """Start etcd, kube-apiserver and kube-controller-manager on free loopback ports."""
        bin_dir = bin_dir or binaries_dir()
        for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl"):
            if not (bin_dir / name).exists():
                raise ControlPlaneUnavailable(f"{bin_dir / name} is missing")
        directory.mkdir(parents=True, exist_ok=True)
        logs = directory / "logs"
        logs.mkdir(exist_ok=True)
        pki = generate_pki(directory / "pki")
        plane = cls(directory=directory, bin_dir=bin_dir, kubeconfig=directory / "kubeconfig",
                    apiserver_port=free_port(), etcd_port=free_port(), pids={})
        try:
            plane._start_etcd(logs, timeout)
            plane._start_apiserver(pki, logs, timeout)
            write_kubeconfig(plane.kubeconfig, plane.server, pki)
            plane._start_controller_manager(pki, logs)
        except BaseException:
            plane.stop()
            raise
        plane.save()
        return plane

    def _spawn(self, name: str, args: list[str], logs: Path) -> None:
        with (logs / f"{name}.log").open("ab") as log:
            # A session of its own: Ctrl-C in the terminal reaches only the parent, which then
            # stops the children in order instead of leaving etcd to die under the API server.
            proc = subprocess.Popen([str(self.bin_dir / name), *args], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.pids[name] = proc.pid

    def _start_etcd(self, logs: Path, timeout: float) -> None:
        peer = f"http://127.0.0.1:{free_port()}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn("etcd", [
            "--name=default", f"--data-dir={self.directory / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}", "--unsafe-no-fsync=true",
            "--quota-backend-bytes=8589934592", "--log-level=warn",
        ], logs)
        wait_for_port("127.0.0.1", self.etcd_port, timeout)

    def _start_apiserver(self, pki: ControlPlanePKI, logs: Path, timeout: float) -> None:
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--secure-port={self.apiserver_port}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer=https://127.0.0.1:{self.apiserver_port}/",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--authorization-mode=RBAC", "--allow-privileged=false",
            f"--cert-dir={self.directory / 'apiserver-certs'}",
            "--max-requests-inflight=1000", "--max-mutating-requests-inflight=500",
        ], logs)
        self._wait_ready(pki, timeout)

    def _start_controller_manager(self, pki: ControlPlanePKI, logs: Path) -> None:
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}", "--use-service-account-credentials=false",
            f"--controllers={','.join(CONTROLLERS)}",
            "--kube-api-qps=200", "--kube-api-burst=400",
            f"--cert-dir={self.directory / 'kcm-certs'}",
        ], logs)

    def _wait_ready(self, pki: ControlPlanePKI, timeout: float) -> None:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not _alive(self.pids["kube-apiserver"]):
                raise RuntimeError(f"kube-apiserver exited; see {self.directory}/logs")
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=context,  # noqa: S310
                                            timeout=5) as resp:
                    if resp.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise TimeoutError(f"kube-apiserver not ready after {timeout:.0f}s: {last}")


def write_kubeconfig(path: Path, server: str, pki: ControlPlanePKI) -> None:
    """An admin kubeconfig with every credential embedded, so it can be copied anywhere."""
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "district-sftp-local",
        "clusters": [{"name": "district-sftp-local", "cluster": {
            "server": server, "certificate-authority-data": b64(pki.ca_cert)}}],
        "users": [{"name": "local-admin", "user": {
            "client-certificate-data": b64(pki.admin_cert),
            "client-key-data": b64(pki.admin_key)}}],
        "contexts": [{"name": "district-sftp-local", "context": {
            "cluster": "district-sftp-local", "user": "local-admin", "namespace": "default"}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return ""


def _terminate(pid: int, grace: float = 15) -> None:
    """SIGTERM the process's group, then SIGKILL what is left after the grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.1)


def remove_state(directory: Path) -> None:
    """Forget a stopped control plane's files."""
    shutil.rmtree(directory, ignore_errors=True)
