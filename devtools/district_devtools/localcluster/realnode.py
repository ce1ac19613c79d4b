"""A real node beside the local control plane: containerd, runc and a CNI bridge, the kubelet,
kube-scheduler and kube-proxy, and the controllers a node needs; stopped, it leaves the machine
as it found it.

Recipe and gotchas: docs/development.md ("The real node"). In short: the kubelet runs with
cgroup v1 allowed (`failCgroupV1: false`); containerd with `restrict_oom_score_adj` (this VM
grants no CAP_SYS_RESOURCE); a second kube-controller-manager runs the persistent-volume binder,
the root-CA publisher and node lifecycle, which the control plane's does not; the kubelet,
kube-proxy and the bridge plugin change sysctls and create global paths, which `stop()` restores
and removes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from district_devtools.localcluster.controlplane import ControlPlane, _alive, _terminate
from district_devtools.ports import free_port

NODE_STATE_FILE = "node.json"
BRIDGE = "dsftp0"
POD_CIDR = "10.88.77.0/24"
GATEWAY = "10.88.77.1"
KUBELET_PORT = 10350
# What the kubelet, kube-proxy and the bridge plugin may change; saved at start, put back at stop.
SYSCTLS = ("vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
           "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "net.ipv4.ip_forward",
           "net.bridge.bridge-nf-call-iptables", "net.ipv4.conf.all.route_localnet",
           "net.netfilter.nf_conntrack_max", "net.netfilter.nf_conntrack_tcp_timeout_established",
           "net.netfilter.nf_conntrack_tcp_timeout_close_wait")
# Paths containerd 1.6, the CRI plugin, libcni and the kubelet hard-code; removed at stop when
# they did not exist before start.
GLOBAL_PATHS = ("/run/containerd", "/var/lib/cni", "/var/log/containers", "/var/log/pods",
                "/var/lib/kubelet", "/var/run/netns", "/run/netns", "/etc/cni",
                "/var/lib/kube-proxy")
CGROUP_PARENTS = ("kubepods", "k8s.io")


class NodeUnavailable(RuntimeError):
    """What a real node needs is not on this machine (binaries, packages, kernel features)."""


def node_binaries_dir(repo: Path) -> Path:
    """kubelet, kube-scheduler and kube-proxy, built once by scripts/build-node and cached."""
    override = os.environ.get("DISTRICT_SFTP_NODE_BIN")
    if override:
        return Path(override)
    result = subprocess.run([str(repo / "scripts" / "build-node")], stdout=subprocess.PIPE,
                            text=True, check=False)
    if result.returncode != 0:
        raise NodeUnavailable("scripts/build-node failed (see its output above)")
    return Path(result.stdout.strip().splitlines()[-1])


def build_images(repo: Path) -> list[tuple[Path, str]]:
    """The pause and app image archives (scripts/build-image), as (archive, name) pairs."""
    result = subprocess.run([str(repo / "scripts" / "build-image")], stdout=subprocess.PIPE,
                            text=True, check=False)
    if result.returncode != 0:
        raise NodeUnavailable("scripts/build-image failed (see its output above)")
    pairs = []
    for line in result.stdout.strip().splitlines()[-2:]:
        archive, name = line.split()
        pairs.append((Path(archive), name))
    return pairs


def prepare_bridge() -> None:
    """The pods' bridge with its gateway address, made before the API server binds to it (pods
    reach the API server there through the `kubernetes` Service). RealNode.stop removes it."""
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        return
    for argv in (["ip", "link", "add", BRIDGE, "type", "bridge"],
                 ["ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE],
                 ["ip", "link", "set", BRIDGE, "up"]):
        subprocess.run(argv, check=True, capture_output=True)


def node_ip() -> str:
    """The address the node registers with: this machine's first global IPv4 address."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        address = line.split()[3].split("/")[0]
        if not address.startswith("10.88.77."):
            return address
    raise NodeUnavailable("no global IPv4 address to register the node with")


def machine_snapshot() -> dict[str, object]:
    """What a node changes on this machine, to compare before start and after stop."""
    def read(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                           check=False).stdout
    cgroups = sorted(str(p) for controller in Path("/sys/fs/cgroup").glob("*")
                     for parent in CGROUP_PARENTS if (p := controller / parent).exists())
    processes = sorted(
        p.name for p in Path("/proc").iterdir() if p.name.isdigit()
        and any(b in read(f"/proc/{p.name}/cmdline").split("\0")[0]
                for b in ("containerd", "kubelet", "kube-proxy", "kube-scheduler", "runc")))
    return {
        "mounts": sorted(line.split()[4] for line in read("/proc/self/mountinfo").splitlines()
                         if "containerd" in line or "kubelet" in line or "netns" in line
                         or "/node/" in line),
        "links": sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()
                        if BRIDGE in line or "veth" in line),
        "netns": sorted(p.name for p in Path("/var/run/netns").glob("*")),
        "global_paths": sorted(p for p in GLOBAL_PATHS if Path(p).exists()),
        "sysctls": read_sysctls(),
        "cgroups": cgroups,
        "processes": processes,
        "iptables": _kube_chains(),
    }


def _veths() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True,
                         text=True, check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def read_sysctls() -> dict[str, str]:
    """The current value of each sysctl a node may change (those this kernel has)."""
    values = {}
    for name in SYSCTLS:
        try:
            values[name] = Path("/proc/sys/" + name.replace(".", "/")).read_text().strip()
        except OSError:
            continue
    return values


IPTABLES = ("iptables", "ip6tables")
TABLES = ("nat", "filter", "mangle")


def _kube_rules(tool: str, table: str) -> list[str]:
    out = subprocess.run([tool, "-w", "-t", table, "-S"], capture_output=True, text=True,
                         check=False).stdout
    return [line for line in out.splitlines() if "KUBE-" in line]


def _kube_chains() -> list[str]:
    return sorted(f"{tool} {table}: {line}" for tool in IPTABLES for table in TABLES
                  for line in _kube_rules(tool, table))


def remove_kube_chains() -> None:
    """Remove every KUBE-* rule and chain the kubelet and kube-proxy made (kube-proxy's own
    --cleanup leaves the kubelet's KUBE-FIREWALL and KUBE-KUBELET-CANARY behind)."""
    for tool in IPTABLES:
        if shutil.which(tool) is None:
            continue
        for table in TABLES:
            rules = _kube_rules(tool, table)
            for rule in rules:  # jumps into KUBE-* chains from the built-in ones first
                words = rule.split()
                if words[0] == "-A" and not words[1].startswith("KUBE-"):
                    subprocess.run([tool, "-w", "-t", table, "-D", *words[1:]],
                                   capture_output=True, check=False)
            chains = [r.split()[1] for r in rules if r.startswith("-N ")]
            for chain in chains:
                subprocess.run([tool, "-w", "-t", table, "-F", chain], capture_output=True,
                               check=False)
            for chain in chains:
                subprocess.run([tool, "-w", "-t", table, "-X", chain], capture_output=True,
                               check=False)


@dataclass
class RealNode:
    """A running node and what it must undo at stop."""

    directory: Path
    name: str
    address: str
    bin_dir: Path
    kubeconfig: Path
    pids: dict[str, int] = field(default_factory=dict)
    sysctls_before: dict[str, str] = field(default_factory=dict)
    created_paths: list[str] = field(default_factory=list)
    pause_image: str = ""
    # KUBE-* iptables rules present before start (another cluster's): then none are removed.
    kube_rules_before: list[str] = field(default_factory=list)
    # veth links present before start; any other one left at stop is a pod's, and removed.
    veths_before: list[str] = field(default_factory=list)

    @property
    def containerd_socket(self) -> Path:
        return self.directory / "run" / "containerd.sock"

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "-a", str(self.containerd_socket), "-n", "k8s.io", *args],
                              capture_output=True, text=True, check=check)

    def save(self) -> None:
        state = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        (self.directory / NODE_STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, directory: Path) -> RealNode:
        state = json.loads((directory / NODE_STATE_FILE).read_text())
        return cls(directory=Path(state["directory"]), name=state["name"],
                   address=state["address"], bin_dir=Path(state["bin_dir"]),
                   kubeconfig=Path(state["kubeconfig"]), pids=state["pids"],
                   sysctls_before=state["sysctls_before"],
                   created_paths=state["created_paths"], pause_image=state["pause_image"],
                   kube_rules_before=state["kube_rules_before"],
                   veths_before=state.get("veths_before", []))

    # ---- start ------------------------------------------------------------------------------

    @classmethod
    def start(cls, plane: ControlPlane, directory: Path, bin_dir: Path,
              images: list[tuple[Path, str]], timeout: float = 120) -> RealNode:
        """Start containerd, the node's controllers, kube-proxy and the kubelet; wait for Ready."""
        for tool in ("containerd", "ctr", "runc", "iptables"):
            if shutil.which(tool) is None:
                raise NodeUnavailable(f"`{tool}` is missing (scripts/setup installs it)")
        if not Path("/usr/lib/cni/bridge").exists():
            raise NodeUnavailable("the CNI bridge plugin is missing (containernetworking-plugins)")
        # The kubelet and containerd make unix sockets beneath it (108 bytes at most, with
        # names of their own appended): a deep directory fails late and obscurely.
        if len(str(directory)) > 60:
            raise NodeUnavailable(f"the node's directory {directory} is too long for the unix "
                                  "sockets beneath it: use one of at most 60 characters")
        directory.mkdir(parents=True, exist_ok=True)
        for sub in ("run", "logs", "pki", "cni/net.d", "cni/ipam", "containerd", "pod-logs"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        node = cls(directory=directory, name=socket.gethostname(), address=node_ip(),
                   bin_dir=bin_dir, kubeconfig=directory / "kubeconfig")
        node.sysctls_before = read_sysctls()
        node.kube_rules_before = _kube_chains()
        node.veths_before = _veths()
        node.pause_image = next(name for _, name in images if "pause" in name)
        node.created_paths = [p for p in GLOBAL_PATHS if not Path(p).exists()]
        node.save()
        try:
            node._write_configs()
            node._start_containerd(timeout)
            for archive, name in images:
                node._import_image(archive, name)
            node._credentials(plane)
            node._start_controllers(plane)
            node._start_kube_proxy()
            node._start_kubelet()
            node.save()
            node._wait_ready(plane, timeout)
        except BaseException:
            node.stop(plane)
            raise
        return node

    def _write_configs(self) -> None:
        d = self.directory
        (d / "containerd.toml").write_text(f"""version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"

[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.pause_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # This VM grants no CAP_SYS_RESOURCE: a negative oom_score_adj would fail every sandbox.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    discard_unpacked_layers = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{shutil.which('runc')}"
        SystemdCgroup = false
        Root = "{d}/run/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
""")
        (d / "cni" / "net.d" / "10-district-sftp.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "district-sftp",
            "plugins": [{"type": "bridge", "bridge": BRIDGE, "isGateway": True,
                         "ipMasq": False, "hairpinMode": True,
                         "ipam": {"type": "host-local", "dataDir": str(d / "cni" / "ipam"),
                                  "ranges": [[{"subnet": POD_CIDR}]],
                                  "routes": [{"dst": "0.0.0.0/0"}]}},
                        {"type": "portmap", "capabilities": {"portMappings": True}}],
        }, indent=2))
        (d / "kubelet.yaml").write_text(f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host is cgroup v1 (hybrid); kubelet 1.35 refuses v1 unless told not to.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
containerRuntimeEndpoint: unix://{self.containerd_socket}
imageServiceEndpoint: unix://{self.containerd_socket}
podLogsDir: {d}/pod-logs
# Serving on loopback only; the API server has no kubelet client certificate, so anonymous
# access is allowed there and nowhere else.
address: 127.0.0.1
port: {KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {free_port()}
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
failSwapOn: false
makeIPTablesUtilChains: false
resolvConf: /etc/resolv.conf
hairpinMode: hairpin-veth
rotateCertificates: false
serverTLSBootstrap: false
registerNode: true
# Images come from archives imported at start, never from a registry: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
nodeStatusReportFrequency: 10s
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 5s
""")

    def _spawn(self, name: str, argv: list[str]) -> None:
        with (self.directory / "logs" / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.pids[name] = proc.pid
        self.save()

    def _start_containerd(self, timeout: float) -> None:
        self._spawn("containerd", ["containerd", "--config", str(self.directory /
                                                               "containerd.toml")])
        deadline = time.monotonic() + timeout
        while self.ctr("version", check=False).returncode != 0:
            if time.monotonic() > deadline or not _alive(self.pids["containerd"]):
                raise NodeUnavailable(f"containerd did not start; see {self.directory}/logs")
            time.sleep(0.1)

    def _import_image(self, archive: Path, name: str) -> None:
        if name in self.ctr("images", "ls", "-q").stdout.split():
            return
        self.ctr("images", "import", str(archive))

    def _credentials(self, plane: ControlPlane) -> None:
        """A client certificate for the node (system:node:<name>, group system:nodes) and the
        RBAC an RBAC-only API server needs for it and for kube-proxy."""
        pki = plane.directory / "pki"
        key, csr, crt = (self.directory / "pki" / f"node.{ext}" for ext in ("key", "csr", "crt"))
        ext = self.directory / "pki" / "ext.cnf"
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                        "-out", str(key)], check=True, capture_output=True)
        subprocess.run(["openssl", "req", "-new", "-key", str(key), "-subj",
                        f"/O=system:nodes/CN=system:node:{self.name}", "-out", str(csr)],
                       check=True, capture_output=True)
        ext.write_text("keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"),
                        "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "7",
                        "-extfile", str(ext), "-out", str(crt)], check=True, capture_output=True)
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "node",
            "clusters": [{"name": "local", "cluster": {
                "server": plane.server, "certificate-authority-data": b64(pki / "ca.crt")}}],
            "users": [{"name": "node", "user": {"client-certificate-data": b64(crt),
                                                "client-key-data": b64(key)}}],
            "contexts": [{"name": "node", "context": {"cluster": "local", "user": "node"}}],
        }))
        self.kubeconfig.chmod(0o600)
        # The API server authorizes with RBAC only (no Node authorizer): the node's group gets
        # the kubelet's role and kube-proxy's, which runs with the node's credentials here.
        for binding, role in (("district-sftp-node", "system:node"),
                              ("district-sftp-node-proxier", "system:node-proxier")):
            manifest = plane.kubectl("create", "clusterrolebinding", binding,
                                     f"--clusterrole={role}", "--group=system:nodes",
                                     "--dry-run=client", "-o", "yaml").stdout
            plane.kubectl("apply", "-f", "-", input=manifest)

    def _start_controllers(self, plane: ControlPlane) -> None:
        pki = plane.directory / "pki"
        self._spawn("kube-scheduler", [
            str(self.bin_dir / "kube-scheduler"), f"--kubeconfig={plane.kubeconfig}",
            f"--authentication-kubeconfig={plane.kubeconfig}",
            f"--authorization-kubeconfig={plane.kubeconfig}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}"])
        # The controllers a node needs that the control plane's manager does not run.
        self._spawn("kube-controller-manager-node", [
            str(plane.bin_dir / "kube-controller-manager"), f"--kubeconfig={plane.kubeconfig}",
            f"--authentication-kubeconfig={plane.kubeconfig}",
            f"--authorization-kubeconfig={plane.kubeconfig}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--controllers=persistentvolume-binder-controller,"
            "root-ca-certificate-publisher-controller,node-lifecycle-controller,"
            "endpointslice-controller,endpointslice-mirroring-controller",
            # A PV and its claim made together: bind within a second, not the 15 s resync.
            "--pvclaimbinder-sync-period=1s", f"--root-ca-file={pki / 'ca.crt'}",
            f"--cert-dir={self.directory / 'kcm-certs'}"])

    def _start_kube_proxy(self) -> None:
        config = self.directory / "kube-proxy.yaml"
        config.write_text(f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {self.kubeconfig}
hostnameOverride: {self.name}
mode: iptables
clusterCIDR: {POD_CIDR}
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:{free_port()}
metricsBindAddress: 127.0.0.1:{free_port()}
# Leave the machine's conntrack table settings alone (no sysctl writes).
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
""")
        self._spawn("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={config}"])

    def _start_kubelet(self) -> None:
        self._spawn("kubelet", [
            str(self.bin_dir / "kubelet"), f"--config={self.directory / 'kubelet.yaml'}",
            f"--kubeconfig={self.kubeconfig}", f"--root-dir={self.directory / 'kubelet'}",
            f"--cert-dir={self.directory / 'kubelet-pki'}", f"--hostname-override={self.name}",
            f"--node-ip={self.address}", "--v=1",
            # cAdvisor otherwise looks for containerd at its default socket.
            f"--containerd={self.containerd_socket}"])

    def _wait_ready(self, plane: ControlPlane, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, pid in self.pids.items():
                if not _alive(pid):
                    raise NodeUnavailable(f"{name} exited; see {self.directory}/logs/{name}.log")
            result = plane.kubectl("get", "node", self.name, "-o",
                                   "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                                   check=False)
            if result.stdout.strip() == "True":
                return
            time.sleep(0.5)
        raise TimeoutError(f"node {self.name} not Ready after {timeout:.0f}s; "
                           f"see {self.directory}/logs")

    # ---- stop -------------------------------------------------------------------------------

    def stop(self, plane: ControlPlane | None = None) -> None:
        """Stop everything and undo what the node changed on this machine."""
        if plane is not None and plane.running() and "kubelet" in self.pids:
            plane.kubectl("delete", "pods", "--all", "-A", "--grace-period=1", "--wait=true",
                          "--timeout=30s", check=False)
        for name in ("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager-node"):
            pid = self.pids.pop(name, None)
            if pid is not None:
                _terminate(pid, grace=10)
        if (self.bin_dir / "kube-proxy").exists():
            # kube-proxy's own clean-up removes the chains and rules it made; what the kubelet
            # made goes with the rest of the KUBE-* chains.
            subprocess.run([str(self.bin_dir / "kube-proxy"), "--cleanup"],
                           capture_output=True, check=False)
        if not self.kube_rules_before:
            remove_kube_chains()
        if "containerd" in self.pids:
            for task in self.ctr("task", "ls", "-q", check=False).stdout.split():
                self.ctr("task", "kill", "-s", "KILL", task, check=False)
            time.sleep(0.5)
            for task in self.ctr("task", "ls", "-q", check=False).stdout.split():
                self.ctr("task", "delete", "-f", task, check=False)
            for container in self.ctr("container", "ls", "-q", check=False).stdout.split():
                self.ctr("container", "delete", container, check=False)
            _terminate(self.pids.pop("containerd"), grace=10)
        self._kill_shims()
        self._remove_network()
        self._unmount_all()
        self._remove_cgroups()
        for name, value in self.sysctls_before.items():
            knob = Path("/proc/sys/" + name.replace(".", "/"))
            try:
                if knob.read_text().strip() != value:
                    knob.write_text(value)
            except OSError:
                pass
        for created in self.created_paths:
            _unmount_under(Path(created))
            shutil.rmtree(created, ignore_errors=True)
        self.save()

    def _kill_shims(self) -> None:
        marker = str(self.containerd_socket)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "containerd-shim" in cmdline and marker in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), 9)

    def _remove_network(self) -> None:
        # A pod's veth outlives the bridge while anything still holds its network namespace;
        # deleting our end deletes the pair, wherever the other end is.
        for veth in _veths():
            if veth not in self.veths_before:
                subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)
        netns = Path("/var/run/netns")
        if netns.is_dir():
            for entry in netns.glob("cni-*"):
                subprocess.run(["umount", str(entry)], capture_output=True, check=False)
                entry.unlink(missing_ok=True)
        self.remove_bridge()

    @staticmethod
    def remove_bridge() -> None:
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)

    def _unmount_all(self) -> None:
        _unmount_under(self.directory)

    def _remove_cgroups(self) -> None:
        for controller in Path("/sys/fs/cgroup").glob("*"):
            for parent in CGROUP_PARENTS:
                top = controller / parent
                if not top.is_dir():
                    continue
                for path in sorted((p for p in top.rglob("*") if p.is_dir()),
                                   key=lambda p: len(p.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        path.rmdir()
                with contextlib.suppress(OSError):
                    top.rmdir()


def _unmount_under(root: Path) -> None:
    """Unmount every mount point at or beneath root, deepest first."""
    prefix = str(root)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = sorted({line.split()[4] for line in lines
                     if line.split()[4] == prefix or line.split()[4].startswith(prefix + "/")},
                    key=len, reverse=True)
    for point in points:
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
